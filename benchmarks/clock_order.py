"""How far `recorded_at` steps back in sequence order when writers run side by side: the
measurement behind verify's clock tolerance (ledger/audit/witnessing.py CLOCK_TOLERANCE).

Run: python benchmarks/clock_order.py [--events N] [--writers K] [--stores sqlite,postgres]

The ledger stamps recorded_at when it reads a batch, before the batch's signatures are
checked and before it commits; the store numbers records in commit order. K writer
processes (default 3, as `coi up`'s two ingests and a `coi submit`) each submit their share
of N envelopes (default 12,000; each patient's steps in one writer) in the ledger's batches
on one fresh ledger per store. Then the records are read in sequence order and the largest
step back of recorded_at is printed, with how many records stepped back at all, against the
tolerance (never asserted).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from benchmarks.common import machine_info
from benchmarks.pipeline import note
from ledger.app.application import LedgerApplication
from ledger.audit.witnessing import CLOCK_TOLERANCE
from ledger.demo.journeys import Cast
from ledger.demo.kit import recent_cohort, register_cast, workload

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _write(url: str, raws: list[bytes]) -> None:
    app = LedgerApplication(url)
    try:
        refused = [o for o in app.submit_many(raws) if o.status != "accepted"]
        if refused:
            raise SystemExit(f"a writer's envelopes were refused: {refused[:3]}")
    finally:
        app.close()


def measure(url: str, events: int, writers: int) -> tuple[timedelta, int, int]:
    """(largest step back, records that stepped back, records) on the ledger at `url`."""
    cast = Cast()
    registered_at, journeys = recent_cohort(cast, events, datetime.now(UTC))
    app = LedgerApplication(url)
    register_cast(app, cast, registered_at)
    shares: list[list[bytes]] = [[] for _ in range(writers)]
    for journey, step in workload(journeys, events):
        shares[hash(journey.coi) % writers].append(step.envelope)  # a patient in one writer
    procs = [multiprocessing.get_context("spawn").Process(target=_write, args=(url, s)) for s in shares]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a writer failed (exit {p.exitcode})")
    worst, back, last, count = timedelta(0), 0, None, 0
    for _, at, _ in app.records():
        count += 1
        if last is not None and at < last:
            back += 1
            worst = max(worst, last - at)
        last = at if last is None else max(last, at)
    app.close()
    return worst, back, count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL, help="a database to create one beside")
    args = parser.parse_args()
    command = " ".join([Path(sys.executable).as_posix(), *sys.argv])
    results = []
    for store in args.stores.split(","):
        note(f"{store}: {args.writers} writers, {args.events:,} envelopes ...")
        if store == "sqlite":
            with tempfile.TemporaryDirectory(prefix="coi-clock-") as tmp:
                results.append((store, *measure(f"sqlite:///{tmp}/ledger.sqlite", args.events, args.writers)))
            continue
        database = f"coi_clock_bench_{multiprocessing.current_process().pid}"
        with psycopg.connect(args.postgres_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        try:
            url = args.postgres_url.rsplit("/", 1)[0] + f"/{database}"
            results.append((store, *measure(url, args.events, args.writers)))
        finally:
            with psycopg.connect(args.postgres_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
    print(f"command:  {command}")
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine_info():
        print(line)
    for store, worst, back, count in results:
        verdict = "within" if worst <= CLOCK_TOLERANCE else "BEYOND"
        print(
            f"{store:9s} {count:,} records: {back:,} dated before one earlier in sequence; the largest "
            f"step back {worst.total_seconds() * 1000:,.1f} ms, {verdict} the tolerance of "
            f"{CLOCK_TOLERANCE.total_seconds():.0f} s"
        )


if __name__ == "__main__":
    main()
