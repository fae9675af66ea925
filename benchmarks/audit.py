"""The auditors' read models at a million records: rebuild rate and query latency.

On an SQLite ledger of N records (default 1,000,000; about 33,000 patients), built as
`verify.py` builds it and kept the same way (`--db PATH` and `PATH.bench.json`), it measures in
the same run:

  * the raw read rate: `app.records()` iterated with nothing done per record, right before
    and right after the rebuild (the ceiling the rebuild is held against);
  * the rebuild: `projections.rebuild.rebuild(app, store)` into a fresh SQLite projections
    file, records/s, and its share of the raw read rate (target: at least 50 %);
  * in-process query latency, p50/p99 over random samples, on the read models the rebuild
    made (projections/queries.py `Audit`, as `coi find` and `coi audit` ask): `find` of a
    random identifier, `timeline` of a random COI, `timeline --as-of` a random time within
    that patient's journey (and `--known-at`, information), a one-month `trail` page (no
    filter, and filtered by site, signer, event type, patient), a `register` page.

  * `coi export genealogy` in process, per format, for random patients: the patient's bundle
    read and verified (ledger/app/bundle.py, ledger/audit/bundle.py), the document built and
    rendered (projections/export/); and `--batch`'s lookup in the identifier index.

Targets (printed PASS/MISS, never asserted): find and timeline p99 < 20 ms; one-month trail
p99 < 200 ms; rebuild >= 50 % of the raw read rate; an export p99 < 200 ms (JSON, CSV, EPCIS,
FHIR) and < 1 s (HTML).

Run: python benchmarks/audit.py [--records N] [--db PATH] [--samples N] [--exports N] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import percentile, print_header, rate
from verify import ledger, note, prepare

from ledger.cli.audit import REGISTER_KINDS
from ledger.store.sources import open_source
from ledger.transparency.checkpoint import NoteSigner, NoteVerifier
from projections.custody import as_utc
from projections.export.build import build
from projections.export.evidence import gather
from projections.export.formats import FORMATS, renderer
from projections.export.uris import DEFAULT_BASE, Ids
from projections.policy import late_entry_after
from projections.queries import Audit
from projections.rebuild import rebuild
from projections.store import ProjectionStore

TARGET_REBUILD_SHARE = 0.50
TARGET_LOOKUP_P99_MS = 20.0  # find, timeline, timeline --as-of
TARGET_TRAIL_P99_MS = 200.0  # a one-month trail
TARGET_EXPORT_P99_MS = {"html": 1000.0}  # and 200 ms for every other format
TARGET_EXPORT_DEFAULT_MS = 200.0
PROFILE_TOP = 25
MONTH = timedelta(days=30)
NOW = datetime(2026, 12, 1, tzinfo=UTC)  # the export's own time: not what is measured


@dataclass
class Rebuild:
    records: int
    seconds: float
    set_aside: int
    reads: list[float]  # raw read rate (records/s), right before and right after

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def ceiling(self) -> float:
        return statistics.mean(self.reads)


def raw_read(url: str) -> float:
    """records/s of `app.records()` with nothing done per record: what any rebuild must read."""
    with ledger(url) as app:
        started = time.perf_counter()
        count = sum(1 for _ in app.records())
        return count / (time.perf_counter() - started)


def timed_rebuild(url: str, target: Path) -> Rebuild:
    reads = [raw_read(url)]
    note(f"  raw read {reads[0]:,.0f} records/s; rebuilding ...")
    last = [time.perf_counter()]

    def progress(done: int) -> None:
        if time.perf_counter() - last[0] >= 10:
            last[0] = time.perf_counter()
            note(f"  rebuild: {done:,} records")

    with ledger(url) as app:
        store = ProjectionStore(f"sqlite:///{target}")
        try:
            started = time.perf_counter()
            done = rebuild(app, store, progress)
            seconds = time.perf_counter() - started
        finally:
            store.close()
    reads.append(raw_read(url))
    return Rebuild(done.records, seconds, len(done.set_aside), reads)


def profiled_rebuild(url: str, target: Path, records: int) -> str:
    """cProfile of a rebuild of the first `records` records: the top functions by own and by
    cumulative time."""
    with ledger(url) as app:
        store = ProjectionStore(f"sqlite:///{target}")
        limited = _Limited(app, records)
        profiler = cProfile.Profile()
        try:
            profiler.enable()
            rebuild(limited, store)  # type: ignore[arg-type]
            profiler.disable()
        finally:
            store.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(PROFILE_TOP)
    stats.sort_stats("cumulative").print_stats(PROFILE_TOP)
    return out.getvalue()


class _Limited:
    """The application, its records cut to the first `most` (for a shorter profiled rebuild)."""

    def __init__(self, app: object, most: int) -> None:
        self._app = app
        self._most = most

    def records(self, start: int = 1) -> object:
        records = self._app.records(start)  # type: ignore[attr-defined]
        return itertools.takewhile(lambda r: r[0] < start + self._most, records)


# ------------------------------------------------------------------ queries


Call = tuple[str, Callable[[], object]]  # what is asked (printed for the slowest), and the asking


@dataclass
class Latency:
    label: str
    ms: list[float]
    target_ms: float | None
    text: str
    slowest: str

    @property
    def p99(self) -> float:
        return percentile(self.ms, 0.99)


def timed(label: str, calls: list[Call], target_ms: float | None, text: str) -> Latency:
    ms = []
    for _, call in calls:
        started = time.perf_counter()
        call()
        ms.append((time.perf_counter() - started) * 1000)
    return Latency(label, ms, target_ms, text, calls[ms.index(max(ms))][0])


def queries(url: str, target: Path, samples: int, rng: random.Random) -> list[Latency]:
    with ledger(url) as app:
        late_after = late_entry_after(app)
    store = ProjectionStore(f"sqlite:///{target}")
    try:
        conn = store.connection
        audit = Audit(conn, store.postgres, late_after)
        top = conn.execute("SELECT MAX(rowid) FROM proj_identifiers").fetchone()[0]
        pick = "SELECT identifier FROM proj_identifiers WHERE rowid >= ? LIMIT 1"
        identifiers = [conn.execute(pick, (rng.randint(1, top),)).fetchone()[0] for _ in range(samples)]
        cois = rng.sample([c for (c,) in conn.execute("SELECT DISTINCT coi FROM proj_units")], samples)
        spans = {
            coi: conn.execute(
                "SELECT MIN(occurred_at), MAX(occurred_at) FROM proj_records WHERE coi = ?", (coi,)
            ).fetchone()
            for coi in cois
        }
        known = {
            coi: [at for (at,) in conn.execute("SELECT recorded_at FROM proj_records WHERE coi = ?", (coi,))]
            for coi in cois
        }

        def within(coi: str) -> datetime:
            first, last = (as_utc(t) for t in spans[coi])
            return first + (last - first) * rng.random()

        sites = [s for (s,) in conn.execute("SELECT DISTINCT site FROM proj_records")]
        signers = [p for (p,) in conn.execute("SELECT DISTINCT principal FROM proj_signatures")]
        types = [t for (t,) in conn.execute("SELECT DISTINCT event_type FROM proj_records")]
        last = conn.execute("SELECT MAX(sequence) FROM proj_records").fetchone()[0]
        at = "SELECT recorded_at FROM proj_records WHERE sequence >= ? ORDER BY sequence LIMIT 1"

        def trail(name: str, value: str | None) -> Call:
            # From a random record's time: a window where the records are (here most were
            # recorded within minutes of each other, so a window anywhere would be empty).
            start = as_utc(conn.execute(at, (rng.randint(1, last),)).fetchone()[0])
            filters = {name: value} if value is not None else {}

            def page() -> object:
                return audit.trail(start=start, end=start + MONTH, **filters)  # type: ignore[arg-type]

            return f"{name} {value} from {start:%Y-%m-%d %H:%M:%S}", page

        # Warm up once each (the registry's names are read once per Audit, as in one command).
        audit.find(identifiers[0]), audit.timeline(cois[0]), audit.trail(limit=1), audit.register(limit=1)
        as_of = [(coi, within(coi)) for coi in cois]
        known_at = [(coi, as_utc(rng.choice(known[coi]))) for coi in cois]
        sizes = [len(audit.timeline(coi).records) for coi in cois[:200]]
        kinds = [rng.choice(REGISTER_KINDS) for _ in range(samples)]
        plan: list[tuple[str, list[Call], float | None, str]] = [
            ("find", [(i, lambda i=i: audit.find(i)) for i in identifiers], TARGET_LOOKUP_P99_MS,
             f"{samples:,} random identifiers (any kind) from proj_identifiers"),
            ("timeline", [(c, lambda c=c: audit.timeline(c)) for c in cois], TARGET_LOOKUP_P99_MS,
             f"{samples:,} random COIs, {statistics.median(sizes):.0f} records each (median)"),
            ("timeline --as-of",
             [(f"{c} {t}", lambda c=c, t=t: audit.timeline(c, as_of=t)) for c, t in as_of],
             TARGET_LOOKUP_P99_MS, "a random time within each patient's journey"),
            ("timeline --known-at",
             [(f"{c} {t}", lambda c=c, t=t: audit.timeline(c, known_at=t)) for c, t in known_at],
             None, "info: one of the patient's own recorded_at times"),
            ("trail, one month", [trail("all", None) for _ in range(samples)], TARGET_TRAIL_P99_MS,
             f"first page (100) of {MONTH.days} days from a random record's time, no filter"),
            ("  --site", [trail("site", rng.choice(sites)) for _ in range(samples)], TARGET_TRAIL_P99_MS,
             f"one of {len(sites)} sites"),
            ("  --actor", [trail("actor", rng.choice(signers)) for _ in range(samples)], TARGET_TRAIL_P99_MS,
             f"one of {len(signers)} signers"),
            ("  --type", [trail("event_type", rng.choice(types)) for _ in range(samples)],
             TARGET_TRAIL_P99_MS, f"one of {len(types)} event types"),
            ("  --coi", [trail("coi", c) for c in cois], TARGET_TRAIL_P99_MS, "a random patient"),
            ("register", [(k, lambda k=k: audit.register(kind=k)) for k in kinds], None,
             "first page (100) of one kind"),
            ("register --open", [(k, lambda k=k: audit.register(kind=k, open_only=True)) for k in kinds],
             None, "the open ones of one kind"),
            ("register --coi", [(c, lambda c=c: audit.register(coi=c)) for c in cois], None,
             "a random patient"),
        ]  # fmt: skip
        out = []
        for label, calls, target_ms, text in plan:
            note(f"  {label.strip()} x {len(calls):,} ...")
            out.append(timed(label, calls, target_ms, text))
        return out
    finally:
        store.close()


def exports(url: str, target: Path, signer: NoteSigner, samples: int, rng: random.Random) -> list[Latency]:
    """Each format's export of `samples` random patients, as `coi export genealogy` makes it;
    other patients for each format, so none reads what the one before left in the page cache."""
    store = ProjectionStore(f"sqlite:///{target}")
    source = open_source(url)
    try:
        audit = Audit(store.connection, store.postgres)
        everyone = [c for (c,) in store.connection.execute("SELECT DISTINCT coi FROM proj_units")]
        picked = rng.sample(everyone, samples * (len(FORMATS) + 1))
        groups = [picked[i * samples : (i + 1) * samples] for i in range(len(FORMATS) + 1)]
        batches = [f"B-{c}" for c in groups[-1]]

        def trust(_: str) -> list[NoteVerifier]:
            return [signer.verifier]

        def export(coi: str, fmt: str) -> bytes:
            evidence = gather(source, coi, trust)
            assert evidence.verification.status == "verified", evidence.verification.failure
            document = build(evidence.sources, coi, Ids(DEFAULT_BASE, coi), evidence.verification, coi, NOW)
            return renderer(fmt)(document)

        sizes = {fmt: len(export(groups[-1][0], fmt)) for fmt in FORMATS}  # warm-up, and a size to show
        out = [
            timed("--batch lookup", [(b, lambda b=b: audit.cois(b, "batch")) for b in batches], None,
                  "info: the patient of a batch, from the identifier index"),
        ]  # fmt: skip
        for fmt, cois in zip(FORMATS, groups, strict=False):
            note(f"  export {fmt} x {samples:,} ...")
            target_ms = TARGET_EXPORT_P99_MS.get(fmt, TARGET_EXPORT_DEFAULT_MS)
            calls: list[Call] = [(c, lambda c=c, fmt=fmt: export(c, fmt)) for c in cois]
            out.append(timed(f"export {fmt}", calls, target_ms, f"{sizes[fmt]:,} bytes for one patient"))
        return out
    finally:
        source.close()
        store.close()


# ------------------------------------------------------------------ report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def row(label: str, value: str, text: str) -> None:
    print(f"  {label:<26} {value:<30} {text}".rstrip())


def print_rebuild(r: Rebuild) -> None:
    share = r.rate / r.ceiling
    print("\n== rebuild")
    row("raw read (app.records())", f"{rate(r.ceiling)} records/s",
        "mean of right before and right after: " + " / ".join(f"{x:,.0f}" for x in r.reads))  # fmt: skip
    row("projections rebuild", f"{rate(r.rate)} records/s",
        f"{r.records:,} records in {r.seconds:,.1f} s, into an emptied SQLite file; "
        f"{r.set_aside} set aside")  # fmt: skip
    row("rebuild / raw read", f"{share * 100:>10.1f} %",
        f"{verdict(share >= TARGET_REBUILD_SHARE)}: target >= {TARGET_REBUILD_SHARE:.0%}")  # fmt: skip


def print_queries(latencies: list[Latency], what: str = "queries") -> None:
    print(f"\n== {what} (in process, ms)")
    for q in latencies:
        value = f"p50 {statistics.median(q.ms):7.2f}, p99 {q.p99:7.2f}"
        judged = f"{verdict(q.p99 < q.target_ms)}: p99 < {q.target_ms:.0f} ms; " if q.target_ms else ""
        row(q.label, value, f"{judged}{q.text}; max {max(q.ms):.1f} ({q.slowest})")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the ledger (1000000)")
    parser.add_argument("--db", type=Path, help="SQLite ledger to keep and reuse, as verify.py does")
    parser.add_argument(
        "--projections",
        type=Path,
        help="SQLite file the rebuild writes and the queries read, kept (default: temp)",
    )
    parser.add_argument(
        "--queries-only",
        action="store_true",
        help="time the queries on the --projections a previous run rebuilt",
    )
    parser.add_argument("--samples", type=int, default=2000, help="queries of each kind (2000)")
    parser.add_argument("--exports", type=int, default=100, help="exports of each format (100; 0: none)")
    parser.add_argument("--seed", type=int, default=1, help="for the random samples")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also cProfile a rebuild of the first N records (default: none)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.records < 1000:
        parser.error("--records must be at least 1000")
    if args.samples < 1 or args.profile < 0 or args.exports < 0:
        parser.error("--samples must be positive, and --profile and --exports not negative")
    if args.queries_only and not (args.projections and args.projections.exists()):
        parser.error("--queries-only needs --projections naming a file a previous run rebuilt")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print_header()
    with tempfile.TemporaryDirectory(prefix="coi-bench-audit-") as tmp:
        folder = Path(tmp)
        db = args.db.resolve() if args.db else folder / "ledger.sqlite"
        url = f"sqlite:///{db}"
        signer, built, reused = prepare(db, args.records, 100_000)
        print(f"ledger:   {built.records:,} records, {built.patients:,} patients"
              + (f" (kept, built {built.date})" if reused else " (built in this run)"))  # fmt: skip
        projections = args.projections.resolve() if args.projections else folder / "projections.sqlite"
        if not args.queries_only:
            note("rebuilding the read models ...")
            print_rebuild(timed_rebuild(url, projections))
        note("queries ...")
        print_queries(queries(url, projections, args.samples, random.Random(args.seed)))
        if args.exports:
            note("exports ...")
            print_queries(
                exports(url, projections, signer, args.exports, random.Random(args.seed)), "exports"
            )
        if args.profile:
            note(f"profiling a rebuild of {args.profile:,} records ...")
            print(f"\n== profiled rebuild of the first {args.profile:,} records (not counted above)")
            print(profiled_rebuild(url, folder / "profiled.sqlite", args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
