"""The Kafka pipeline end to end: site events -> ingest -> relay -> projector.

Run: python benchmarks/pipeline.py [--events N] [--rate R] [--steady-events M]

On a Kafka-protocol broker (COI_KAFKA_BOOTSTRAP, else the local Tansu broker), with the three
services as real processes on a fresh SQLite ledger and projection store, it prints:

  * ingest alone: N pre-signed events (default 100,000) queued on coi.site-events before
    the ingest starts (two processes in its consumer group, as `coi up` runs it; --ingests),
    with the relay and projector not yet running; its sustained rate (decode, verify, rules,
    save), over the middle 80% of the backlog;
  * relay + projector: started then, the time until the projector has applied every record
    the relay published for that backlog;
  * all together: N more events produced as fast as the producer goes while all three run
    on the same cores as the broker and this process: the time until the ledger has stored
    them all and until the projector has applied them; CPU per event of each process;
  * latency at a steady rate (default 1,000 events/s for 20,000 events): publish -> the
    projector's stored position passing the record's coi.ledger message, p50 and p99 (the
    projector stores its position in the same transaction as the rows; positions are polled
    every 20 ms, which bounds the error);
  * peak memory (VmHWM) of each service process;
  * same-run ceilings: raw kafka-python consume rate on the same broker, Ed25519 verifies/s
    on one core and on all cores.

Targets (printed PASS/MISS, never asserted): ingest >= 5,000 verified events/s sustained,
judged on the ingest alone; p99 publish-to-projection < 1 s at 1,000 events/s. "All
together" is information: the ingest then shares the two cores with the relay, the
projector, the broker and the producer, and the line says how many cores 5,000 events/s
would keep busy at the CPU per event measured.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from kafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ParallelVerifier, machine_info, percentile, rate
from consumers.broker import bootstrap_servers, ensure_topics
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast, Journey
from ledger.site import kafka
from ledger.wire.dsse import PAYLOAD_TYPE, open_envelope, pae
from ledger.wire.kafka_topics import Topics

TARGET_INGEST = 5000.0
TARGET_P99_S = 1.0


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Work = list[tuple[bytes, bytes, str]]  # (key, envelope, event_id)


def register_cast(root: Path, cast: Cast, registered_at: datetime) -> None:
    """A fresh SQLite ledger under root/coi-data with the cast registered. The ledger's clock
    is injected: it receives the cast when the cast says it registered (weeks back), so no
    key claims validity from before its receipt."""
    os.environ["COI_DATA_DIR"] = str(root / "coi-data")
    app = LedgerApplication(f"sqlite:///{root / 'coi-data' / 'ledger.sqlite'}")
    outcomes = list(app.submit_many(cast.registrations(registered_at), now=registered_at))
    app.close()
    if any(o.status != "accepted" for o in outcomes):
        raise SystemExit(f"benchmark failed: registering the cast: {outcomes}")


def build_workload(cast: Cast, events: int, start: datetime) -> Work:
    """Accepted steps of interleaved happy journeys (33 per patient), cut to `events`."""
    patients = -(-events // 33)
    queues = []
    for i in range(patients):
        journey = Journey(cast, i, start + timedelta(minutes=i % 5000), "happy")
        queues.append(
            [(journey.coi.encode(), s.envelope, str(s.event_id)) for s in journey.steps() if s.expect is None]
        )
    mixed = [item for round_ in itertools.zip_longest(*queues) for item in round_ if item is not None]
    return mixed[:events]


class Services:
    def __init__(self, root: Path, bootstrap: str, topics: Topics) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "COI_DATA_DIR": str(root / "coi-data"),
            "COI_DATABASE_URL": f"sqlite:///{root / 'coi-data' / 'ledger.sqlite'}",
            "COI_PROJECTIONS_URL": f"sqlite:///{root / 'coi-data' / 'projections.sqlite'}",
            "COI_KAFKA_BOOTSTRAP": bootstrap,
            "COI_TOPIC_PREFIX": topics.prefix,
        }
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, *names: str) -> None:
        for name in names:
            log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives with the child
            proc = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", "run", name], env=self.env, stdout=log, stderr=log
            )
            self.procs.append((name, proc))

    def peak_mib(self) -> dict[str, float]:
        """The largest peak among each service's processes (their workers not counted)."""
        peaks: dict[str, float] = {}
        for name, proc in self.procs:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[name] = max(peaks.get(name, 0.0), int(line.split()[1]) / 1024)
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU of each service with its worker processes, of the broker when it
        is our child (the local Tansu), and of this process (the producer and the watchers)."""
        owner = {proc.pid: name for name, proc in self.procs}
        cpu = {name: 0.0 for name, _ in self.procs}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                text = stat.read_text()
                pid, parent = int(stat.parent.name), int(text.rsplit(")", 1)[1].split()[1])
                name = owner.get(pid) or owner.get(parent)
                if name is None and parent == os.getpid() and "tansu" in text:
                    name = "broker"
                if name is not None:
                    cpu[name] = cpu.get(name, 0.0) + _cpu_of(pid)
        cpu["bench"] = _cpu_of(os.getpid())
        return cpu

    def stop(self) -> None:
        for _, proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return 0


def projected(db: Path) -> dict[int, int]:
    """partition -> the projector's next offset in coi.ledger."""
    with sqlite3.connect(db) as conn:
        try:
            return dict(conn.execute("SELECT partition, next_offset FROM proj_projector_tracking").fetchall())
        except sqlite3.OperationalError:
            return {}


def sustained(count: Callable[[], int], total: int, cpu: Callable[[], float]) -> tuple[float, float]:
    """Events/s while `count` goes from 10% to 90% of `total` (leaving out the group join
    and the tail), sampled every 20 ms, and the cores `cpu` (CPU seconds) kept busy then."""
    low, high = 0.1 * total, 0.9 * total
    wait_for(lambda: count() >= low, 900, "the ingest's first tenth")
    started, at_start, cpu_start = time.monotonic(), count(), cpu()
    wait_for(lambda: count() >= high, 900, "the ingest's ninth tenth")
    ended, at_end, cpu_end = time.monotonic(), count(), cpu()
    wait_for(lambda: count() >= total, 300, "the ingest to store everything")
    return (at_end - at_start) / (ended - started), (cpu_end - cpu_start) / (ended - started)


def wait_projected(db: Path, watch: LedgerWatch, work: Work) -> float:
    """When the projector passed every event of `work` (once the relay published them all)."""
    last = {event_id for _, _, event_id in work[-200:]}
    wait_for(lambda: last <= watch.landed.keys(), 600, "the relay")
    wait_for(lambda: all(event_id in watch.landed for _, _, event_id in work), 60, "the relay")
    ends: dict[int, int] = {}
    for _, _, event_id in work:
        partition, offset = watch.landed[event_id]
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return wait_for(
        lambda: all(projected(db).get(p, 0) >= end for p, end in ends.items()), 600, "the projector"
    )


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.02)
    raise SystemExit(f"timed out after {seconds:.0f} s waiting for {what}")


class _EventId(msgspec.Struct):
    event_id: str


class LedgerWatch(threading.Thread):
    """Reads coi.ledger: where each event's record landed (partition, offset) and when it
    was seen there."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = kafka.consumer(bootstrap)
        self.topic = topic
        self.landed: dict[str, tuple[int, int]] = {}
        self.seen_at: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        decoder = msgspec.json.Decoder(_EventId)  # the watch's own cost counts as the bench's CPU
        partitions: list[TopicPartition] = []
        while not self.stop.is_set():
            found = [
                TopicPartition(self.topic, p)
                for p in sorted(self.consumer.partitions_for_topic(self.topic) or [])
            ]
            if found != partitions:
                partitions = found
                self.consumer.assign(partitions)
                self.consumer.seek_to_beginning()
            for batch in self.consumer.poll(timeout_ms=200).values():
                for m in batch:
                    event_id = decoder.decode(m.value).event_id
                    self.landed.setdefault(event_id, (m.partition, m.offset))
                    self.seen_at.setdefault(event_id, time.monotonic())
        self.consumer.close()


class ProjectionWatch(threading.Thread):
    """Polls the projector's stored positions; records when each (partition, offset) passed."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.history: list[tuple[float, dict[int, int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.history.append((time.monotonic(), projected(self.db)))
            time.sleep(0.02)

    def passed_at(self, partition: int, offset: int) -> float | None:
        for at, positions in self.history:
            if positions.get(partition, 0) > offset:
                return at
        return None


def consume_ceiling(bootstrap: str, topics: Topics, count: int = 100_000) -> float:
    """Raw kafka-python consume rate of envelope-sized messages on the same broker."""
    topic = f"{topics.prefix}bench.raw"
    ensure_topics(bootstrap, Topics(f"{topics.prefix}bench.raw."))
    producer = kafka.producer(bootstrap)
    for i in range(count):
        producer.send(topic, key=str(i % 64).encode(), value=b"x" * 800)
    producer.flush()
    producer.close()
    c = kafka.consumer(bootstrap, topic, group=f"{topics.prefix}bench-raw", max_poll_records=5000)
    got, started = 0, None
    deadline = time.monotonic() + 120
    while got < count and time.monotonic() < deadline:
        batch = c.poll(timeout_ms=500)
        n = sum(len(v) for v in batch.values())
        if n and started is None:
            started = time.monotonic()
        got += n
    seconds = time.monotonic() - (started or time.monotonic())
    c.close()
    return got / seconds if seconds else float("nan")


def verify_ceilings(work: Work, cast: Cast) -> tuple[float, float]:
    keys = {m.signer.keyid: m for m in cast.members.values()}
    jobs = []
    for _, raw, _ in work[:20_000]:
        opened = open_envelope(raw)
        message = pae(PAYLOAD_TYPE, opened.body)
        for keyid, sig in opened.signatures:
            m = keys[keyid]
            jobs.append((m.key.public_key().public_bytes_raw(), sig, message))
    one, all_cores = ParallelVerifier(1), ParallelVerifier()
    rates = []
    for verifier in (one, all_cores):
        started = time.perf_counter()
        verifier.verify_all(jobs)
        rates.append(len(jobs) / (time.perf_counter() - started))
        verifier.close()
    return rates[0], rates[1]


@dataclass
class Figures:
    events: int
    ingests: int
    ingest_alone: float = 0.0  # events/s, sustained, on a backlog with nothing else running
    ingest_alone_cores: float = 0.0  # cores busy meanwhile (ingest, its workers, broker, bench)
    catch_up_s: float = 0.0  # relay + projector over that backlog
    ingest_s: float = 0.0
    end_to_end_s: float = 0.0
    steady_rate: float = 0.0
    latencies: list[float] = field(default_factory=list)
    to_ledger_topic: list[float] = field(default_factory=list)  # publish -> seen on coi.ledger
    missing_latencies: int = 0
    peaks: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds during the throughput run
    consume_ceiling: float = 0.0
    verify_one: float = 0.0
    verify_all: float = 0.0


def run(events: int, steady_rate: float, steady_events: int, ingests: int) -> Figures:
    figures = Figures(events, ingests)
    with tempfile.TemporaryDirectory(prefix="coi-pipeline-") as tmp, bootstrap_servers() as bootstrap:
        root = Path(tmp)
        topics = Topics(f"bench{os.getpid()}.")
        ensure_topics(bootstrap, topics)
        cast = Cast()
        start = datetime.now(UTC) - timedelta(days=30)
        note(f"building 2 x {events:,} + {steady_events:,} signed events (not timed) ...")
        work = build_workload(cast, 2 * events + steady_events, start)
        backlog, bulk, steady = work[:events], work[events : 2 * events], work[2 * events :]
        register_cast(root, cast, start - timedelta(days=10))
        base = len(cast.members)
        services = Services(root, bootstrap, topics)
        ledger_db = root / "coi-data" / "ledger.sqlite"
        projection_db = root / "coi-data" / "projections.sqlite"
        watch = LedgerWatch(bootstrap, topics.ledger)
        watch.start()
        producer = kafka.producer(bootstrap, linger_ms=20, batch_size=256 * 1024)

        note(f"ingest alone: {len(backlog):,} events queued on coi.site-events before it starts ...")
        for key, raw, _ in backlog:
            producer.send(topics.site_events, key=key, value=raw)
        producer.flush()
        services.start(*["ingest"] * ingests)
        figures.ingest_alone, figures.ingest_alone_cores = sustained(
            lambda: stored(ledger_db) - base, len(backlog), lambda: sum(services.cpu_seconds().values())
        )

        note("relay and projector: catching up on what the ingest stored ...")
        began = time.monotonic()
        services.start("relay", "projector")
        figures.catch_up_s = wait_projected(projection_db, watch, backlog) - began

        note(f"all together: producing {len(bulk):,} events while the three services run ...")
        cpu_before = services.cpu_seconds()
        began = time.monotonic()
        for key, raw, _ in bulk:
            producer.send(topics.site_events, key=key, value=raw)
        producer.flush()
        total = base + len(backlog) + len(bulk)
        done = wait_for(lambda: stored(ledger_db) >= total, 900, "the ingest to store everything")
        figures.ingest_s = done - began
        figures.end_to_end_s = wait_projected(projection_db, watch, bulk) - began
        figures.cpu = {k: v - cpu_before.get(k, 0.0) for k, v in services.cpu_seconds().items()}
        note(f"latency: {len(steady):,} events at {steady_rate:,.0f}/s ...")
        projections = ProjectionWatch(projection_db)
        projections.start()
        sent_at: dict[str, float] = {}
        began = time.monotonic()
        for i, (key, raw, event_id) in enumerate(steady):
            target = began + i / steady_rate
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent_at[event_id] = time.monotonic()
            producer.send(topics.site_events, key=key, value=raw)
            if i % 50 == 0:
                producer.flush()
        producer.flush()
        figures.steady_rate = len(steady) / (time.monotonic() - began)
        wait_for(lambda: all(e in watch.landed for e in sent_at), 120, "the steady events on coi.ledger")
        time.sleep(2)
        projections.stop.set()
        projections.join()
        for event_id, at in sent_at.items():
            passed = projections.passed_at(*watch.landed[event_id])
            if passed is None:
                figures.missing_latencies += 1
            else:
                figures.latencies.append(passed - at)
            figures.to_ledger_topic.append(watch.seen_at[event_id] - at)
        figures.peaks = services.peak_mib()
        watch.stop.set()
        services.stop()
        producer.close()
        note("ceilings ...")
        figures.consume_ceiling = consume_ceiling(bootstrap, topics)
        figures.verify_one, figures.verify_all = verify_ceilings(work, cast)
    return figures


def pass_miss(ingest: float) -> str:
    return f"{'PASS' if ingest >= TARGET_INGEST else 'MISS'}: target >= {TARGET_INGEST:,.0f}/s"


def report(f: Figures, command: str) -> None:
    print(f"command:  {command}")
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine_info():
        print(line)
    ingest = f.events / f.ingest_s
    per_event = sum(f.cpu.values()) / f.events  # CPU seconds, every process on the machine
    p50, p99 = percentile(f.latencies, 0.5), percentile(f.latencies, 0.99)
    rows = [
        (f"ingest alone (x{f.ingests})", f"{rate(f.ingest_alone)} events/s",
         f"a backlog of {f.events:,}, middle 80%, {f.ingest_alone_cores:.2f} cores busy; "
         f"{pass_miss(f.ingest_alone)}"),
        ("relay + projector", f"{rate(f.events / f.catch_up_s)} events/s",
         f"caught up on that backlog in {f.catch_up_s:.1f} s"),
        ("all together: ingest", f"{rate(ingest)} events/s",
         f"{f.events:,} more, produced while all three run: {f.ingest_s:.1f} s; info: "
         f"{TARGET_INGEST:,.0f}/s would keep {per_event * TARGET_INGEST:.1f} cores busy"),
        ("  publish -> projection", f"{rate(f.events / f.end_to_end_s)} events/s",
         f"all {f.events:,} projected after {f.end_to_end_s:.1f} s"),
        (f"latency at {f.steady_rate:,.0f}/s", f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
         f"{len(f.latencies):,} events ({f.missing_latencies} unmeasured); "
         f"{'PASS' if p99 < TARGET_P99_S else 'MISS'}: target p99 < {TARGET_P99_S:.0f} s"),
        ("  of which to coi.ledger",
         f"p50 {percentile(f.to_ledger_topic, 0.5) * 1000:.0f} ms, "
         f"p99 {percentile(f.to_ledger_topic, 0.99) * 1000:.0f} ms", "via ingest and relay"),
        ("peak memory (VmHWM)", ", ".join(f"{k} {v:,.0f} MiB" for k, v in f.peaks.items()), "per service"),
        ("  CPU per event", ", ".join(f"{k} {v / f.events * 1e6:,.0f}" for k, v in f.cpu.items()),
         f"µs; {sum(f.cpu.values()) / f.end_to_end_s:.2f} of {len(os.sched_getaffinity(0))} cores busy"),
        ("ceiling: kafka consume", f"{rate(f.consume_ceiling)} msgs/s", "raw kafka-python, 800 B messages"),
        ("ceiling: Ed25519, 1 core", f"{rate(f.verify_one)} verifies/s", ""),
        ("ceiling: Ed25519, all", f"{rate(f.verify_all)} verifies/s", "ParallelVerifier (threads)"),
    ]  # fmt: skip
    for label, value, text in rows:
        print(f"  {label:<26} {value:<34} {text}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="steady publish rate for the latency run")
    parser.add_argument("--steady-events", type=int, default=20_000)
    parser.add_argument("--ingests", type=int, default=2, help="ingest processes in the consumer group")
    args = parser.parse_args()
    command = " ".join([Path(sys.executable).as_posix(), *sys.argv])
    report(run(args.events, args.rate, args.steady_events, args.ingests), command)


if __name__ == "__main__":
    main()
