"""A property of the therapy rules over any sequence of steps (hypothesis, bounded): `decide`
answers with a verdict and changes nothing, and whatever it accepts `evolve` can apply."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates import therapy
from aggregates.therapy import TherapyState
from ledger.wire import events as ev
from tests.unit.test_rules_table import JOURNEY, QA_ROLES, _correct, _qa, _site_change, _step, ctx

# The journey's steps and a few that interleave with them anywhere: a hold and its release,
# a deviation opened and closed, a correction, a move to another hospital.
EXTRA: list[Any] = [
    _step(3.5, ev.HoldPlaced, "nurse.bdw", "US-BDW", hold_id="H-1", unit_ids=["BAG-1"], reason="seal"),
    _step(3.6, ev.HoldReleased, "qa.ssf", "US-SSF", hold_id="H-1", reason="ok", manifestations=_qa()),
    _step(
        12,
        ev.DeviationOpened,
        "qa.ssf",
        "US-SSF",
        deviation_id="DV-1",
        description="d",
        severity="minor",
        batch_id="B-1",
    ),
    _step(13, ev.DeviationClosed, "qa.ssf", "US-SSF", deviation_id="DV-1", outcome="done"),
    _correct(),
    _site_change(),
]


@st.composite
def _sequences(draw: st.DrawFn) -> list[Any]:
    """The journey after its enrolment, most steps kept (a dropped one leaves the later
    ones out of sequence), some of EXTRA inserted anywhere."""
    keep = draw(st.lists(st.integers(0, 9), min_size=len(JOURNEY), max_size=len(JOURNEY)))
    steps = [step for step, k in zip(JOURNEY[1:], keep, strict=False) if k]
    for extra in draw(st.lists(st.sampled_from(EXTRA), max_size=6)):
        steps.insert(draw(st.integers(0, len(steps))), extra)
    return [JOURNEY[0], *steps]


@settings(max_examples=150, deadline=None)
@given(_sequences())
def test_decide_changes_nothing_and_evolve_applies_whatever_it_accepts(steps: list[Any]) -> None:
    state: TherapyState | None = None
    context = ctx(roles=QA_ROLES)
    for step in steps:
        before = copy.deepcopy(state)
        verdict = therapy.decide(state, step, context)
        assert state == before
        if verdict is None:
            state = therapy.evolve(state, step)
