"""kafka-python clients configured the one way the ledger's services use them."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer

# Tansu (and small clusters) answer a first group join slowly with the default 5 minute
# max poll interval; a short one keeps joins and rebalances to seconds.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "max_poll_interval_ms": 10_000,
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 1_000,
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
}


def producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    settings: dict[str, Any] = {"acks": "all", "linger_ms": 5, "retries": 5, "max_request_size": 4 << 20}
    settings.update(overrides)
    return KafkaProducer(bootstrap_servers=bootstrap, **settings)


def consumer(bootstrap: str, *topics: str, group: str | None = None, **overrides: Any) -> KafkaConsumer:
    settings = {**CONSUMER_DEFAULTS, "group_id": group, **overrides}
    return KafkaConsumer(*topics, bootstrap_servers=bootstrap, **settings)
