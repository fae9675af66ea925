"""Rebuild the custody read models from the ledger, the system of record, not from Kafka."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

from ledger.application import LedgerApplication
from projections.store import ProjectionStore

BATCH = 1000  # records per transaction


def rebuild(
    app: LedgerApplication, store: ProjectionStore, progress: Callable[[int], None] | None = None
) -> int:
    """Empty the read models and project every stored record again, in log order; returns how
    many records were read. `progress` is told the running count after each batch.

    Stop the live projector first: a record it applied meanwhile would be read back as the
    current state while older records are replayed. Its Kafka positions are kept, so it
    resumes where it stopped; what it then sees again is a no-op."""
    store.reset()
    records = app.records()
    count = 0
    while batch := list(islice(records, BATCH)):
        store.apply(batch)
        count += len(batch)
        if progress is not None:
            progress(count)
    return count
