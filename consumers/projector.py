"""The projector: coi.ledger -> the auditors' projection tables.

It reads every partition of coi.ledger without a consumer group and keeps its position in
the projection database, written in the same transaction as the rows it derives from those
messages: a crash never skips or repeats an event. Records carry their global sequence, so
a record seen twice (the relay republishing after a broker reset) changes nothing. After a
broker that lost its log, `coi projections rebuild` re-derives the tables from the ledger.
A record sent by reference (too large for the broker) is read from the ledger; a message
that cannot be read at all is set aside with a log line, so it never stops the projector.
"""

from __future__ import annotations

import hashlib
import logging
import threading

import msgspec
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.service import stop_point
from ledger.app.application import LedgerApplication
from ledger.site import kafka
from ledger.wire.kafka_topics import Topics
from ledger.wire.messages import LedgerRecord, decode
from projections.custody import Record
from projections.store import ProjectionStore

log = logging.getLogger("coi.projector")


class Projector:
    def __init__(
        self,
        store: ProjectionStore,
        ledger: LedgerApplication,
        bootstrap: str,
        topics: Topics,
        name: str = "custody",
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.topics = topics
        self.name = name
        self.consumer: KafkaConsumer = kafka.consumer(bootstrap)
        self.partitions: list[TopicPartition] = []

    def _assign(self) -> None:
        """Take every partition, each from where the projection stopped."""
        found = sorted(self.consumer.partitions_for_topic(self.topics.ledger) or [])
        partitions = [TopicPartition(self.topics.ledger, p) for p in found]
        if partitions == self.partitions:
            return
        self.consumer.assign(partitions)
        self.partitions = partitions
        stored = self.store.positions(self.name, self.topics.ledger)
        for tp in partitions:
            self.consumer.seek(tp, stored.get(tp.partition, 0))

    def run(self, stop: threading.Event) -> None:
        log.info("projector: projecting %s", self.topics.ledger)
        try:
            while not stop.is_set():
                # An empty poll has already waited for messages; only a topic not yet created
                # needs a pause before asking again.
                if not self.step() and not self.partitions:
                    stop.wait(0.2)
        finally:  # also when leaving with an error: each retry makes a new consumer
            self.consumer.close(timeout_ms=int(kafka.CLOSE_SECONDS * 1000))
            self.ledger.close()

    def step(self, timeout_ms: int = 500) -> int:
        self._assign()
        if not self.partitions:
            return 0
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=2000)
        records, positions = [], {}
        for tp, messages in polled.items():
            records += [r for r in map(self._record, messages) if r is not None]
            positions[tp.partition] = messages[-1].offset + 1
        if records:
            self.store.apply(records, positions, consumer=self.name, topic=self.topics.ledger)
            stop_point("projector.applied")
        return len(records)

    def _record(self, message: ConsumerRecord) -> Record | None:
        """The record a message carries, or by reference from the ledger; None, logged, for
        one that cannot be read."""
        try:
            r = decode(message.value, LedgerRecord)  # a newer format stops the projector
        except (msgspec.MsgspecError, TypeError) as exc:
            log.error(
                "projector: %s:%d offset %d is not a ledger record (%s); set aside",
                message.topic, message.partition, message.offset, exc,
            )  # fmt: skip
            return None
        if r.envelope is not None:
            return r.sequence, r.recorded_at, r.envelope
        stored = next(self.ledger.records(r.sequence), None)
        if stored is None or stored[0] != r.sequence or _sha256(stored[2]) != r.envelope_sha256:
            log.error(
                "projector: sequence %d came by reference, but the ledger holds no record of that "
                "sequence and digest; set aside",
                r.sequence,
            )
            return None
        return r.sequence, r.recorded_at, stored[2]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
