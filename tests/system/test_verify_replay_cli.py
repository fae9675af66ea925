"""`coi verify` replays the rules: a genuinely signed record the ledger would have refused,
put straight into the tables and signed over by a checkpoint, fails it with exit 1, named by
sequence and reason code; `--no-replay` skips the rules and says so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast
from ledger.transparency.checkpoint import NoteSigner
from tests.stores import RawStore
from tests.support import COI, advance, new_journey


def verify(folder: Path, url: str, key: Path, *more: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COI_DATA_DIR": str(folder / "coi-data"), "COI_DATABASE_URL": url}
    command = [*COI, "verify", "--trusted-key", str(key), *more]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_verify_names_a_refused_record_with_its_reason(
    registered: LedgerApplication, cast: Cast, store_url: str, tmp_path: Path
) -> None:
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    journey = new_journey(cast, "identity_mismatch", index=1)
    infusion = advance(registered, journey, before="infused")[0]
    raw = RawStore(store_url)
    try:
        sequence = raw.append(therapy_uuid(journey.coi), infusion.envelope.decode(),
                              "aggregates.base:Ledgered.Recorded")  # fmt: skip
    finally:
        raw.conn.close()
    log = MerkleLog(registered)
    log.checkpoint(signer, signer.name, memory=None)
    advance(registered, new_journey(cast, index=2))  # committed after the checkpoint: no leaf yet
    key = tmp_path / "ledger.vkey"
    key.write_text(signer.verifier.encode() + "\n")

    done = verify(tmp_path, store_url, key)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAILED at sequence {sequence}: " in done.stdout and "identity_mismatch" in done.stdout
    assert "Traceback" not in done.stderr
    assert f"not yet covered: 33 records, from sequence {sequence + 1}, " in done.stdout, done.stdout
    assert "(33 of them not yet in the Merkle log)" in done.stdout

    skipped = verify(tmp_path, store_url, key, "--no-replay")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "rules: NOT replayed (--no-replay)" in skipped.stdout
