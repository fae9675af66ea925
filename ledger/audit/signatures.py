"""Ed25519 verification on every core, in worker processes, while the caller goes on with
Python work: a verifying thread beside a thread busy in Python waits for the GIL after
every call (measured: about 1,400 verifies/s instead of 16,000); a process does not.

`AheadVerifier` gives every verdict of a batch when asked (the ledger decides and stores
one batch while the next one's signatures are checked); `BackgroundVerifier` reports the
first invalid signature of a stream of batches (coi verify).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

from ledger.wire.dsse import verify

# (raw public key, signature, signed message)
Job = tuple[bytes, bytes, bytes]
# (tag, raw public key, signature, signed message): the tag names the job in verdicts
TaggedJob = tuple[int, bytes, bytes, bytes]

# Jobs per task sent to a worker process: large enough that the task overhead (pickling,
# a round trip through the executor's threads) is small, small enough to spread a batch.
TASK_JOBS = 1000


def verify_slice(jobs: list[Job]) -> list[bool]:
    return [verify(public, sig, message) for public, sig, message in jobs]


def _first_invalid(jobs: list[TaggedJob]) -> int | None:
    """The tag of the first job whose signature does not verify (in a worker process)."""
    for tag, public, sig, message in jobs:
        if not verify(public, sig, message):
            return tag
    return None


def _fork_pool(workers: int) -> ProcessPoolExecutor:
    # fork: the workers start at once, with everything imported, and import nothing of the
    # caller's main module again (forkserver and spawn run it in each worker). A forked
    # worker only verifies signatures: it never touches the database, the Kafka clients or
    # their threads, which it does not have (fork copies only the calling thread).
    context = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),))


def _exit_with(parent: int) -> None:
    """A worker outlives a parent killed with SIGKILL (it holds its own copy of the task
    pipe, so it never reads end-of-file): it watches for the parent and exits with it. It
    also drops the signal handlers the fork copied (a service's stop-on-SIGTERM would make
    it ignore SIGTERM) and leaves Ctrl-C to the parent, which shuts the pool down."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="coi-exit-with-parent").start()


class AheadVerifier:
    """Every verdict of a batch, computed by worker processes while the caller goes on."""

    # Fewer jobs than this are verified by the caller when it asks: the round trip to a
    # worker would cost more than it saves.
    INLINE_BELOW = 16

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or len(os.sched_getaffinity(0)))
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers now (forking before the caller starts threads of its own)."""
        if self._pool is None:
            self._pool = _fork_pool(self.workers)
            for future in [self._pool.submit(verify_slice, []) for _ in range(self.workers)]:
                future.result()

    def submit(self, jobs: list[Job]) -> Callable[[], list[bool]]:
        """Start verifying; returns the function that waits for the verdicts, in job order."""
        if len(jobs) < self.INLINE_BELOW:
            return lambda: verify_slice(jobs)
        self.start()
        assert self._pool is not None
        size = -(-len(jobs) // self.workers)
        futures = [self._pool.submit(verify_slice, jobs[i : i + size]) for i in range(0, len(jobs), size)]
        return lambda: [verdict for future in futures for verdict in future.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class BackgroundVerifier:
    """Batches of tagged jobs verified by worker processes; verdicts are read in the order
    the batches were submitted."""

    def __init__(self, workers: int | None = None, inline: bool = False) -> None:
        """`inline`: verify each batch in the calling process when it is submitted (a run too
        small to be worth forking the workers)."""
        self.workers = max(1, workers or len(os.sched_getaffinity(0)))
        self.inline = inline
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[list[Future[int | None]]] = deque()

    def submit(self, jobs: list[TaggedJob]) -> None:
        """Queue a batch; returns at once (inline, once it is verified)."""
        if not jobs:
            return
        if self.inline:
            done: Future[int | None] = Future()
            done.set_result(_first_invalid(jobs))
            self._pending.append([done])
            return
        if self._pool is None:
            self._pool = _fork_pool(self.workers)
        tasks = [jobs[i : i + TASK_JOBS] for i in range(0, len(jobs), TASK_JOBS)]
        self._pending.append([self._pool.submit(_first_invalid, task) for task in tasks])

    def first_invalid(self, pending: int = 0) -> int | None:
        """Wait for the oldest batches until at most `pending` are left; the tag of the first
        job among them whose signature does not verify, in submission order, or None."""
        while len(self._pending) > pending:
            for future in self._pending.popleft():
                tag = future.result()
                if tag is not None:
                    return tag
        return None

    def close(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
