"""The relay, the pipeline's signer, on a ledger rolled back under it: it says why and stops,
with a failing exit status, rather than sign a smaller log (real relay process, real broker)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from consumers.broker import ensure_topics
from ledger.wire.kafka_topics import Topics
from tests.stores import RawStore
from tests.support import coi


def test_the_relay_refuses_to_sign_a_rolled_back_ledger_and_stops(tmp_path: Path, bootstrap: str) -> None:
    assert coi(tmp_path, "demo", "--patients", "1").returncode == 0
    raw = RawStore(f"sqlite:///{tmp_path / 'coi-data' / 'ledger.sqlite'}")
    try:
        size = raw.count()
        raw.truncate(size - 5)  # as a restore from an older backup leaves it
    finally:
        raw.conn.close()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics(bootstrap, Topics(prefix))
    env = {**os.environ, "COI_DATA_DIR": str(tmp_path / "coi-data"), "COI_KAFKA_BOOTSTRAP": bootstrap,
           "COI_TOPIC_PREFIX": prefix}  # fmt: skip
    env.pop("COI_DATABASE_URL", None)
    relay = subprocess.run([sys.executable, "-m", "ledger.cli", "run", "relay"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert relay.returncode == 1, relay.stderr[-3000:]
    assert (
        f"the log holds {size - 5:,} records but this key signed a checkpoint of size {size:,}"
        in relay.stderr
    )
    assert "Do not re-sign" in relay.stderr and "stopped" in relay.stderr
    assert "Traceback" not in relay.stderr
