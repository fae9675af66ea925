"""The ingest consumer: coi.site-events -> the ledger.

It consumes in a consumer group (partitions by COI, so one patient's events stay in order),
hands each poll's envelopes to the application (decode, verify on all cores, rules, save, and
the security log's entry of each refusal), publishes every rejection to coi.rejected with the
original bytes and its security log entry to coi.security, and commits offsets only after the
save, the rejections and the entries are durable. Redelivery after a crash or a rebalance
is harmless: the same event_id with the same bytes is a duplicate and stored once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError

from consumers.service import stop_point
from ledger.app.application import LedgerApplication, Outcome
from ledger.site import kafka
from ledger.wire.kafka_topics import Topics
from ledger.wire.messages import Rejection, SecurityEntry

log = logging.getLogger("coi.ingest")

RESET_CHECK_SECONDS = 5.0


class BrokerResetError(KafkaError):  # type: ignore[misc]  # kafka-python ships no types
    """The broker forgot this group's offsets; the service is recreated and reads again."""


# An oversize input is rejected with this much of it (and its digest): the whole of it is
# still on coi.site-events, and the rejection must fit in a Kafka message of its own.
KEEP_OF_OVERSIZE = 64 * 1024


class Ingest:
    def __init__(
        self,
        app: LedgerApplication,
        bootstrap: str,
        topics: Topics,
        group: str | None = None,
        max_records: int = 2000,
    ) -> None:
        self.app = app
        app.start_workers()  # before the Kafka clients start their threads
        self.topics = topics
        self.max_records = max_records
        # One group per environment: the topic prefix names it too.
        group = group or f"{topics.prefix}coi-ingest"
        try:
            self.consumer = kafka.consumer(
                bootstrap,
                topics.site_events,
                group=group,
                max_poll_records=max_records,
                client_id=f"coi-ingest-{socket.gethostname()}-{os.getpid()}",
            )
            self.producer = kafka.producer(bootstrap)
        except BaseException:
            app.close()  # no broker yet: the retry makes a new application and new workers
            raise
        self.accepted = self.rejected = self.duplicates = 0
        locker, why = app.locker()
        if locker is None:  # said at start, and again at each lock or deviation it cannot record
            log.warning(
                "ingest: cannot lock keys after repeated authenticated failures, nor open the "
                "deviation of a bedside mismatch: %s",
                why,
            )
        self.bootstrap = bootstrap
        self.last_seen: kafka.Seen | None = None
        self.assigned: list[int] = []
        self.checked_at = time.monotonic()

    def run(self, stop: threading.Event) -> None:
        log.info("ingest: consuming %s", self.topics.site_events)
        try:
            while not stop.is_set():
                self.step()
        finally:
            # Also on the way out with an error: a consumer left open stays in the group, and
            # the service made next would wait for it to be evicted.
            self.close()
            self.app.close()  # its signature workers too

    def step(self, timeout_ms: int = 500) -> int:
        """One poll: store, publish rejections, then commit. Returns messages handled."""
        if time.monotonic() - self.checked_at > RESET_CHECK_SECONDS:
            self._notice_reset()
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        assigned = sorted(tp.partition for tp in self.consumer.assignment())
        if assigned != self.assigned:
            log.info("ingest: partitions %s of %s", assigned, self.topics.site_events)
            self.assigned = assigned
        messages = [m for batch in polled.values() for m in batch]
        if not messages:
            return 0
        self.last_seen = kafka.seen(messages[-1])
        # The application refuses an oversize envelope (MAX_ENVELOPE_BYTES) before reading it.
        valued = [m for m in messages if m.value is not None]
        submitted = self.app.submit_many((m.value for m in valued), sources=(_source(m) for m in valued))
        outcomes = dict(zip((id(m) for m in valued), submitted, strict=True))
        stop_point("ingest.saved")
        now = datetime.now(UTC).isoformat()
        for message in messages:
            outcome = outcomes.get(id(message)) or _NO_VALUE
            if outcome.status == "rejected":
                self.rejected += 1
                self.producer.send(
                    self.topics.rejected, key=message.key, value=_rejection(message, outcome, now)
                )
                if outcome.security is not None:
                    self._publish_security(outcome.security)
            elif outcome.status == "accepted":
                self.accepted += 1
            else:
                self.duplicates += 1
        self.producer.flush()
        try:
            self.consumer.commit()
        except CommitFailedError as exc:
            # The group rebalanced while we worked: what we stored will come again to the
            # new owner and be recognised as duplicates.
            log.warning("ingest: offsets not committed (%s); redelivery will be deduplicated", exc)
        return len(messages)

    def _publish_security(self, entry: SecurityEntry) -> None:
        """An entry on coi.security, keyed by its source (one source's entries in order)."""
        self.producer.send(self.topics.security, key=entry.source.encode(), value=msgspec.json.encode(entry))

    def _notice_reset(self) -> None:
        """A broker that lost its log (Tansu keeps none across a restart) also forgets the
        group's offsets, and the consumer would wait at positions past the new, empty log.
        If the last message seen is gone, start over: everything the topic now holds is read
        again, and what was already stored comes back as duplicates."""
        self.checked_at = time.monotonic()
        if self.last_seen is None:
            return
        if kafka.lost(self.bootstrap, self.last_seen):
            tp, offset, _ = self.last_seen
            raise BrokerResetError(f"the message at {tp} offset {offset} is gone: the broker lost its log")

    def close(self) -> None:
        """Each client in turn, each within a bound (the broker may be gone)."""
        closing: tuple[Callable[[], object], ...] = (
            lambda: self.producer.flush(timeout=kafka.CLOSE_SECONDS),
            lambda: self.consumer.close(timeout_ms=int(kafka.CLOSE_SECONDS * 1000)),
            lambda: self.producer.close(timeout=kafka.CLOSE_SECONDS),
        )
        for close in closing:
            try:
                close()
            except KafkaError as exc:
                log.warning("ingest: closing: %s", exc)


def _source(message: ConsumerRecord) -> str:
    """The security log's source of a consumed message: its place in Kafka."""
    return f"kafka:{message.topic}/{message.partition}/{message.offset}"


_NO_VALUE = Outcome("rejected", code="malformed_envelope", message="the message has no value")


def _rejection(message: ConsumerRecord, outcome: Outcome, now: str) -> bytes:
    value: bytes = message.value or b""
    return msgspec.json.encode(
        Rejection(
            code=outcome.code or "rejected",
            message=outcome.message or "",
            original=base64.b64encode(value[:KEEP_OF_OVERSIZE]).decode(),
            original_size=len(value),
            original_sha256=hashlib.sha256(value).hexdigest(),
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            rejected_at=now,
            field=outcome.field,
            event_id=outcome.event_id,
            coi=outcome.coi,
        )
    )
