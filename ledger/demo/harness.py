"""The services as real child processes around one ledger, for the system tests and the
pipeline benchmarks: start `coi run NAME` on a SQLite ledger and projection store under a
folder, watch what they stored, pause or kill one at a named point, stop them all."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ledger.app import ledgerkey
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from ledger.demo.kit import register_cast
from ledger.store.logstore import LogStore
from ledger.wire.kafka_topics import Topics

# Where a service stops itself (SIGSTOP) so a test can kill it at a known point, not at a
# moment a sleep picks: NAME or NAME:N (the Nth pass). Read by consumers/service.py.
STOP_AT = "COI_STOP_AT"


class Services:
    """One ledger (SQLite under root/coi-data), its projection store, and its services as
    child processes on one broker; `env` adds settings to every service's environment."""

    def __init__(self, root: Path, bootstrap: str, topics: Topics, **env: str) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.topics = topics
        self.ledger_db = root / "coi-data" / "ledger.sqlite"
        self.projections_db = root / "coi-data" / "projections.sqlite"
        self.ledger_url = f"sqlite:///{self.ledger_db}"
        self.projections_url = f"sqlite:///{self.projections_db}"
        self.extra = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COI_DATA_DIR": str(self.root / "coi-data"),
            "COI_DATABASE_URL": self.ledger_url,
            "COI_PROJECTIONS_URL": self.projections_url,
            "COI_KAFKA_BOOTSTRAP": self.bootstrap,
            "COI_TOPIC_PREFIX": self.topics.prefix,
            **self.extra,
        }

    def register(self, cast: Cast, at: datetime) -> int:
        """The cast registered on the ledger, received at `at` (see kit.register_cast)."""
        app = self.create()
        try:
            return register_cast(app, cast, at)
        finally:
            app.close()

    def create(self) -> LedgerApplication:
        """The ledger, made as `coi init` makes one: its own origin, and a key for the relay
        in the signer's folder (COI_SIGNER_DIR, else under COI_CONFIG_DIR)."""
        self.ledger_db.parent.mkdir(parents=True, exist_ok=True)
        app = LedgerApplication(self.ledger_url)
        ledgerkey.create(LogStore(app.recorder))
        return app

    def start(self, name: str, *more: str, stop_at: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        """Start each named service (`coi run NAME`, output to root/NAME.log); returns the last.
        With `stop_at`, each stops itself at that point (see STOP_AT) until killed."""
        if stop_at:
            env[STOP_AT] = stop_at
        for service in (name, *more):
            log = open(self.root / f"{service}.log", "ab")  # noqa: SIM115 - lives with the child
            proc = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", "run", service],
                env={**self.env, **env},
                stdout=log,
                stderr=log,
            )
            self.procs.append((service, proc))
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(30)

    def stop(self) -> None:
        """SIGTERM to every service still running (a paused one is woken to hear it)."""
        running = [proc for _, proc in self.procs if proc.poll() is None]
        for proc in running:
            proc.terminate()
            proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20  # for them all
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.root.glob("*.log"))

    def stored(self) -> int:
        """How many records the ledger holds (0 before its table exists)."""
        with sqlite3.connect(self.ledger_db) as conn:
            try:
                return int(conn.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0] or 0)
            except sqlite3.OperationalError:
                return 0

    def projected(self) -> dict[int, int]:
        """partition -> the projector's next offset in coi.ledger."""
        with sqlite3.connect(self.projections_db) as conn:
            try:
                rows = conn.execute("SELECT partition, next_offset FROM proj_projector_tracking").fetchall()
            except sqlite3.OperationalError:
                return {}
        return dict(rows)

    def peak_mib(self) -> dict[str, float]:
        """The largest peak memory (VmHWM) among each service's processes (not their workers)."""
        peaks: dict[str, float] = {}
        for name, proc in self.procs:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[name] = max(peaks.get(name, 0.0), int(line.split()[1]) / 1024)
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU of each service with its worker processes, of the broker when it
        is our child (the local Tansu), and of this process (under "bench")."""
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


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, parent, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_of(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(_stat_fields(int(stat.parent.name))[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (new) parent to reap it."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def stopped(pid: int) -> bool:
    """Paused by SIGSTOP (as a service does itself at its COI_STOP_AT point)."""
    try:
        return _stat_fields(pid)[0] == "T"
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    seconds: float,
    what: str,
    services: Services | None = None,
    every: float = 0.2,
) -> float:
    """Poll `condition` every `every` seconds until it holds; returns when (time.monotonic()),
    or raises TimeoutError naming `what`, with the services' logs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(
        f"timed out after {seconds:.0f} s waiting for {what}\n{services.logs() if services else ''}"
    )
