"""What SQLite's never-reused sequence numbers cost an insert (migration
`sqlite-sequences-never-reused`, ledger/store/migrations.py).

Inserts rows of --state-bytes into eventsourcing's SQLite events table, in transactions of
--batch rows, once with the migration's triggers and once without, in turn for --rounds
rounds so drift on a shared machine hits both alike. Times CPU (process time: what this
process spent, less sensitive than wall time to others' load) and prints the median and
the minimum per row for each, and the difference.

    .venv/bin/python benchmarks/sequences.py
    .venv/bin/python benchmarks/sequences.py --rows 100000 --rounds 9
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from common import machine_info

from ledger.store.migrations import SQLITE_SEQUENCE_TOP

TABLE = (  # eventsourcing's SQLiteApplicationRecorder table, as the ledger's store has it
    "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, topic TEXT, "
    "state BLOB, PRIMARY KEY (originator_id, originator_version))"
)


def run(folder: Path, triggers: bool, rows: int, batch: int, state: bytes) -> float:
    path = folder / f"{uuid.uuid4().hex}.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(TABLE)
        for statement in SQLITE_SEQUENCE_TOP if triggers else ():
            db.execute(statement)
        batches = [[(uuid.uuid4().hex, 1, "t", state) for _ in range(batch)] for _ in range(rows // batch)]
        started = time.process_time()
        for values in batches:
            db.execute("BEGIN")
            db.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", values)
            db.execute("COMMIT")
        return (time.process_time() - started) / (len(batches) * batch)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=30000, help="rows per run (30000)")
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction (500)")
    parser.add_argument("--state-bytes", type=int, default=1000, help="bytes of state per row (1000)")
    parser.add_argument("--rounds", type=int, default=7, help="runs of each, in turn (7)")
    args = parser.parse_args()
    state = os.urandom(args.state_bytes)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for triggers in (False, True):
                times[triggers].append(run(Path(folder), triggers, args.rows, args.batch, state))
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine_info():
        print(line)
    print(f"workload: {args.rows} rows of {args.state_bytes} bytes in transactions of {args.batch}, "
          f"{args.rounds} rounds; CPU time per row")  # fmt: skip
    for triggers, label in ((False, "without the triggers"), (True, "with the triggers")):
        values = times[triggers]
        print(
            f"  {label:22} median {statistics.median(values) * 1e6:6.2f} us   min {min(values) * 1e6:6.2f} us"
        )
    more = statistics.median(times[True]) - statistics.median(times[False])
    print(f"  difference             median {more * 1e6:+6.2f} us per row")


if __name__ == "__main__":
    main()
