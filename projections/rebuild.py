"""Rebuild the custody read models from the ledger, the system of record, not from Kafka."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import msgspec

from ledger.app.application import LedgerApplication
from projections.store import ProjectionStore

BATCH = 1000  # records per transaction


class Rebuilt(msgspec.Struct, frozen=True):
    records: int  # read from the ledger
    set_aside: list[tuple[int, str]]  # (sequence, why) of each record that could not be projected


def rebuild(
    app: LedgerApplication, store: ProjectionStore, progress: Callable[[int], None] | None = None
) -> Rebuilt:
    """Empty the read models and project every stored record again, in log order; a record
    that cannot be projected is set aside and the rest go on. `progress` is told the running
    count after each batch.

    Stop the live projector first: a record it applied meanwhile would be read back as the
    current state while older records are replayed. Its Kafka positions are kept, so it
    resumes where it stopped; what it then sees again is a no-op."""
    store.reset()
    records = app.records()
    count = 0
    aside: list[tuple[int, str]] = []
    while batch := list(islice(records, BATCH)):
        aside.extend(store.apply(batch))
        count += len(batch)
        if progress is not None:
            progress(count)
    return Rebuilt(count, aside)
