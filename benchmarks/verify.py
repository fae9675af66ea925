"""Full verification, Merkle appends and proofs of a large ledger, next to same-run ceilings.

On an SQLite ledger of N records (default 1,000,000) it measures, on the same machine and
in the same run:

  * build: sign + submit + integrate, records/s (information only);
  * full verification: `LedgerVerifier(source, [ledger key]).run()` over the whole ledger, in a
    fresh process (so its peak RSS is its own), with the rules replayed and without
    (`replay=False`), next to the all-core Ed25519 ceiling: one forked process per core
    verifying the ledger's own signatures / signatures per envelope;
  * Merkle appends: `merkle.CompactRange.append` in memory over the stored leaf hashes, and
    `MerkleLog.integrate()` rebuilding the log tables of a copy of the ledger from its records;
  * inclusion proofs (`MerkleLog.inclusion`) and consistency proofs
    (`merkle.consistency_proof` over `LogStore.nodes`) at the full size: p50/p99 latency.

`--db PATH` keeps the ledger (and `PATH.bench.json`: its ledger key and build figures) so
later runs skip the build.

Run: python benchmarks/verify.py [--records N] [--db PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import gc
import io
import itertools
import json
import math
import multiprocessing
import os
import pstats
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from common import opened, percentile, print_header, rate, spread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.base import body_of
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.audit.signatures import BackgroundVerifier, Job, verify_slice
from ledger.audit.verification import LedgerVerifier
from ledger.demo.journeys import VARIANTS, Cast, Journey, compressed_run
from ledger.demo.kit import RECENT, interleave
from ledger.store.logstore import TABLES, LogStore
from ledger.store.sources import open_source
from ledger.transparency import merkle
from ledger.transparency.checkpoint import NoteSigner, NoteVerifier
from ledger.wire import events as ev
from ledger.wire.dsse import PAYLOAD_TYPE, open_envelope, pae
from ledger.wire.keys import keyid_for

TARGET_SHARE = 0.80  # full verification without the rules replayed >= 80 % of the ceiling
TARGET_REPLAY_SHARE = 0.60  # with the rules replayed (coi verify's default) >= 60 %
TARGET_RSS_MIB = 1024  # peak RSS of the verification process < 1 GiB
TARGET_INCLUSION_P99_MS = 5.0
PROFILE_TOP = 30
ORIGIN = "coi-ledger.bench/verify"
VERIFY_SECONDS = 2.0  # per ceiling measurement
BUILD_BATCH = 500  # LedgerApplication batch size for the (untimed-for-target) build
PATIENTS_PER_CHUNK = 1000  # journeys generated and interleaved together
CEILING_SAMPLE = 20_000  # envelopes whose signatures make the ceiling's jobs
SCAN_CHUNK = 5000
PROGRESS_SECONDS = 10.0


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ledger(url: str) -> contextlib.AbstractContextManager[LedgerApplication]:
    return opened(lambda: LedgerApplication(url, batch_size=BUILD_BATCH))


# ------------------------------------------------------------------ build


@dataclass
class Build:
    """Figures of the build, kept beside a --db ledger so later runs can print them."""

    records: int
    patients: int
    seconds: float  # wall clock: register + submit + integrate + checkpoints
    submit_seconds: float
    integrate_seconds: float  # the MerkleLog.integrate() calls, one per checkpoint
    checkpoints: list[int]
    date: str


def _generate(
    queue: multiprocessing.Queue[tuple[int, list[bytes]] | str | None],
    cast: Cast,
    needed: int,
    now: datetime,
) -> None:
    """Worker process: interleaved journeys, PATIENTS_PER_CHUNK at a time, until `needed`
    envelopes. Journey ids are random; a COI or DIN drawn twice would be rejected by the
    ledger, so such a journey is drawn again."""
    estimate = needed // 24 + 1  # accepted steps per journey: 24-36
    # Inside ledger/demo/kit.py RECENT before now, compressed: no step is a late entry that
    # needs a reason, as long as the build ends within late_entry_after - RECENT of `now`.
    run = compressed_run(now, estimate, RECENT)
    used: set[str] = set()
    index = produced = 0
    while produced < needed:
        queues = []
        for _ in range(PATIENTS_PER_CHUNK):
            start = run.start(min(index, estimate - 1))
            while True:
                journey = Journey(cast, index, start, VARIANTS[index % len(VARIANTS)], run.hour)
                if journey.coi not in used and journey.din not in used:
                    break
            used.update((journey.coi, journey.din))
            queues.append([s.envelope for s in journey.steps() if s.expect is None])
            if journey.clock > now:
                queue.put(f"a journey ends in the future ({journey.clock.isoformat()})")
                return
            index += 1
        chunk = interleave(queues)
        queue.put((len(queues), chunk))
        produced += len(chunk)
    queue.put(None)


def build(url: str, records: int, signer: NoteSigner, checkpoint_every: int) -> Build:
    """Register a cast, then submit interleaved journeys (generated in a worker process while
    this one submits) up to `records` records, integrating and signing a checkpoint every
    `checkpoint_every` records and at the end."""
    cast = Cast()
    now = datetime.now(UTC)
    registered_at = compressed_run(now, 1, RECENT).registered_at  # as _generate's journeys
    registrations = cast.setup(registered_at)  # the cast, then the first policy boundary
    needed = records - len(registrations)
    context = multiprocessing.get_context("fork")  # the cast's private keys stay in memory
    queue: multiprocessing.Queue[tuple[int, list[bytes]] | str | None] = context.Queue(maxsize=3)
    worker = context.Process(target=_generate, args=(queue, cast, needed, now), daemon=True)
    worker.start()
    started = time.perf_counter()
    submit_seconds = integrate_seconds = 0.0
    checkpoints: list[int] = []
    patients = 0
    last_note = started
    try:
        with ledger(url) as app:
            log = MerkleLog(app)

            def submit(envelopes: list[bytes], at: datetime | None = None) -> None:
                nonlocal submit_seconds
                t = time.perf_counter()
                for i, outcome in enumerate(app.submit_many(envelopes, now=at)):
                    if outcome.status != "accepted":
                        raise SystemExit(
                            f"benchmark failed: building: envelope {i} of a chunk was {outcome.status}: "
                            f"{outcome.code}: {outcome.message}"
                        )
                submit_seconds += time.perf_counter() - t

            def checkpoint() -> None:
                nonlocal integrate_seconds
                t = time.perf_counter()
                log.integrate()
                integrate_seconds += time.perf_counter() - t
                checkpoints.append(log.checkpoint(signer, ORIGIN, memory=None).size)

            # The ledger's clock, injected: it receives the cast when the cast says it
            # registered (hours back), so no key claims validity from before its receipt.
            submit(registrations, registered_at)
            done = len(registrations)
            while done < records:
                item = queue.get()
                if item is None:
                    raise SystemExit("benchmark failed: the journey generator stopped early")
                if isinstance(item, str):
                    raise SystemExit(f"benchmark failed: workload error: {item}")
                chunk_patients, chunk = item
                chunk = chunk[: records - done]
                patients += min(chunk_patients, len(chunk))  # the first round has one of each
                while chunk:
                    # Submit up to the next checkpoint boundary, so checkpoints fall on multiples.
                    room = checkpoint_every - done % checkpoint_every
                    part, chunk = chunk[:room], chunk[room:]
                    submit(part)
                    done += len(part)
                    if done % checkpoint_every == 0:
                        checkpoint()
                    if time.perf_counter() - last_note >= PROGRESS_SECONDS:
                        last_note = time.perf_counter()
                        elapsed = last_note - started
                        note(
                            f"  build: {done:,} / {records:,} records, {done / elapsed:,.0f} records/s, "
                            f"about {(records - done) * elapsed / done:,.0f} s to go"
                        )
            if not checkpoints or checkpoints[-1] != done:
                checkpoint()
    finally:
        worker.kill()
        worker.join()
    return Build(
        records=done,
        patients=patients,
        seconds=time.perf_counter() - started,
        submit_seconds=submit_seconds,
        integrate_seconds=integrate_seconds,
        checkpoints=checkpoints,
        date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
    )


class Sidecar(msgspec.Struct):
    """PATH.bench.json beside a kept ledger: its ledger key (a benchmark key, nothing else
    trusts it) and the figures of its build."""

    signer: str
    build: dict[str, object]


def sidecar_path(db: Path) -> Path:
    return db.with_name(db.name + ".bench.json")


def record_count(url: str) -> int:
    with ledger(url) as app:
        return app.recorder.max_notification_id() or 0  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the ledger's signatures


@dataclass
class Signatures:
    records: int
    average: float  # signatures per envelope, over every record
    avg_body_bytes: float
    jobs: list[Job]  # (public key, signature, PAE message) of ~CEILING_SAMPLE envelopes across the ledger
    seconds: float


class _State(msgspec.Struct):
    envelope: str


class _Sig(msgspec.Struct):
    keyid: str


class _Envelope(msgspec.Struct):
    signatures: list[_Sig]


def ledger_signatures(url: str) -> Signatures:
    """One pass over the records: the signature count of each, and the jobs of a sample."""
    started = time.perf_counter()
    state, envelope = msgspec.json.Decoder(_State), msgspec.json.Decoder(_Envelope)
    keys: dict[str, bytes] = {}
    sampled: list[str] = []
    records = signatures = 0
    with ledger(url) as app:
        total = app.recorder.max_notification_id() or 0  # type: ignore[attr-defined]
        every = max(1, total // CEILING_SAMPLE)
        after = 0
        while notifications := app.recorder.select_notifications(start=after + 1, limit=SCAN_CHUNK):
            for n in notifications:
                text = state.decode(n.state).envelope
                signatures += len(envelope.decode(text).signatures)
                records += 1
                if n.id % every == 0:
                    sampled.append(text)
                if n.topic.startswith("aggregates.principal:"):  # the registry's records
                    body = body_of(text)
                    if isinstance(body, ev.PrincipalRegistered):
                        raw = base64.b64decode(body.public_key)
                        keys[keyid_for(body.principal_id, raw)] = raw
            after = notifications[-1].id
    jobs: list[Job] = []
    bodies = []
    for text in sampled:
        opened = open_envelope(text.encode())
        bodies.append(len(opened.body))
        message = pae(PAYLOAD_TYPE, opened.body)
        jobs.extend((keys[keyid], sig, message) for keyid, sig in opened.signatures)
    return Signatures(
        records, signatures / records, statistics.fmean(bodies), jobs, time.perf_counter() - started
    )


def _verify_for(jobs: list[Job], seconds: float) -> tuple[int, float]:
    """In a worker process: verify `jobs` round and round for `seconds`; (verified, seconds)."""
    cycle = itertools.cycle(jobs)
    done = 0
    started = time.perf_counter()
    while (now := time.perf_counter()) < started + seconds:
        verdicts = verify_slice(list(itertools.islice(cycle, 500)))
        if not all(verdicts):
            raise SystemExit("benchmark failed: a stored signature does not verify")
        done += len(verdicts)
    return done, now - started


def ceiling_rate(jobs: list[Job]) -> float:
    """Ed25519 verifications/s on all cores: one forked process per core, each verifying its
    share of the ledger's own (key, signature, PAE message) jobs in a loop, nothing else
    running (threads under-state it: each waits for the GIL between calls)."""
    cores = len(os.sched_getaffinity(0))
    shares = [jobs[i::cores] for i in range(cores)]
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        results = pool.starmap(_verify_for, [(share, VERIFY_SECONDS) for share in shares])
    return sum(done / seconds for done, seconds in results)


# ------------------------------------------------------------------ full verification


@dataclass
class VerifyRun:
    seconds: float
    records: int
    leaves: int
    checkpoints: int
    streams: int
    peak_rss_mib: float  # VmHWM: this process's peak since exec (imports included)
    start_rss_mib: float  # VmRSS after imports and opening the record source, before run()
    workers: int  # the verifier's signature worker processes
    worker_peak_mib: float  # the largest one's peak RSS (ru_maxrss of the reaped children)


def child_verify(
    url: str, trusted: str, profile: bool = False, skip_signatures: bool = False, replay: bool = True
) -> int:
    """In a fresh process: LedgerVerifier(...).run() over the whole ledger. Prints one JSON
    line. Its peak RSS is VmHWM, the high-water mark of this process image since exec, not
    ru_maxrss: Linux carries the parent's RSS at fork into the child's ru_maxrss.
    `skip_signatures` (diagnostic): every signature is taken as valid without checking it,
    which leaves the verifier's other work."""
    if skip_signatures:
        BackgroundVerifier.submit = lambda self, jobs: None  # type: ignore[method-assign]
    verifier = NoteVerifier.decode(trusted)
    last = [time.perf_counter()]

    def progress(report: object) -> None:
        if time.perf_counter() - last[0] >= PROGRESS_SECONDS:
            last[0] = time.perf_counter()
            note(f"  verify: {getattr(report, 'records', 0):,} records")

    source = open_source(url)  # read-only, as `coi verify` reads
    try:
        gc.collect()
        start_rss = _status_mib("VmRSS")
        started = time.perf_counter()
        profiler = cProfile.Profile() if profile else None
        verify = LedgerVerifier(source, [verifier], progress, replay=replay).run
        report = profiler.runcall(verify) if profiler else verify()
        seconds = time.perf_counter() - started
    finally:
        source.close()
    peak = _status_mib("VmHWM")
    # The workers are forked from this process and reaped when run() returns; their ru_maxrss
    # counts the pages they share with it, so the sum below is an upper bound.
    workers = 0 if skip_signatures else len(os.sched_getaffinity(0))
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if report.failure is not None:
        print(json.dumps({"failure": str(report.failure)}))
        return 1
    run = VerifyRun(
        seconds, report.records, report.leaves, report.checkpoints, report.streams, peak, start_rss,
        workers, worker_peak,
    )  # fmt: skip
    if profiler is not None:
        for order in ("tottime", "cumulative"):
            print(f"\n-- cProfile of LedgerVerifier.run() in its process, top {PROFILE_TOP} by {order} "
                  "(this process only: its signature workers are not profiled)")  # fmt: skip
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(PROFILE_TOP)
            print(out.getvalue().strip())
    print(json.dumps(asdict(run)))
    return 0


def _status_mib(name: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if name == "VmHWM" else float("nan")


def run_verify(url: str, trusted: NoteVerifier, *extra: str) -> tuple[VerifyRun, str]:
    """A verification in a fresh process: its figures, and whatever else it printed."""
    done = subprocess.run(
        [sys.executable, __file__, "--child-verify", url, "--trusted", trusted.encode(), *extra],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines() or ["{}"]
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        result = {}
    if "failure" in result:
        raise SystemExit(f"benchmark failed: the ledger does not verify: {result['failure']}")
    if done.returncode != 0 or not result:
        raise SystemExit(f"benchmark failed: the verification process exited with {done.returncode}")
    return VerifyRun(**result), "\n".join(lines[:-1])


# ------------------------------------------------------------------ Merkle appends


@dataclass
class Appends:
    leaves: int
    compact_seconds: float
    integrate_leaves: int
    integrate_seconds: float
    copy_seconds: float


def merkle_appends(db: Path, url: str, folder: Path, latest: tuple[int, bytes]) -> Appends:
    """CompactRange.append over the stored leaf hashes, in memory; then MerkleLog.integrate()
    into empty log tables of a copy of the ledger (the 'rebuild from the records' path).
    Both trees must end at the latest checkpoint's root."""
    with ledger(url) as app:
        store = LogStore(app.recorder)
        size = store.size()
        stored = store.node_range(0, 0, size - 1)
    leaves = [stored[i] for i in range(size)]
    del stored
    tree = merkle.CompactRange()
    append = tree.append
    started = time.perf_counter()
    for leaf in leaves:
        append(leaf)
    compact = time.perf_counter() - started
    if (size, tree.root()) != latest:
        raise SystemExit("benchmark failed: the stored leaves do not give the latest checkpoint's root")
    del leaves, tree
    gc.collect()

    copy = folder / "integrate-copy.sqlite"
    started = time.perf_counter()
    with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
        target.executescript("".join(f"DELETE FROM {t};" for t in TABLES))
    copied = time.perf_counter() - started
    try:
        with ledger(f"sqlite:///{copy}") as app:
            log = MerkleLog(app)
            started = time.perf_counter()
            integrated = log.integrate()
            seconds = time.perf_counter() - started
            if (integrated, log.root(integrated)) != latest:
                raise SystemExit("benchmark failed: the rebuilt tree's root is not the latest checkpoint's")
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return Appends(size, compact, integrated, seconds, copied)


# ------------------------------------------------------------------ proofs


@dataclass
class Proofs:
    size: int
    inclusion_ms: list[float]
    inclusion_lengths: list[int]
    consistency_ms: list[float]
    consistency_lengths: list[int]
    checked: int  # consistency proofs verified (the inclusion proofs are all verified)


def proofs(url: str, samples: int, rng: random.Random) -> Proofs:
    with ledger(url) as app:
        log = MerkleLog(app)
        store = log.store
        latest = store.latest_checkpoint()
        assert latest is not None
        size = latest.size
        last_sequence = store.last_sequence()
        # Inclusion: MerkleLog.inclusion, the API behind `coi prove`: leaf lookup, latest
        # checkpoint, leaf hash and path nodes from the store, base64.
        inclusion_ms, inclusion_lengths = [], []
        for sequence in (rng.randint(1, last_sequence) for _ in range(samples)):
            t = time.perf_counter()
            proof = log.inclusion(sequence)
            inclusion_ms.append((time.perf_counter() - t) * 1000)
            path = [_unb64(h) for h in proof["inclusion_path"]]
            inclusion_lengths.append(len(path))
            if not merkle.verify_inclusion(
                proof["leaf_index"], size, _unb64(proof["leaf_hash"]), path, latest.root
            ):
                raise SystemExit(
                    f"benchmark failed: the inclusion proof of sequence {sequence} does not verify"
                )
        # Consistency: random old < new sizes up to the full tree, from the stored nodes.
        consistency_ms, consistency_lengths = [], []
        checked = 0
        for i in range(samples):
            old, new = sorted(rng.sample(range(1, size + 1), 2))
            t = time.perf_counter()
            path = merkle.consistency_proof(old, new, store.nodes)
            consistency_ms.append((time.perf_counter() - t) * 1000)
            consistency_lengths.append(len(path))
            if i < 20:  # verify a few against roots computed from the store (untimed)
                roots = log.root(old), log.root(new)
                if not merkle.verify_consistency(old, new, *roots, path):
                    raise SystemExit(f"benchmark failed: consistency proof {old} -> {new} does not verify")
                checked += 1
        # And between the signed checkpoints, against their signed roots.
        stored = list(store.checkpoints())
        for first, second in itertools.pairwise(stored):
            path = merkle.consistency_proof(first.size, second.size, store.nodes)
            if not merkle.verify_consistency(first.size, second.size, first.root, second.root, path):
                raise SystemExit(f"benchmark failed: checkpoints {first.size} -> {second.size} inconsistent")
            checked += 1
    return Proofs(size, inclusion_ms, inclusion_lengths, consistency_ms, consistency_lengths, checked)


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


# ------------------------------------------------------------------ report


@dataclass
class Results:
    signatures: Signatures
    verifies: list[VerifyRun] = field(default_factory=list)  # without the rules replayed
    replays: list[VerifyRun] = field(default_factory=list)  # with them (coi verify's default)
    ceilings: list[float] = field(default_factory=list)  # verifies/s, all cores
    unsigned: VerifyRun | None = None  # the same verification, signatures not checked

    @property
    def verify_rate(self) -> float:
        return statistics.median(r.records / r.seconds for r in self.verifies)

    @property
    def replay_rate(self) -> float:
        return statistics.median(r.records / r.seconds for r in self.replays)

    @property
    def ceiling(self) -> float:
        return statistics.median(self.ceilings) / self.signatures.average

    def shares(self, runs: list[VerifyRun], first: int) -> list[float]:
        """Each run against the mean of the ceilings measured right before and after it (the
        runs alternate, replayed first; ceilings[0] precedes the first)."""
        out = []
        for i, r in enumerate(runs):
            around = self.ceilings[2 * i + first : 2 * i + first + 2]
            out.append(r.records / r.seconds / (statistics.mean(around) / self.signatures.average))
        return out

    @property
    def share(self) -> float:
        return statistics.median(self.shares(self.verifies, 1))

    @property
    def replay_share(self) -> float:
        return statistics.median(self.shares(self.replays, 0))

    @property
    def peak_rss(self) -> float:
        """The verifying process and its workers together (upper bound), with the replay."""
        return max(r.peak_rss_mib + r.workers * r.worker_peak_mib for r in self.replays)


def row(label: str, value: str, text: str) -> None:
    print(f"  {label:<28} {value:<28} {text}".rstrip("; "))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_build(b: Build, reused: Path | None) -> None:
    where = f"built {b.date} and kept in {reused}; not rebuilt" if reused else "built in this run"
    print(f"\n== build ({where})")
    row("build", f"{rate(b.records / b.seconds)} records/s",
        f"{b.records:,} records ({b.patients:,} patients + the cast) in {b.seconds:,.0f} s: "
        "sign (worker process) + submit + integrate + checkpoints; info")  # fmt: skip
    row("  submit_many", f"{rate(b.records / b.submit_seconds)} records/s",
        f"batches of {BUILD_BATCH}, {b.submit_seconds:,.0f} s")  # fmt: skip
    row("  integrate", f"{rate(b.records / b.integrate_seconds)} leaves/s",
        f"MerkleLog.integrate() before each checkpoint, {b.integrate_seconds:,.1f} s")  # fmt: skip
    sizes = ", ".join(f"{c:,}" for c in b.checkpoints)
    row("  checkpoints", f"{len(b.checkpoints):>10}", f"signed at tree sizes {sizes}")


def print_verify(r: Results) -> None:
    s = r.signatures
    runs = r.verifies
    seconds = statistics.median(v.seconds for v in runs)
    first = runs[0]
    replayed = r.replays[0]
    print("\n== full verification")
    row("LedgerVerifier.run()", f"{rate(r.replay_rate)} records/s",
        f"rules replayed (coi verify's default): {replayed.records:,} records, "
        f"{statistics.median(v.seconds for v in r.replays):.1f} s; "
        + spread([v.records / v.seconds for v in r.replays]))  # fmt: skip
    row("  peak RSS", f"{r.peak_rss:>10,.0f} MiB",
        f"{verdict(r.peak_rss < TARGET_RSS_MIB)}: target < 1 GiB; VmHWM of the verifying process, "
        f"imports included, {replayed.peak_rss_mib:,.0f} MiB ({replayed.start_rss_mib:,.0f} MiB before "
        f"run()), + {replayed.workers} workers (signatures, then the replay's) at "
        f"{replayed.worker_peak_mib:,.0f} MiB each at most (forked: partly shared with it)")  # fmt: skip
    row("LedgerVerifier.run() --no-replay", f"{rate(r.verify_rate)} records/s",
        f"{first.records:,} records, {first.leaves:,} leaves, {first.checkpoints} checkpoints, "
        f"{first.streams:,} streams in {seconds:.1f} s; "
        + spread([v.records / v.seconds for v in runs]))  # fmt: skip
    row("Ed25519 verify, all cores", f"{rate(statistics.median(r.ceilings))} verifies/s",
        f"one forked process per core over {len(s.jobs):,} of the ledger's signatures, "
        f"{s.avg_body_bytes:.0f} B bodies, before and after each run; "
        + spread(r.ceilings))  # fmt: skip
    row("  signatures/envelope", f"{s.average:>10.3f}", f"over all {s.records:,} records")
    row("  envelope verify ceiling", f"{rate(r.ceiling)} records/s", "verifies/s / signatures")
    row("with replay / ceiling", f"{r.replay_share * 100:>10.1f} %",
        f"{verdict(r.replay_share >= TARGET_REPLAY_SHARE)}: target >= {TARGET_REPLAY_SHARE:.0%}; each run "
        "against the ceilings right before and after it: "
        + " / ".join(f"{x:.1%}" for x in r.shares(r.replays, 0)))  # fmt: skip
    row("without replay / ceiling", f"{r.share * 100:>10.1f} %",
        f"{verdict(r.share >= TARGET_SHARE)}: target >= {TARGET_SHARE:.0%}; "
        + " / ".join(f"{x:.1%}" for x in r.shares(r.verifies, 1)))  # fmt: skip
    if r.unsigned is not None:
        other = r.unsigned.seconds / r.unsigned.records * 1e6
        signing = 1e6 / r.ceiling
        cores = len(os.sched_getaffinity(0))
        row("  without signature checks", f"{rate(r.unsigned.records / r.unsigned.seconds)} records/s",
            f"diagnostic run without replay, BackgroundVerifier.submit stubbed out: {other:.1f} "
            "us/record of other work (one process)")  # fmt: skip
        row("  overlap model", f"{rate(1e6 / (other / cores + signing))} records/s",
            f"{other:.1f} / {cores} cores + {signing:.1f} us/record of signatures on all cores: the other "
            "work shares the cores with the signatures; nothing idles, no hand-over cost")  # fmt: skip


def print_appends(a: Appends) -> None:
    print("\n== Merkle appends")
    row("CompactRange.append", f"{rate(a.leaves / a.compact_seconds)} leaves/s",
        f"{a.leaves:,} stored leaf hashes, in memory, {a.compact_seconds:.2f} s")  # fmt: skip
    row("MerkleLog.integrate()", f"{rate(a.integrate_leaves / a.integrate_seconds)} leaves/s",
        f"{a.integrate_leaves:,} records into empty log tables of a copy, {a.integrate_seconds:.1f} s "
        f"(read + leaf hash + append + store); copy {a.copy_seconds:.0f} s, untimed")  # fmt: skip


def print_proofs(p: Proofs) -> None:
    print(f"\n== proofs at tree size {p.size:,}")
    bound = 32 * math.ceil(math.log2(p.size))
    inc, con = p.inclusion_ms, p.consistency_ms
    row("inclusion (MerkleLog)", f"p50 {statistics.median(inc):.2f} ms, p99 {percentile(inc, 0.99):.2f} ms",
        f"{verdict(percentile(inc, 0.99) < TARGET_INCLUSION_P99_MS)}: target p99 < 5 ms; "
        f"{len(inc):,} random sequences, all verified")  # fmt: skip
    row("  proof size", _sizes(p.inclusion_lengths), f"32 x ceil(log2 n) = {bound} B")
    row("consistency", f"p50 {statistics.median(con):.2f} ms, p99 {percentile(con, 0.99):.2f} ms",
        f"merkle.consistency_proof over LogStore.nodes, {len(con):,} random pairs; "
        f"{p.checked} verified (20 random + adjacent checkpoints)")  # fmt: skip
    row("  proof size", _sizes(p.consistency_lengths), f"32 x ceil(log2 n) = {bound} B")


def _sizes(lengths: list[int]) -> str:
    return f"{32 * statistics.median(lengths):.0f} B median, max {32 * max(lengths)} B"


# ------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the ledger (1000000)")
    parser.add_argument("--db", type=Path, help="SQLite file to keep the ledger in and reuse (default: temp)")
    parser.add_argument("--repeat", type=int, default=1, help="verification runs; medians reported (1)")
    parser.add_argument("--checkpoint-every", type=int, default=100_000, help="records (100000)")
    parser.add_argument("--proofs", type=int, default=2000, help="inclusion and consistency samples (2000)")
    parser.add_argument("--seed", type=int, default=1, help="for the random proof samples")
    parser.add_argument("--profile", action="store_true", help="also cProfile one extra verification")
    parser.add_argument("--child-verify", help=argparse.SUPPRESS)
    parser.add_argument("--child-profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-skip-signatures", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-no-replay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trusted", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_verify is None and min(args.records, args.repeat, args.checkpoint_every, args.proofs) < 1:
        parser.error("--records, --repeat, --checkpoint-every and --proofs must be positive")
    if args.child_verify is None and args.records < 1000:
        parser.error("--records must be at least 1000")
    return args


def prepare(db: Path, records: int, checkpoint_every: int) -> tuple[NoteSigner, Build, bool]:
    """The ledger at `db`, built unless a kept one has enough records; its key and build figures."""
    url = f"sqlite:///{db}"
    side = sidecar_path(db)
    if db.exists():
        found = record_count(url)
        if found >= records and side.exists():
            kept = msgspec.json.decode(side.read_bytes(), type=Sidecar)
            return NoteSigner.decode(kept.signer), Build(**kept.build), True  # type: ignore[arg-type]
        why = f"only {found:,} records" if found < records else f"no {side.name} (its ledger key)"
        raise SystemExit(f"{db} exists with {why}: remove it, or pass another --db")
    signer = NoteSigner("bench.verify", Ed25519PrivateKey.generate())
    note(f"building {records:,} records in {db} ...")
    b = build(url, records, signer, checkpoint_every)
    side.write_bytes(msgspec.json.encode(Sidecar(signer.encode(), asdict(b))))
    return signer, b, False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child_verify is not None:
        return child_verify(
            args.child_verify,
            args.trusted,
            args.child_profile,
            args.child_skip_signatures,
            replay=not args.child_no_replay,
        )
    print_header()

    with tempfile.TemporaryDirectory(prefix="coi-bench-verify-") as tmp:
        folder = Path(tmp)
        db = args.db.resolve() if args.db else folder / "ledger.sqlite"
        url = f"sqlite:///{db}"
        print(f"ledger:   SQLite file {db}" + ("" if args.db else " (temp, deleted at the end)"))
        signer, b, reused = prepare(db, args.records, args.checkpoint_every)
        print_build(b, db if reused else None)

        note("reading the ledger's signatures ...")
        sigs = ledger_signatures(url)
        print(
            f"\nworkload: {sigs.records:,} records, {sigs.average:.3f} signatures/envelope, "
            f"{sigs.avg_body_bytes:.0f} B bodies; read in {sigs.seconds:.1f} s (not timed)"
        )
        results = Results(sigs)
        # The ceiling is measured right before and right after each verification, and each run
        # is held against the two around it: load from elsewhere on a shared machine shows up
        # in both.
        results.ceilings.append(ceiling_rate(sigs.jobs))
        for i in range(args.repeat):
            note(f"verifying the whole ledger in a fresh process, rules replayed ({i + 1}/{args.repeat}) ...")
            results.replays.append(run_verify(url, signer.verifier)[0])
            results.ceilings.append(ceiling_rate(sigs.jobs))
            note(f"verifying the whole ledger in a fresh process, --no-replay ({i + 1}/{args.repeat}) ...")
            results.verifies.append(run_verify(url, signer.verifier, "--child-no-replay")[0])
            results.ceilings.append(ceiling_rate(sigs.jobs))
        note("verifying once more without checking signatures or replaying (diagnostic) ...")
        results.unsigned = run_verify(url, signer.verifier, "--child-skip-signatures", "--child-no-replay")[0]
        print_verify(results)
        latest = (results.verifies[0].leaves, _latest_root(url))
        del sigs.jobs[:]

        note("Merkle appends ...")
        print_appends(merkle_appends(db, url, folder, latest))
        note("proofs ...")
        print_proofs(proofs(url, args.proofs, random.Random(args.seed)))
        if args.profile:
            note("profiling one more verification ...")
            run, text = run_verify(url, signer.verifier, "--child-profile")
            print(
                f"\n== profiled verification (not counted above): {run.records / run.seconds:,.0f} records/s"
            )
            print(text)
    return 0


def _latest_root(url: str) -> bytes:
    with ledger(url) as app:
        latest = LogStore(app.recorder).latest_checkpoint()
    assert latest is not None
    return latest.root


if __name__ == "__main__":
    sys.exit(main())
