"""`coi up` and `coi run`: the ledger's services around a Kafka broker.

`coi up` starts the local Tansu broker when no COI_KAFKA_BOOTSTRAP is set, creates the
topics, and runs ingest, relay and projector as child processes (`coi run NAME`), logging to
this terminal; Ctrl-C stops them cleanly, then the broker. While it runs, the bootstrap
address is in coi-data/pipeline.json, where `coi demo` and `coi publish` find it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from consumers import SERVICES
from consumers.broker import TansuBroker, ensure_topics, local_plaintext
from consumers.ingest import Ingest
from consumers.projector import Projector
from consumers.relay import Relay
from consumers.service import Service, configure_logging, run_forever, stop_on_signals
from ledger.app.application import LedgerApplication
from ledger.app.config import data_dir, projections_url
from ledger.wire.kafka_topics import Topics
from projections.store import ProjectionStore

# A crashed service is restarted after 1, 2, 4, ... seconds (at most MAX_PAUSE_SECONDS);
# after GIVE_UP_AFTER crashes in a row, each within STABLE_SECONDS of its start, `coi up`
# stops: restarting at once, for ever, only filled the terminal with the same traceback.
GIVE_UP_AFTER = 5
STABLE_SECONDS = 60.0
MAX_PAUSE_SECONDS = 30


def runtime_file() -> Path:
    return data_dir() / "pipeline.json"


# Envelopes per ingest transaction: under load a poll brings up to a thousand, and one
# commit (one fsync) per 500 instead of per 50 is measured at +27% on SQLite, +56% on
# PostgreSQL (benchmarks/append.py --batch-size); a quiet poll still commits at once.
INGEST_BATCH = 500


def configured_bootstrap() -> str | None:
    """COI_KAFKA_BOOTSTRAP, else the broker of a `coi up` running on this data folder."""
    configured = os.environ.get("COI_KAFKA_BOOTSTRAP")
    if configured:
        return configured
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads(runtime_file().read_text())
        os.kill(int(state["pid"]), 0)  # still running?
        return str(state["bootstrap"])
    return None


def factory(name: str, bootstrap: str) -> Callable[[], Service]:
    topics = Topics.from_env()

    def make() -> Service:
        ensure_topics(bootstrap, topics)
        if name == "ingest":
            return Ingest(LedgerApplication(batch_size=INGEST_BATCH), bootstrap, topics)
        if name == "relay":
            return Relay(LedgerApplication(), bootstrap, topics)
        return Projector(ProjectionStore(projections_url()), LedgerApplication(), bootstrap, topics)

    return make


def run_one(name: str) -> int:
    """`coi run NAME`: one service in the foreground until SIGINT/SIGTERM."""
    configure_logging()
    bootstrap = configured_bootstrap()
    if bootstrap is None:
        print("coi: set COI_KAFKA_BOOTSTRAP to the Kafka cluster (or start `coi up`)", file=sys.stderr)
        return 2
    return run_forever(name, factory(name, bootstrap), stop_on_signals())


def up(ingests: int = 2) -> int:
    """`coi up`: broker (if needed) + the three services, until Ctrl-C. The ingest runs as
    `ingests` processes sharing the partitions: one process waits on its commits and its
    signature checks for a fifth of its time, which a second one fills (benchmarks/pipeline.py
    --ingests)."""
    configure_logging()
    stop = stop_on_signals()
    broker = None
    bootstrap = os.environ.get("COI_KAFKA_BOOTSTRAP")
    data_dir().mkdir(parents=True, exist_ok=True)  # for pipeline.json, with a cluster too
    if not bootstrap:
        local_plaintext()
        broker = TansuBroker(log=data_dir() / "broker.log").start()
        bootstrap = broker.bootstrap
        print(
            f"coi up: local Tansu broker on {bootstrap} (in memory; log in {data_dir() / 'broker.log'})",
            file=sys.stderr,
        )
    ensure_topics(bootstrap, Topics.from_env())
    runtime_file().write_text(json.dumps({"bootstrap": bootstrap, "pid": os.getpid()}))
    env = {**os.environ, "COI_KAFKA_BOOTSTRAP": bootstrap}

    def start(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "ledger.cli", "run", name], env=env)

    names = ["ingest"] * ingests + [s for s in SERVICES if s != "ingest"]
    children: list[subprocess.Popen[bytes] | None] = [start(name) for name in names]
    started = [time.monotonic()] * len(names)
    crashes = [0] * len(names)  # in a row: a run longer than STABLE_SECONDS starts the count again
    print(
        f"coi up: {ingests} ingest process(es) in one consumer group, relay and projector running "
        f"against {bootstrap}. In another terminal: coi demo, coi publish FILE, coi checkpoint. "
        "Ctrl-C stops everything.",
        file=sys.stderr,
    )
    try:
        while not stop.wait(1):
            now = time.monotonic()
            for i, (name, child) in enumerate(zip(names, children, strict=True)):
                if child is None:  # waiting out its pause
                    if now >= started[i]:
                        children[i], started[i] = start(name), now
                    continue
                if child.poll() is None:
                    continue
                crashes[i] = 1 if now - started[i] > STABLE_SECONDS else crashes[i] + 1
                if crashes[i] >= GIVE_UP_AFTER:
                    print(
                        f"coi up: {name} crashed {crashes[i]} times in a row; giving up and stopping "
                        f"everything (its last exit code: {child.returncode}; its log is above)",
                        file=sys.stderr,
                    )
                    return 1
                pause = min(2 ** (crashes[i] - 1), MAX_PAUSE_SECONDS)
                print(
                    f"coi up: {name} exited with {child.returncode}; restarting it in {pause} s",
                    file=sys.stderr,
                )
                children[i], started[i] = None, now + pause
    finally:
        running = [child for child in children if child is not None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in running:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
        with contextlib.suppress(OSError):
            runtime_file().unlink()
        if broker is not None:
            broker.stop()
        print("coi up: stopped", file=sys.stderr)
    return 0


def broker_foreground(port: int) -> int:
    """`coi broker`: the local Tansu broker until Ctrl-C."""
    local_plaintext()
    stop = stop_on_signals()
    broker = TansuBroker(port=port).start()
    ensure_topics(broker.bootstrap, Topics.from_env())
    print(
        f"Tansu broker on {broker.bootstrap}; export COI_KAFKA_BOOTSTRAP={broker.bootstrap}", file=sys.stderr
    )
    try:
        while not stop.wait(1) and broker.process is not None and broker.process.poll() is None:
            pass
    finally:
        broker.stop()
    return 0
