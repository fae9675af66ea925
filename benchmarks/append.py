"""Verified-append throughput of the ledger, next to same-run ceilings.

For each store it measures, on the same machine and in the same run:

  * ledger: `LedgerApplication.submit_many` over N pre-built, pre-signed envelopes
    (decode + verify + rules + save), end to end;
  * verify ceiling: Ed25519 verifications/s on one core with `cryptography`, divided by the
    average number of signatures per envelope;
  * append ceiling: a plain eventsourcing application on the same store appending one event
    per envelope (payload of the envelope's size) in saves of `--batch-size` events;
  * the serial ceiling 1/(1/verify + 1/append) and the ledger's share of it.

Each figure is the median of --repeat runs (default 3), every run on a fresh, empty store.

Run: python benchmarks/append.py [--events N] [--batch-size N] [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import itertools
import pstats
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import psycopg
from common import (
    ParallelVerifier,
    opened,
    percentile,
    print_header,
    rate,
    reset_peak_rss,
    spread,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql

from ledger.app.application import LedgerApplication, Outcome
from ledger.app.config import persistence_env
from ledger.demo.journeys import VARIANTS, Cast
from ledger.demo.kit import recent_cohort, register_cast, workload
from ledger.store.recorders import CLAIMS_TABLE, SCHEMA_TABLE
from ledger.wire.dsse import PAYLOAD_TYPE, open_envelope, pae

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_SHARE = 0.70  # the target, on SQLite: >= 70 % of the serial ceiling
VERIFY_SECONDS = 1.5  # long enough for a stable rate, short enough for the run budget


# ------------------------------------------------------------------ workload


@dataclass
class Workload:
    """Everything generated before timing starts."""

    cast: Cast
    registered_at: datetime
    envelopes: list[bytes]
    patients: int
    avg_signatures: float
    avg_envelope_bytes: float
    avg_body_bytes: float
    # Every (public key, signature, PAE message) in the workload, for the verify ceiling.
    signed: list[tuple[Ed25519PublicKey, bytes, bytes]]
    seconds: float


def build_workload(events: int) -> Workload:
    """Interleaved journeys (as live sites would send them), only steps meant to be accepted."""
    started = time.perf_counter()
    cast = Cast()
    now = datetime.now(UTC)
    registered_at, journeys_of = recent_cohort(cast, events, now, VARIANTS)
    steps = workload(journeys_of, events)
    journeys = {journey.coi: journey for journey, _ in steps}
    latest = max(journey.clock for journey in journeys.values())
    if latest > now:
        raise SystemExit(f"workload error: a journey ends in the future ({latest.isoformat()})")
    envelopes = [step.envelope for _, step in steps]
    opened = [open_envelope(e) for e in envelopes]
    keys = {m.signer.keyid: m.key.public_key() for m in cast.members.values()}
    signed = [(keys[k], sig, pae(PAYLOAD_TYPE, o.body)) for o in opened for k, sig in o.signatures]
    return Workload(
        cast=cast,
        registered_at=registered_at,
        envelopes=envelopes,
        patients=len(journeys),
        avg_signatures=statistics.fmean(len(o.signatures) for o in opened),
        avg_envelope_bytes=statistics.fmean(len(e) for e in envelopes),
        avg_body_bytes=statistics.fmean(len(o.body) for o in opened),
        signed=signed,
        seconds=time.perf_counter() - started,
    )


# ------------------------------------------------------------------ stores


@dataclass
class Store:
    name: str
    fresh: Callable[[str], str]  # a URL where the named application's events start empty
    describe: str
    clear: Callable[[str], None] = lambda app_name: None  # drop what the application left


def sqlite_store(folder: Path) -> Store:
    counter = itertools.count()

    def fresh(app_name: str) -> str:
        return f"sqlite:///{folder / f'{app_name.lower()}-{next(counter)}.sqlite'}"

    return Store("sqlite", fresh, f"SQLite {sqlite3.sqlite_version}, temp file in {folder}")


def postgres_store(url: str) -> Store | str:
    """The store, or why it cannot be used."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            server = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        return f"cannot connect to {url}: {str(exc).strip().splitlines()[0]}"

    def clear(app_name: str) -> None:
        # eventsourcing names an application's table after it: CoiLedger -> coiledger_events;
        # the migrations add the claims index beside it, and remember that they did in
        # coi_schema: dropped with the tables, so the next ledger migrates afresh.
        tables = [
            sql.Identifier(f"{app_name.lower()}_events"),
            sql.Identifier(CLAIMS_TABLE),
            sql.Identifier(SCHEMA_TABLE),
        ]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(tables)))

    def fresh(app_name: str) -> str:
        # Every run starts from an empty table, so appends don't pay for earlier runs' rows.
        clear(app_name)
        return url

    return Store("postgres", fresh, f"PostgreSQL {server[0] if server else '?'} at {url}", clear)


# ------------------------------------------------------------------ measurements


@dataclass
class LedgerRun:
    events_per_s: float
    seconds: float
    batch_ms: list[float]
    peak_rss_mib: float
    rss_scope: str


def run_ledger(url: str, work: Workload, batch_size: int) -> LedgerRun:
    with opened(lambda: LedgerApplication(url, batch_size=batch_size)) as app:
        register_cast(app, work.cast, work.registered_at)
        gc.collect()
        scope = reset_peak_rss()
        outcomes = []
        # Outcomes of a batch are yielded together right after its save, so the gap between
        # batch ends is one batch's decode + verify + rules + save.
        marks = [time.perf_counter()]
        for i, outcome in enumerate(app.submit_many(work.envelopes), 1):
            outcomes.append(outcome)
            if i % batch_size == 0:
                marks.append(time.perf_counter())
        end = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    check_outcomes(outcomes, len(work.envelopes))
    seconds = end - marks[0]
    batch_ms = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
    return LedgerRun(len(work.envelopes) / seconds, seconds, batch_ms, peak, scope)


def check_outcomes(outcomes: list[Outcome], expected: int) -> None:
    """Every generated envelope is valid: anything else is a failed run, not a slow one."""
    bad = [o for o in outcomes if o.status != "accepted"]
    if len(outcomes) != expected or bad:
        first = bad[0] if bad else None
        detail = f"; first: {first.status} {first.code}: {first.message}" if first else ""
        raise SystemExit(
            f"benchmark failed: {len(outcomes)} outcomes for {expected} envelopes, "
            f"{len(bad)} not accepted{detail}"
        )


def profile_ledger(url: str, work: Workload, batch_size: int, top: int = 25) -> str:
    """cProfile of one submit_many run on a fresh store; top functions by cumulative time."""
    with opened(lambda: LedgerApplication(url, batch_size=batch_size)) as app:
        register_cast(app, work.cast, work.registered_at)
        profiler = cProfile.Profile()
        outcomes = profiler.runcall(lambda: list(app.submit_many(work.envelopes)))
    check_outcomes(outcomes, len(work.envelopes))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def verify_rate(work: Workload) -> float:
    """Ed25519 verifications/s over the workload's own signatures and PAE messages, so the
    message sizes are exactly the envelopes' (loaded keys, as the ledger caches them)."""
    signed = itertools.cycle(work.signed)
    done = 0
    started = time.perf_counter()
    deadline = started + VERIFY_SECONDS
    while (now := time.perf_counter()) < deadline:
        for key, signature, message in itertools.islice(signed, 1000):
            key.verify(signature, message)
        done += 1000
    return done / (now - started)


def verify_rate_all_cores(work: Workload) -> float:
    """The same on all cores (threads: cryptography releases the GIL while verifying), for
    context: the ledger checks each batch's signatures on all cores, in worker processes."""
    jobs = [(key.public_bytes_raw(), signature, message) for key, signature, message in work.signed]
    verifier = ParallelVerifier()
    done = 0
    started = time.perf_counter()
    deadline = started + VERIFY_SECONDS
    try:
        while (now := time.perf_counter()) < deadline:
            verifier.verify_all(jobs[:2000])
            done += min(2000, len(jobs))
    finally:
        verifier.close()
    return done / (now - started)


class Blob(Aggregate):
    """Stands in for a therapy: each event carries one envelope-sized string."""

    @event("Opened")
    def __init__(self, payload: str) -> None:
        self.payload = payload

    @event("Recorded")
    def record(self, payload: str) -> None:
        self.payload = payload


class RawAppend(Application):
    """A plain application with the ledger's cache settings, in a table of its own."""

    name = "BenchRawAppend"
    env = LedgerApplication.env


def raw_append_rate(url: str, work: Workload, batch_size: int) -> float:
    """Envelopes/s a plain eventsourcing application appends: one event per envelope on
    `patients` aggregates, round robin like the workload, `batch_size` envelopes per save;
    (The ledger also writes one claims-index row per envelope in the same transaction; that
    is part of what is measured against this ceiling.)"""
    payloads = [e.decode() for e in work.envelopes]
    # eventsourcing's own mapper (the ledger's files only the ledger's classes under its names),
    # and its table made by itself: the ledger's migrations are not the ceiling's.
    env = {k: v for k, v in persistence_env(url).items() if k != "MAPPER_TOPIC"}
    with opened(lambda: RawAppend(env={**env, "CREATE_TABLE": "y"})) as app:
        blobs: dict[int, Blob] = {}
        pending: dict[UUID, Aggregate] = {}
        started = time.perf_counter()
        for i, payload in enumerate(payloads):
            key = i % work.patients
            blob = blobs.get(key)
            if blob is None:
                blob = blobs[key] = Blob(payload)
            else:
                blob.record(payload)
            pending[blob.id] = blob
            if (i + 1) % batch_size == 0:
                app.save(*pending.values())
                pending = {}
        if pending:
            app.save(*pending.values())
        seconds = time.perf_counter() - started
    return len(payloads) / seconds


# ------------------------------------------------------------------ report


@dataclass
class StoreResult:
    """Samples from each repeat; figures are medians, so one noisy repeat cannot swing them."""

    store: Store
    signatures: float
    runs: list[LedgerRun] = field(default_factory=list)
    verifies: list[float] = field(default_factory=list)
    verifies_all: list[float] = field(default_factory=list)
    appends: list[float] = field(default_factory=list)

    @property
    def ledger_rate(self) -> float:
        return statistics.median(r.events_per_s for r in self.runs)

    @property
    def batch_ms(self) -> list[float]:
        return [ms for r in self.runs for ms in r.batch_ms]

    @property
    def verifies_per_s(self) -> float:
        return statistics.median(self.verifies)

    @property
    def verify_ceiling(self) -> float:
        return self.verifies_per_s / self.signatures

    @property
    def append_ceiling(self) -> float:
        return statistics.median(self.appends)

    @property
    def serial_ceiling(self) -> float:
        return 1 / (1 / self.verify_ceiling + 1 / self.append_ceiling)

    @property
    def share(self) -> float:
        return self.ledger_rate / self.serial_ceiling


def measure(store: Store, work: Workload, batch_size: int, repeat: int) -> StoreResult:
    result = StoreResult(store, work.avg_signatures)
    # Interleaved, so drift on a shared machine hits the ledger and its ceilings alike.
    for _ in range(repeat):
        result.runs.append(run_ledger(store.fresh(LedgerApplication.name), work, batch_size))
        result.verifies.append(verify_rate(work))
        result.verifies_all.append(verify_rate_all_cores(work))
        url = store.fresh(RawAppend.name)
        result.appends.append(raw_append_rate(url, work, batch_size))
    # Benchmark rows are no one's ledger: leave the database as empty as it was made.
    store.clear(LedgerApplication.name)
    store.clear(RawAppend.name)
    return result


def verdict_of(r: StoreResult) -> str:
    if r.store.name != "sqlite":
        return "-"
    return "PASS" if r.share >= TARGET_SHARE else "MISS"


def print_store(r: StoreResult, work: Workload, batch_size: int) -> None:
    batches = r.batch_ms
    p50 = statistics.median(batches) if batches else float("nan")
    p99 = percentile(batches, 0.99)
    seconds = statistics.median(run.seconds for run in r.runs)
    peak = max(run.peak_rss_mib for run in r.runs)
    target = (
        f"{verdict_of(r)}: target >= {TARGET_SHARE:.0%} on SQLite"
        if r.store.name == "sqlite"
        else "(the target is for SQLite)"
    )
    rows = [
        ("ledger verified append", f"{rate(r.ledger_rate)} events/s",
         f"{len(work.envelopes):,} events in {seconds:.2f} s, batch {batch_size}; "
         + spread([run.events_per_s for run in r.runs])),
        ("  per-batch latency", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
         f"{len(batches)} full batches of {batch_size} (decode+verify+rules+save)"),
        ("  peak RSS", f"{peak:>10,.0f} MiB", r.runs[0].rss_scope + ", this process only"),
        ("Ed25519 verify, 1 core", f"{rate(r.verifies_per_s)} verifies/s",
         f"the workload's signatures, {work.avg_body_bytes:.0f} B bodies; " + spread(r.verifies)),
        ("Ed25519 verify, all cores", f"{rate(statistics.median(r.verifies_all))} verifies/s",
         "info: threads on all cores, nothing else running; " + spread(r.verifies_all)),
        ("  signatures/envelope", f"{r.signatures:>10.3f}", "average over the workload"),
        ("  envelope verify ceiling", f"{rate(r.verify_ceiling)} events/s", "verifies/s / signatures"),
        ("raw append ceiling", f"{rate(r.append_ceiling)} events/s",
         f"1 event/envelope, saves of {batch_size} events; " + spread(r.appends)),
        ("serial ceiling", f"{rate(r.serial_ceiling)} events/s", "1/(1/verify + 1/append)"),
        ("measured / serial", f"{r.share * 100:>10.1f} %", target),
    ]  # fmt: skip
    print(f"\n== {r.store.name}: {r.store.describe}")
    for label, value, note in rows:
        print(f"  {label:<26} {value:<28} {note}".rstrip("; "))


def print_summary(results: list[StoreResult], repeat: int) -> None:
    print(f"\nsummary: events/s (medians of {repeat} runs), per-batch latency in ms")
    header = ("store", "ledger", "p50", "p99", "verify ceil", "append ceil", "serial ceil", "share", "target")
    print("  " + "  ".join(f"{h:>11}" for h in header))
    for r in results:
        batches = r.batch_ms
        cells = (
            r.store.name,
            f"{r.ledger_rate:,.0f}",
            f"{statistics.median(batches):.1f}" if batches else "-",
            f"{percentile(batches, 0.99):.1f}",
            f"{r.verify_ceiling:,.0f}",
            f"{r.append_ceiling:,.0f}",
            f"{r.serial_ceiling:,.0f}",
            f"{r.share * 100:.1f} %",
            verdict_of(r),
        )
        print("  " + "  ".join(f"{c:>11}" for c in cells))


# ------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="envelopes to append (default 20000)")
    parser.add_argument("--batch-size", type=int, default=50, help="LedgerApplication batch size (50)")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=3, help="runs per store; medians reported (3)")
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="its coiledger_events table is dropped"
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile one extra run per store")
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(args.stores) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown store(s): {', '.join(sorted(unknown))}")
    if min(args.events, args.batch_size, args.repeat) < 1:
        parser.error("--events, --batch-size and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print_header()

    work = build_workload(args.events)
    print(
        f"workload: {len(work.envelopes):,} envelopes from {work.patients} interleaved journeys, "
        f"avg {work.avg_envelope_bytes:.0f} B/envelope ({work.avg_body_bytes:.0f} B body), "
        f"{work.avg_signatures:.3f} signatures/envelope; built in {work.seconds:.1f} s (not timed)"
    )

    results: list[StoreResult] = []
    with tempfile.TemporaryDirectory(prefix="coi-bench-") as folder:
        for name in args.stores:
            store = sqlite_store(Path(folder)) if name == "sqlite" else postgres_store(args.postgres_url)
            if isinstance(store, str):
                print(f"\n== {name}: skipped: {store}")
                continue
            result = measure(store, work, args.batch_size, args.repeat)
            results.append(result)
            print_store(result, work, args.batch_size)
            if args.profile:
                print(f"\n-- cProfile of submit_many on {name} (top 25 by cumulative time)")
                print(profile_ledger(store.fresh(LedgerApplication.name), work, args.batch_size))
                store.clear(LedgerApplication.name)
    if results:
        print_summary(results, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
