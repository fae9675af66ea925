"""An ingest that finds no broker gives up and leaves no signature workers behind, in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from consumers.broker import free_port
from consumers.ingest import Ingest
from ledger.app.application import LedgerApplication
from ledger.demo.harness import alive, children
from ledger.site import kafka
from ledger.wire.kafka_topics import Topics


def test_an_ingest_that_finds_no_broker_leaves_no_workers_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not kafka-python's 30 s: nothing will answer on that port.
    monkeypatch.setattr(kafka, "BOOTSTRAP_TIMEOUT_MS", 1000)
    before = set(children(os.getpid()))
    app = LedgerApplication(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    with pytest.raises(KafkaError):
        Ingest(app, f"127.0.0.1:{free_port()}", Topics("nobroker."))
    assert not [pid for pid in children(os.getpid()) if pid not in before and alive(pid)]
