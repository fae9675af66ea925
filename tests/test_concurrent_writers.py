"""Two `coi submit` processes on one ledger, sending the same envelopes at once: every line
is stored exactly once, both report success, and neither prints a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app import log
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast
from ledger.transparency.checkpoint import NoteSigner
from tests.support import new_journey
from tests.test_cli import COI


def test_two_submitters_of_the_same_envelopes_store_each_once(
    store_url: str, registered: LedgerApplication, cast: Cast, tmp_path: Path
) -> None:
    steps = [s for i in range(24) for s in new_journey(cast, "happy", i).steps() if s.expect is None]
    source = tmp_path / "envelopes.jsonl"
    source.write_bytes(b"\n".join(s.envelope for s in steps) + b"\n")
    env = {
        **os.environ,
        "COI_DATABASE_URL": store_url,
        "COI_DATA_DIR": str(tmp_path / "coi-data"),
        "COI_CHECKPOINT_EVERY": "200",
    }
    before = registered.recorder.max_notification_id() or 0
    runs = [
        subprocess.Popen(
            [*COI, "submit", "--json", str(source)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    results = [(run.returncode, out, err) for run, (out, err) in zip(runs, outputs, strict=True)]
    for code, out, err in results:
        assert code == 0 and b"Traceback" not in err, err.decode()[-3000:]
        assert out.count(b"\n") == len(steps)
    statuses = [out.count(b'"accepted"') for _, out, _ in results]
    assert sum(statuses) == len(steps), statuses
    assert (LedgerApplication(store_url).recorder.max_notification_id() or 0) - before >= len(steps)


def test_an_integrator_overtaken_by_another_carries_on(
    store_url: str, registered: LedgerApplication, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay and a `coi submit` integrate the same ledger: the one overtaken between two
    chunks finds the leaves it was about to write already there and carries on."""
    steps = [s for i in range(3) for s in new_journey(cast, "happy", i).steps() if s.expect is None]
    assert all(o.status == "accepted" for o in registered.submit_many(s.envelope for s in steps))
    monkeypatch.setattr(log, "READ_CHUNK", 10)  # several chunks from a small ledger
    mine, other = MerkleLog(registered), MerkleLog(LedgerApplication(store_url))
    overtaken: list[int] = []

    def overtake(size: int) -> None:
        if not overtaken:
            overtaken.append(other.integrate())

    size = mine.integrate(progress=overtake)
    assert overtaken and size == overtaken[0] == registered.recorder.max_notification_id()
    checkpoint = mine.checkpoint(NoteSigner("test.log", Ed25519PrivateKey.generate()), "test.log")
    assert checkpoint.size == size
