"""Real processes around a real Kafka-protocol broker, for the pipeline tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ledger.wire.kafka_topics import Topics


class Stack:
    """One ledger (SQLite file), its projection store, and its services as child processes."""

    def __init__(self, root: Path, bootstrap: str, prefix: str) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.topics = Topics(prefix)
        self.ledger_url = f"sqlite:///{root / 'coi-data' / 'ledger.sqlite'}"
        self.projections_url = f"sqlite:///{root / 'coi-data' / 'projections.sqlite'}"
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COI_DATA_DIR": str(self.root / "coi-data"),
            "COI_DATABASE_URL": self.ledger_url,
            "COI_PROJECTIONS_URL": self.projections_url,
            "COI_KAFKA_BOOTSTRAP": self.bootstrap,
            "COI_TOPIC_PREFIX": self.topics.prefix,
            "COI_CHECKPOINT_SECONDS": "2",
        }

    def start(self, service: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{service}.log", "ab")  # noqa: SIM115 - lives with the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "run", service],
            env={**self.env, **env},
            stdout=log,
            stderr=log,
        )
        self.procs.setdefault(service, []).append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.root.glob("*.log"))


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (new) parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], seconds: float, what: str, stack: Stack | None = None, every: float = 0.2
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(
        f"timed out after {seconds:.0f} s waiting for {what}\n{stack.logs() if stack else ''}"
    )
