"""The relay: the ledger's log -> coi.ledger and coi.checkpoints.

It integrates committed records into the Merkle log, publishes each (in leaf order, keyed by
COI) with its receipt, signs checkpoints by policy and publishes every signed checkpoint.
Its position is kept in the ledger's database after the producer's flush, so it resumes
where it stopped (a crash in between publishes a few records twice; consumers deduplicate
by sequence). A broker that lost its messages (Tansu keeps none across a restart) is noticed
by reading back the last record published, where the broker said it put it; then the relay
publishes the whole log again, so sites waiting for receipts get them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from datetime import UTC, datetime

import msgspec
from kafka import TopicPartition
from kafka.errors import KafkaError

from consumers.broker import ensure_topics
from consumers.witnessing import Witnesses, configured, timeout
from ledger.app import ledgerkey
from ledger.app.application import LedgerApplication
from ledger.app.config import checkpoint_policy
from ledger.app.log import MerkleLog, sign
from ledger.audit.source import StoredCheckpoint
from ledger.site import kafka
from ledger.store.logstore import RelayPosition
from ledger.transparency import merkle
from ledger.transparency.checkpoint import parse
from ledger.transparency.records import header_of, row_record
from ledger.wire.kafka_topics import Topics
from ledger.wire.messages import REGISTRY_KEY, LedgerRecord, SignedCheckpoint, decode

log = logging.getLogger("coi.relay")

CHUNK = 2000
RESET_CHECK_SECONDS = 5.0
IDLE_SECONDS = 1.0


class Relay:
    def __init__(self, app: LedgerApplication, bootstrap: str, topics: Topics, name: str = "relay") -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.topics = topics
        self.name = name
        self.log = MerkleLog(app)
        self.producer = kafka.producer(bootstrap)
        self.checked_at = 0.0
        self.keyless = False  # said once: this relay found no ledger key
        self.witnesses = Witnesses(configured(), timeout())

    def run(self, stop: threading.Event) -> None:
        log.info("relay: publishing the log to %s and %s", self.topics.ledger, self.topics.checkpoints)
        try:
            while not stop.is_set():
                if not self.step():
                    self._wait_for_records(stop)
        finally:
            self.close()  # also when leaving with an error: the next service makes a new producer
            self.app.close()

    def _wait_for_records(self, stop: threading.Event) -> None:
        """Until the ledger has a new record, looking every 20 ms (one indexed MAX), or for
        IDLE_SECONDS, after which a step runs anyway (checkpoints by age, reset checks)."""
        top = self.app.recorder.max_notification_id()
        deadline = time.monotonic() + IDLE_SECONDS
        while not stop.wait(0.02) and time.monotonic() < deadline:
            if self.app.recorder.max_notification_id() != top:
                return

    def step(self) -> int:
        """Publish what is new; returns how many messages were published."""
        if time.monotonic() - self.checked_at > RESET_CHECK_SECONDS:
            self._notice_reset()
        size = self.log.integrate()
        sent = self._publish_records(size)
        every, seconds = checkpoint_policy()
        if self.log.due(every, seconds):
            self._sign()
        return sent + self._publish_checkpoints()

    def _sign(self) -> None:
        """The relay is the pipeline's one signer; without the key here it still publishes."""
        try:
            sign(self.log)
        except ledgerkey.NoLedgerKeyError as exc:
            if not self.keyless:
                log.warning("relay: %s; publishing records without checkpoints", exc)
            self.keyless = True
            return
        self.keyless = False

    def _publish_records(self, size: int) -> int:
        position = self.log.store.relay_position(self.name)
        if position.next_leaf >= size:
            return 0
        store = self.log.store
        leaves = store.leaves(position.next_leaf, min(size, position.next_leaf + CHUNK))
        hashes = store.node_range(0, leaves[0][0], leaves[-1][0])
        # Leaves commit to every record in sequence order, so these are the leaves' records.
        stored = {row[0]: row for row in store.records(leaves[0][1] - 1, len(leaves))}
        sent = None
        for index, sequence in leaves:
            record = row_record(stored[sequence])
            header = header_of(record.envelope)
            message = LedgerRecord(
                sequence=sequence,
                leaf_index=index,
                leaf_hash=hashes[index].hex(),
                stream=record.stream,
                version=record.version,
                prev=record.prev,
                recorded_at=record.recorded_at,
                envelope=record.envelope,
                event_id=str(header.event_id),
                type=header.type,
                coi=header.coi,
            )
            key = (header.coi or REGISTRY_KEY).encode()
            sent = self.producer.send(self.topics.ledger, key=key, value=_fitting(message))
        self.producer.flush()
        assert sent is not None
        landed = sent.get(timeout=30)
        self.log.store.set_relay_position(
            self.name, RelayPosition(leaves[-1][0] + 1, landed.partition, landed.offset, leaves[-1][1])
        )
        return len(leaves)

    def _publish_checkpoints(self) -> int:
        name = f"{self.name}:checkpoints"
        last = self.log.store.relay_position(name).next_leaf  # here: the last tree size published
        fresh = self.log.store.checkpoints(after=last)
        for stored in fresh:
            checkpoint, _, _ = parse(stored.note)
            known = self.log.store.witnessed(stored.size)
            cosigned = known if known is not None or stored is not fresh[-1] else self._witnessed(stored)
            # Proven from the last one published: a monitor checks each against the one before.
            proof = merkle.consistency_proof(last, stored.size, self.log.store.nodes) if last else []
            message = SignedCheckpoint(
                checkpoint.origin,
                stored.size,
                _b64(stored.root),
                stored.note,
                proof_from=last,
                consistency=[_b64(h) for h in proof],
                cosigned=cosigned,
            )
            last = stored.size
            self.producer.send(
                self.topics.checkpoints, key=checkpoint.origin.encode(), value=msgspec.json.encode(message)
            )
            if cosigned is not None and known is None:
                # Stored while the broker takes the message, before it counts as published.
                self.log.store.set_witnessed(stored.size, cosigned, datetime.now(UTC).isoformat())
        if fresh:
            self.producer.flush()
            self.log.store.set_relay_position(name, RelayPosition(fresh[-1].size, -1, -1, -1))
        return len(fresh)

    def _witnessed(self, stored: StoredCheckpoint) -> str | None:
        """The latest checkpoint cosigned by the witnesses (COI_WITNESSES), if it covers the
        whole log: a record it leaves out then committed after it was signed, which is what
        verify's clock check relies on. None if no witness cosigned it."""
        if not self.witnesses.witnesses or self.log.store.size() != stored.size:
            return None
        nodes = self.log.store.nodes
        cosigned, count = self.witnesses.cosign(
            stored.note, lambda old, new: merkle.consistency_proof(old, new, nodes)
        )
        return cosigned if count else None

    def _notice_reset(self) -> None:
        """If the last record published is no longer where the broker put it, the broker lost
        the log (Tansu keeps nothing across a restart): publish it all again."""
        self.checked_at = time.monotonic()
        position = self.log.store.relay_position(self.name)
        if position.probe_partition < 0:
            return
        tp = TopicPartition(self.topics.ledger, position.probe_partition)
        if kafka.still_there(
            self.bootstrap,
            tp,
            position.probe_offset,
            lambda v: decode(v, LedgerRecord).sequence == position.probe_sequence,
        ):
            return
        log.warning(
            "relay: sequence %d is no longer at %s offset %d: the broker lost the log; publishing it again",
            position.probe_sequence, tp, position.probe_offset,
        )  # fmt: skip
        ensure_topics(self.bootstrap, self.topics)  # a broker that lost its log lost its topics too
        self.log.store.set_relay_position(self.name, RelayPosition(0, -1, -1, -1))
        self.log.store.set_relay_position(f"{self.name}:checkpoints", RelayPosition(0, -1, -1, -1))

    def close(self) -> None:
        """Sends what is pending, within a bound (the broker may be gone). Unsent records are
        not lost: the relay's position moves only after a flush that landed."""
        self.witnesses.close()
        try:
            self.producer.close(timeout=kafka.CLOSE_SECONDS)
        except KafkaError as exc:
            log.warning("relay: closing: %s", exc)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _fitting(message: LedgerRecord) -> bytes:
    """The message, or, if it is over the broker's limit, the message by reference: one
    record too large must not stop the relay and every receipt behind it."""
    value = msgspec.json.encode(message)
    if len(value) <= kafka.MAX_MESSAGE_BYTES or message.envelope is None:
        return value
    log.warning(
        "relay: sequence %d is %d bytes with its envelope, over the broker's limit of %d "
        "(COI_KAFKA_MAX_MESSAGE_BYTES): published by reference, consumers read it from the ledger",
        message.sequence, len(value), kafka.MAX_MESSAGE_BYTES,
    )  # fmt: skip
    digest = hashlib.sha256(message.envelope.encode()).hexdigest()
    return msgspec.json.encode(msgspec.structs.replace(message, envelope=None, envelope_sha256=digest))
