"""Helpers shared by the benchmarks: machine description, figures, peak memory."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import shlex
import sqlite3
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

from eventsourcing.application import Application

from ledger.audit.signatures import Job, verify_slice


class ParallelVerifier:
    """The all-core Ed25519 ceiling: `cryptography` releases the GIL while it verifies, so
    plain threads use every core when nothing else runs; the calling thread verifies a
    share itself instead of waiting."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or len(os.sched_getaffinity(0)))
        self._pool: ThreadPoolExecutor | None = None

    def verify_all(self, jobs: list[Job]) -> list[bool]:
        """One verdict per job, in order."""
        if self.workers == 1 or len(jobs) < 2 * self.workers:
            return verify_slice(jobs)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="coi-verify")
        size = -(-len(jobs) // self.workers)
        slices = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        futures = [self._pool.submit(verify_slice, s) for s in slices[1:]]
        verdicts = verify_slice(slices[0])
        for future in futures:
            verdicts.extend(future.result())
        return verdicts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def print_header() -> None:
    """The command, the date and the machine, first in every benchmark's printout; lines go out
    one by one, so progress and a failure come out in order when piped."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(f"command:  {shlex.join([sys.executable, *sys.argv])}")
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(*machine_info(), sep="\n")


def machine_info() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libs = ", ".join(f"{p} {version(p)}" for p in ("eventsourcing", "cryptography", "msgspec", "psycopg"))
    return [
        f"machine:  {usable} usable cores (nproc), {model}, {platform.system()} {platform.release()}",
        f"python:   {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"libs:     {libs}; SQLite {sqlite3.sqlite_version}",
    ]


def reset_peak_rss() -> str:
    """Reset the kernel's high-water mark so the peak belongs to this run alone (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "process peak since start"
    return "peak during this run"


def rate(value: float) -> str:
    return f"{value:>10,.0f}"


def spread(values: list[float]) -> str:
    return "runs " + " / ".join(f"{v:,.0f}" for v in values) if len(values) > 1 else ""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


App = TypeVar("App", bound=Application)


@contextmanager
def opened(factory: Callable[[], App]) -> Iterator[App]:
    """An application closed and collected afterwards, so one run's store cannot weigh on the next."""
    app = factory()
    try:
        yield app
    finally:
        app.close()
        del app
        gc.collect()
