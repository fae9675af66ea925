"""The truncation attack through the coi command: the ledger refuses to sign the forked head."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ledger.app import ledgerkey
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from ledger.store.logstore import LogStore
from tests.stores import RawStore
from tests.support import COI, new_journey


def _coi(env: dict[str, str], *args: str, **more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COI, *args], env={**env, **more}, capture_output=True, text=True, timeout=120)


def _envelopes(path: Path, cast: Cast, indexes: range, limit: int | None = None) -> Path:
    steps = [s for i in indexes for s in new_journey(cast, "happy", i).steps() if s.expect is None]
    path.write_bytes(b"\n".join(s.envelope for s in steps[:limit]) + b"\n")
    return path


def test_a_truncated_ledger_written_again_is_not_signed_and_the_operator_is_told(
    store_url: str,
    registered: LedgerApplication,
    cast: Cast,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "COI_DATABASE_URL": store_url,
        "COI_DATA_DIR": str(tmp_path / "coi-data"),
        "COI_LEDGER_KEY": str(tmp_path / "signer" / "ledger-key"),  # the key, and its memory, apart
        "COI_CONFIG_DIR": str(tmp_path / "config"),
        "COI_SIGNER_DIR": str(tmp_path / "signer"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ledgerkey.create(LogStore(registered.recorder))  # the ledger's key, as coi init makes it
    env = {**os.environ, **env}
    stored = _coi(env, "submit", str(_envelopes(tmp_path / "first.jsonl", cast, range(2))))
    assert stored.returncode == 0, stored.stderr
    signed = _coi(env, "checkpoint", "--sign")
    assert signed.returncode == 0, signed.stderr
    size = int(signed.stdout.splitlines()[1])
    assert list((tmp_path / "signer").glob("*.signed.json"))

    raw = RawStore(store_url)
    try:
        raw.truncate(size - 5)
        again = _envelopes(tmp_path / "again.jsonl", cast, range(100, 101), limit=5)
        written = _coi(env, "submit", str(again), COI_CHECKPOINT_EVERY="1")
        assert raw.count() == size
    finally:
        raw.conn.close()
    # What was accepted is stored; the checkpoint it would have signed is not, and it says why.
    assert written.returncode == 0 and "no checkpoint was signed" in written.stderr, written.stderr
    assert f"has another root than the checkpoint of size {size:,}" in written.stderr

    refused = _coi(env, "checkpoint", "--sign")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith("coi: no checkpoint signed: ")
    assert f"has another root than the checkpoint of size {size:,}" in refused.stderr
    assert "Do not re-sign" in refused.stderr and "coi.ledger topic" in refused.stderr
    assert refused.stdout == ""
