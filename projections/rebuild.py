"""The read models from the ledger, the system of record, not from Kafka: rebuilt from the
start, or brought up to date where no projector keeps them."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import msgspec

from ledger.app.application import LedgerApplication
from projections.store import LEDGER, ProjectionStore

BATCH = 1000  # records per transaction


class Rebuilt(msgspec.Struct, frozen=True):
    records: int  # read from the ledger
    set_aside: list[tuple[int, str]]  # (sequence, why) of each record that could not be projected


class Freshness(msgspec.Struct, frozen=True):
    applied: int  # records this call projected
    set_aside: list[tuple[int, str]]
    ledger: int  # the ledger's last sequence
    projected: int  # the last sequence the read models hold
    projector: bool  # a Kafka projector keeps them (this call applied nothing)


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
    count, aside = _apply_from(app, store, 1, progress)
    return Rebuilt(count, aside)


def catch_up(
    app: LedgerApplication, store: ProjectionStore, progress: Callable[[int, int], None] | None = None
) -> Freshness:
    """Project the records the read models lack, when no Kafka projector keeps them (the
    embedded set-up: `coi demo`, `coi submit`); with one, only say how far behind it is.
    `progress` is told (done, to do) after each batch."""
    top = app.recorder.max_notification_id() or 0
    if store.kept_by_projector():
        return Freshness(0, [], top, store.last_sequence(), projector=True)
    start = store.positions(*LEDGER).get(0, 1)
    todo = max(top - start + 1, 0)
    count, aside = _apply_from(app, store, start, progress and (lambda done: progress(done, todo)))
    return Freshness(count, aside, top, store.last_sequence(), projector=False)


def _apply_from(
    app: LedgerApplication, store: ProjectionStore, start: int, progress: Callable[[int], None] | None
) -> tuple[int, list[tuple[int, str]]]:
    """Apply the ledger's records from `start`, a batch per transaction, each with the position
    after it, so an interrupted run resumes where it stopped."""
    records = app.records(start)
    count = 0
    aside: list[tuple[int, str]] = []
    consumer, topic = LEDGER
    while batch := list(islice(records, BATCH)):
        aside.extend(store.apply(batch, {0: batch[-1][0] + 1}, consumer=consumer, topic=topic))
        count += len(batch)
        if progress is not None:
            progress(count)
    return count, aside
