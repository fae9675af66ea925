"""The policy in force as an auditor reads it: version, settings, since which record, by whom
(aggregates/policy.py; README: Policy)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec

from aggregates.base import body_of
from aggregates.policy import LEGACY, SETTINGS, PolicyState, evolve, policy_of, written
from ledger.app.application import LedgerApplication
from ledger.store.topics import POLICY_TOPICS
from ledger.wire.events import PolicyAdopted


class SettingView(msgspec.Struct):
    name: str
    value: str  # as `coi policy set` writes it: 5m, 24h, 5
    since_sequence: int | None  # the first record of the run of boundaries that kept this value


class PolicyView(msgspec.Struct):
    version: int
    sequence: int | None  # the boundary in force; None: no policy record yet (version 0)
    recorded_at: datetime | None
    signed_by: list[str]
    reason: str | None
    settings: list[SettingView]


def view(app: LedgerApplication) -> PolicyView:
    """The policy in force with, for each setting, the boundary from which its value holds."""
    state, sequence, recorded_at = PolicyState(), None, None
    since: dict[str, int | None] = {s.name: None for s in SETTINGS}
    for seq, at, envelope in app.records(topics=POLICY_TOPICS):
        body = body_of(envelope)
        assert isinstance(body, PolicyAdopted)
        adopted = evolve(state, body)
        for s in SETTINGS:
            if since[s.name] is None or getattr(adopted.policy, s.name) != getattr(state.policy, s.name):
                since[s.name] = seq
        state, sequence, recorded_at = adopted, seq, at
    settings = [SettingView(s.name, written(getattr(state.policy, s.name)), since[s.name]) for s in SETTINGS]
    return PolicyView(
        state.policy.version, sequence, recorded_at, list(state.signed_by), state.reason, settings
    )


def late_entry_after(app: LedgerApplication) -> Callable[[datetime], timedelta]:
    """The `late_entry_after` in force when the ledger recorded something at a given time."""
    times: list[datetime] = []
    values: list[timedelta] = []
    for _, at, envelope in app.records(topics=POLICY_TOPICS):
        body = body_of(envelope)
        assert isinstance(body, PolicyAdopted)
        times.append(at)
        values.append(policy_of(body).late_entry_after)

    def in_force(recorded_at: datetime) -> timedelta:
        i = bisect.bisect_right(times, recorded_at)
        return values[i - 1] if i else LEGACY.late_entry_after

    return in_force
