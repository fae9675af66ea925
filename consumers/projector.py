"""The projector: coi.ledger -> the auditors' projection tables.

It reads every partition of coi.ledger without a consumer group and keeps its position in
the projection database, written in the same transaction as the rows it derives from those
messages: a crash never skips or repeats an event. Records carry their global sequence, so
a record seen twice (the relay republishing after a broker reset) changes nothing. After a
broker that lost its log, `coi projections rebuild` re-derives the tables from the ledger.
"""

from __future__ import annotations

import logging
import threading

import msgspec
from kafka import KafkaConsumer, TopicPartition

from consumers import kafka
from consumers.messages import LedgerRecord
from consumers.topics import Topics
from projections.store import ProjectionStore

log = logging.getLogger("coi.projector")

_decoder = msgspec.json.Decoder(LedgerRecord)


class Projector:
    def __init__(self, store: ProjectionStore, bootstrap: str, topics: Topics, name: str = "custody") -> None:
        self.store = store
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

    def step(self, timeout_ms: int = 500) -> int:
        self._assign()
        if not self.partitions:
            return 0
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=2000)
        records, positions = [], {}
        for tp, messages in polled.items():
            for m in messages:
                r = _decoder.decode(m.value)
                records.append((r.sequence, r.recorded_at, r.envelope))
            positions[tp.partition] = messages[-1].offset + 1
        if records:
            self.store.apply(records, positions, consumer=self.name, topic=self.topics.ledger)
        return len(records)
