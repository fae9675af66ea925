"""kafka-python clients configured the one way the ledger's services use them, each on the
transport the environment sets (ledger/site/transport.py)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.cluster import ClusterMetadata
from kafka.consumer.fetcher import ConsumerRecord
from kafka.partitioner.default import DefaultPartitioner, murmur2

from ledger.site.transport import security

# Tansu (and small clusters) answer a first group join slowly with the default 5 minute
# max poll interval; a short one keeps joins and rebalances to seconds.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "max_poll_interval_ms": 10_000,
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 1_000,
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    # A fetch waits at most this long for data. Tansu answers a waiting fetch only when the
    # wait expires, not when data arrives, so the default 500 ms was added to every hop
    # (measured: p50 110 ms at 500, 5 ms at 20); Kafka answers early, and an idle consumer
    # then makes 20 small requests a second.
    "fetch_max_wait_ms": 50,
}


# The largest message value the broker takes (Kafka's message.max.bytes is about 1 MB by
# default); the producers refuse larger ones themselves instead of retrying them.
MAX_MESSAGE_BYTES = int(os.environ.get("COI_KAFKA_MAX_MESSAGE_BYTES", "1000000"))
# Room for a message's key and record headers within one request.
_RECORD_OVERHEAD = 512

# How long a new client waits for a first answer from the bootstrap servers (kafka-python's
# default); a service retries with backoff after it (consumers/service.py). Named so a test
# that expects no broker can shorten it instead of waiting it out.
BOOTSTRAP_TIMEOUT_MS = 30_000

# How long closing a client may take: a service leaving because the broker is gone must not
# hang on it.
CLOSE_SECONDS = 5.0


@lru_cache(maxsize=65536)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


class KeyPartitioner(DefaultPartitioner):  # type: ignore[misc]  # kafka-python ships no types
    """The default partitioner's choice for a key (murmur2, as the Java clients), with the
    hash cached: a patient's events share their key, and kafka-python's pure-Python murmur2
    was a tenth of the relay's time."""

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any,
        cluster: ClusterMetadata,
    ) -> int:  # fmt: skip
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        return int(sorted(partitions)[_key_hash(bytes(serialized_key)) % len(partitions)])


def producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    # No broker-side idempotence: the ledger deduplicates by event_id and consumers by
    # sequence, and a broker that restarts (Tansu) forgets producer ids, which would leave an
    # idempotent producer failing every send.
    settings: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "retries": 5,
        "enable_idempotence": False,
        "max_request_size": MAX_MESSAGE_BYTES + _RECORD_OVERHEAD,
        # Batches of up to 1 MiB per partition: with the default 16 KiB, 1.5 KB records
        # fill a batch every ten sends and each wakes the sender thread and makes a request
        # (measured: 62 -> 27 µs of CPU per record; flush() still sends at once).
        "batch_size": 1 << 20,
        "partitioner": KeyPartitioner(),
        **security(),
        **overrides,
    }
    return KafkaProducer(bootstrap_servers=bootstrap, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, **settings)


def consumer(bootstrap: str, *topics: str, group: str | None = None, **overrides: Any) -> KafkaConsumer:
    settings = {
        **CONSUMER_DEFAULTS,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "group_id": group,
        **security(),
        **overrides,
    }
    return KafkaConsumer(*topics, bootstrap_servers=bootstrap, **settings)


def admin(bootstrap: str, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, **{**security(), **overrides})


def still_there(bootstrap: str, tp: TopicPartition, offset: int, same: Callable[[bytes], bool]) -> bool:
    """Whether the message we saw at `offset` is still there. A broker that lost its log
    (Tansu keeps none across a restart) answers with nothing or with something else; asking
    this way, not through the group coordinator, never disturbs a rebalance. A new consumer
    each time: a long-lived one can answer from records it fetched before the restart."""
    probe = consumer(bootstrap)
    try:
        probe.assign([tp])
        probe.seek(tp, offset)
        found = [m for batch in probe.poll(timeout_ms=2000, max_records=1).values() for m in batch]
    finally:
        probe.close(timeout_ms=2000)
    return bool(found) and found[0].offset == offset and found[0].value is not None and same(found[0].value)


# Where a message was read and the digest of its value: enough to ask later whether the
# broker still has it.
Seen = tuple[TopicPartition, int, bytes]


def seen(message: ConsumerRecord) -> Seen:
    return TopicPartition(message.topic, message.partition), message.offset, _digest(message.value or b"")


def lost(bootstrap: str, where: Seen) -> bool:
    """Whether the message read at `where` is gone: the broker lost its log."""
    tp, offset, digest = where
    return not still_there(bootstrap, tp, offset, lambda v: _digest(v) == digest)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()
