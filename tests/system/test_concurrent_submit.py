"""Two coi submit processes on one ledger."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from tests.support import COI, new_journey


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
