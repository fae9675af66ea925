"""One Kafka-protocol broker for every system test that needs one (each test names its own
topics): starting Tansu per module cost a start-up each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumers.broker import bootstrap_servers


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    with bootstrap_servers() as address:
        yield address
