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
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from kafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ParallelVerifier, machine_info, percentile, rate
from consumers.broker import bootstrap_servers, ensure_topics
from ledger.demo.harness import Services, wait_until
from ledger.demo.journeys import Cast, Journey
from ledger.demo.kit import recent_cohort, workload
from ledger.site import kafka
from ledger.wire.dsse import PAYLOAD_TYPE, open_envelope, pae
from ledger.wire.kafka_topics import Topics

TARGET_INGEST = 5000.0
TARGET_P99_S = 1.0
POLL = 0.02  # seconds between looks at the stores: bounds the error of every timing


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Work = list[tuple[bytes, bytes, str]]  # (key, envelope, event_id)


def build_workload(journeys: Iterable[Journey], events: int) -> Work:
    """Accepted steps of interleaved happy journeys (33 per patient), cut to `events`."""
    steps = workload(journeys, events)
    return [(journey.coi.encode(), step.envelope, str(step.event_id)) for journey, step in steps]


def sustained(count: Callable[[], int], total: int, cpu: Callable[[], float]) -> tuple[float, float]:
    """Events/s while `count` goes from 10% to 90% of `total` (leaving out the group join
    and the tail), sampled every 20 ms, and the cores `cpu` (CPU seconds) kept busy then."""
    low, high = 0.1 * total, 0.9 * total
    wait_until(lambda: count() >= low, 900, "the ingest's first tenth", every=POLL)
    started, at_start, cpu_start = time.monotonic(), count(), cpu()
    wait_until(lambda: count() >= high, 900, "the ingest's ninth tenth", every=POLL)
    ended, at_end, cpu_end = time.monotonic(), count(), cpu()
    wait_until(lambda: count() >= total, 300, "the ingest to store everything", every=POLL)
    return (at_end - at_start) / (ended - started), (cpu_end - cpu_start) / (ended - started)


def wait_projected(services: Services, watch: LedgerWatch, work: Work) -> float:
    """When the projector passed every event of `work` (once the relay published them all)."""
    last = {event_id for _, _, event_id in work[-200:]}
    wait_until(lambda: last <= watch.landed.keys(), 600, "the relay", every=POLL)
    wait_until(lambda: all(event_id in watch.landed for _, _, event_id in work), 60, "the relay", every=POLL)
    ends: dict[int, int] = {}
    for _, _, event_id in work:
        partition, offset = watch.landed[event_id]
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return wait_until(
        lambda: all(services.projected().get(p, 0) >= end for p, end in ends.items()),
        600,
        "the projector",
        every=POLL,
    )


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

    def __init__(self, services: Services) -> None:
        super().__init__(daemon=True)
        self.services = services
        self.history: list[tuple[float, dict[int, int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.history.append((time.monotonic(), self.services.projected()))
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
        total = 2 * events + steady_events
        registered_at, journeys = recent_cohort(cast, total, datetime.now(UTC))
        note(f"building 2 x {events:,} + {steady_events:,} signed events (not timed) ...")
        work = build_workload(journeys, total)
        backlog, bulk, steady = work[:events], work[events : 2 * events], work[2 * events :]
        services = Services(root, bootstrap, topics)
        base = services.register(cast, registered_at)
        watch = LedgerWatch(bootstrap, topics.ledger)
        watch.start()
        producer = kafka.producer(bootstrap, linger_ms=20, batch_size=256 * 1024)

        note(f"ingest alone: {len(backlog):,} events queued on coi.site-events before it starts ...")
        for key, raw, _ in backlog:
            producer.send(topics.site_events, key=key, value=raw)
        producer.flush()
        services.start(*["ingest"] * ingests)
        figures.ingest_alone, figures.ingest_alone_cores = sustained(
            lambda: services.stored() - base, len(backlog), lambda: sum(services.cpu_seconds().values())
        )

        note("relay and projector: catching up on what the ingest stored ...")
        began = time.monotonic()
        services.start("relay", "projector")
        figures.catch_up_s = wait_projected(services, watch, backlog) - began

        note(f"all together: producing {len(bulk):,} events while the three services run ...")
        cpu_before = services.cpu_seconds()
        began = time.monotonic()
        for key, raw, _ in bulk:
            producer.send(topics.site_events, key=key, value=raw)
        producer.flush()
        total = base + len(backlog) + len(bulk)
        done = wait_until(
            lambda: services.stored() >= total, 900, "the ingest to store everything", every=POLL
        )
        figures.ingest_s = done - began
        figures.end_to_end_s = wait_projected(services, watch, bulk) - began
        figures.cpu = {k: v - cpu_before.get(k, 0.0) for k, v in services.cpu_seconds().items()}
        note(f"latency: {len(steady):,} events at {steady_rate:,.0f}/s ...")
        projections = ProjectionWatch(services)
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
        wait_until(
            lambda: all(e in watch.landed for e in sent_at),
            120,
            "the steady events on coi.ledger",
            every=POLL,
        )
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
