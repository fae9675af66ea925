"""Ed25519 verification on every core.

`cryptography` releases the GIL while it verifies, so plain threads use all cores; the
calling thread verifies a share itself instead of waiting idle.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ledger.dsse import verify

# (raw public key, signature, signed message)
Job = tuple[bytes, bytes, bytes]


def _verify_slice(jobs: list[Job]) -> list[bool]:
    return [verify(public, sig, message) for public, sig, message in jobs]


class ParallelVerifier:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or len(os.sched_getaffinity(0)))
        self._pool: ThreadPoolExecutor | None = None

    def verify_all(self, jobs: list[Job]) -> list[bool]:
        """One verdict per job, in order."""
        if self.workers == 1 or len(jobs) < 2 * self.workers:
            return _verify_slice(jobs)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="coi-verify")
        size = -(-len(jobs) // self.workers)
        slices = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        futures = [self._pool.submit(_verify_slice, s) for s in slices[1:]]
        verdicts = _verify_slice(slices[0])
        for future in futures:
            verdicts.extend(future.result())
        return verdicts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
