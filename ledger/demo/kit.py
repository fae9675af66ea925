"""The one kit for driving a ledger with the demo cast, used by `coi demo`, the tests and the
benchmarks: patients one after another, their steps interleaved as live sites send them, the
ledger's injectable clock, and the cast registered at a chosen time. (The services as child
processes are in ledger/demo/harness.py.)"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from ledger.app.application import LedgerApplication
from ledger.app.servicekey import SERVICE_KIND, SERVICE_PRINCIPAL, SERVICE_ROLE
from ledger.demo.journeys import Cast, Journey, Step, compressed_run
from ledger.site.signing import Member
from ledger.wire.keys import key_file_for, write_key_file

T = TypeVar("T")


def interleave(queues: Iterable[Iterable[T]]) -> list[T]:
    """Round robin over the queues, each queue's own order kept: patients' steps as live sites
    send them. Any prefix of the result holds a prefix of every queue, so it stays valid."""
    pending = [iter(q) for q in queues]
    merged: list[T] = []
    while pending:
        still = []
        for queue in pending:
            for item in queue:  # its next item, if any
                merged.append(item)
                still.append(queue)
                break
        pending = still
    return merged


def cohort(
    cast: Cast,
    start: datetime,
    stagger: timedelta = timedelta(0),
    variants: tuple[str, ...] = ("happy",),
    hour: timedelta = timedelta(hours=1),
) -> Iterator[Journey]:
    """Journeys without end: patient i starts at start + i * stagger, its variant cycling
    through `variants`, one journey hour lasting `hour`."""
    for i in itertools.count():
        yield Journey(cast, i, start + i * stagger, variants[i % len(variants)], hour)


# A cohort inside this span before now: every step in the past, and within the policy's
# late_entry_after (24h by default) of its receipt if sent within a few hours, so none is a
# late entry that needs a reason (rules version 2).
RECENT = timedelta(hours=20)


def recent_cohort(
    cast: Cast, events: int, now: datetime, variants: tuple[str, ...] = ("happy",)
) -> tuple[datetime, Iterator[Journey]]:
    """When to register the cast, and journeys enough for `events` accepted steps (each has 24
    at least) inside RECENT before `now`, compressed (ledger/demo/journeys.py compressed_run)."""
    run = compressed_run(now, events // 24 + 1, RECENT)
    return run.registered_at, cohort(cast, run.first_start, run.stagger, variants, run.hour)


def workload(
    journeys: Iterable[Journey], events: int | None = None, accepted_only: bool = True
) -> list[tuple[Journey, Step]]:
    """The steps of the journeys (only those meant to be accepted, unless `accepted_only` is
    false), interleaved; with `events`, just enough journeys are taken and the result is cut
    to that many steps."""
    queues: list[list[tuple[Journey, Step]]] = []
    total = 0
    for journey in journeys:
        if events is not None and total >= events:
            break
        queues.append([(journey, s) for s in journey.steps() if not accepted_only or s.expect is None])
        total += len(queues[-1])
    return interleave(queues)[:events]


class ManualClock:
    """The ledger's injectable clock (`LedgerApplication(url, clock=...)`), set by hand: the
    ledger receives what it is given at the time the test or benchmark says."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, by: timedelta) -> datetime:
        self.at += by
        return self.at


class CastRegistrationError(RuntimeError):
    """The ledger refused a registration of the cast."""


def register_cast(app: LedgerApplication, cast: Cast, at: datetime) -> int:
    """Register the whole cast and adopt the first policy boundary, as a new ledger starts, the
    ledger receiving them at `at` (its clock injected for these envelopes), so no key claims
    validity from before its receipt; returns how many records that made."""
    outcomes = list(app.submit_many(cast.setup(at), now=at))
    refused = [o for o in outcomes if o.status != "accepted"]
    if refused:
        raise CastRegistrationError(
            f"registering the cast: {refused[0].status} {refused[0].code}: {refused[0].message}"
        )
    return len(outcomes)


def service_member(path: Path, site: str) -> Member:
    """The ledger's service principal (ledger/app/servicekey.py) with a new key, written to
    `path` where the ledger finds it, as `coi init` makes it; to be registered at `site`."""
    member = Member.new(SERVICE_PRINCIPAL, "Ledger service", SERVICE_KIND, (SERVICE_ROLE,), site)
    write_key_file(
        path, key_file_for(member.key, member.principal_id, member.printed_name, member.kind, None)
    )
    return member
