"""Properties of the therapy rules over any sequence of steps (hypothesis, bounded): `decide`
answers with a verdict and changes nothing, whatever it accepts `evolve` can apply, and no
sequence it accepts breaks the chain of identity (`Watch`: one custodian per unit; no release
without a passing release panel; no shipment without QA's release, so never a rejected batch's
product; no infusion without a receipt at the treatment site and a matching bedside check;
nothing moves while on hold, or once consumed or infused). The sequences are the hand-made
journey of test_rules_table.py and the demo's journeys (ledger/demo/journeys.py), their steps
dropped, duplicated, retimed and moved, with holds, deviations, moves and bedside checks of
their own put in anywhere. The demo's file takes about ten seconds."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates import therapy
from aggregates.base import body_of
from aggregates.therapy import REQUIRED_QC, TherapyState, excursion_ids
from ledger.demo.journeys import HOSPITALS, VARIANTS, Cast, Journey
from ledger.wire import events as ev
from ledger.wire.patient import bedside_signature_valid
from tests.unit.test_rules_table import (
    JOURNEY,
    NOT_A_SIGNATURE,
    QA_ROLES,
    _correct,
    _qa,
    _site_change,
    _step,
    ctx,
)

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


@dataclass
class Watch:
    """The invariants, judged from the accepted steps alone (never from the rules' state):
    `accepted` fails on the first step that breaks one."""

    treatment_site: str = ""
    patient_key: str | None = None
    holder: dict[str, str] = field(default_factory=dict)  # unit -> its one custodian
    gone: dict[str, str] = field(default_factory=dict)  # unit -> "consumed" | "infused"
    batch_of: dict[str, str] = field(default_factory=dict)  # product -> batch
    inputs: dict[str, list[str]] = field(default_factory=dict)  # batch -> its input units
    decision: dict[str, str] = field(default_factory=dict)  # batch -> QA's disposition
    qc: dict[tuple[str, str], bool] = field(default_factory=dict)  # (batch, test) -> its last result
    shipped: dict[str, list[str]] = field(default_factory=dict)  # shipment -> units
    received_at_site: dict[str, str] = field(default_factory=dict)  # unit -> site its shipment reached
    holds: dict[str, tuple[list[str], datetime, datetime | None]] = field(default_factory=dict)
    matched: dict[str, bool] = field(default_factory=dict)  # unit -> its last bedside check matched

    def on_hold(self, unit_id: str, at: datetime) -> list[str]:
        """Holds in force on the unit at `at`: any open one, or a released one spanning `at`."""
        return [
            hold_id
            for hold_id, (units, start, end) in self.holds.items()
            if unit_id in units and (end is None or start <= at < end)
        ]

    def moves(self, units: list[str], at: datetime, what: str) -> None:
        for unit_id in units:
            assert not self.on_hold(unit_id, at), (
                f"{what} moved {unit_id} on hold {self.on_hold(unit_id, at)}"
            )
            assert unit_id not in self.gone, f"{what} moved {unit_id}, {self.gone.get(unit_id)}"

    def held_by(self, units: list[str], who: str, what: str) -> None:
        for unit_id in units:
            assert self.holder.get(unit_id) == who, f"{what} by {who}, custodian {self.holder.get(unit_id)}"

    def accepted(self, b: ev.JourneyEvent) -> None:
        t, what = b.occurred_at, str(b.__struct_config__.tag)
        match b:
            case ev.Enrolled():
                self.treatment_site, self.patient_key = b.treatment_site, b.patient_key
            case ev.TreatmentSiteChanged():
                self.treatment_site = b.treatment_site
            case ev.PatientKeyRegistered():
                self.patient_key = b.patient_key
            case ev.ApheresisCollected():
                self.holder[b.unit_id] = b.actor
            case ev.CustodyTransferred():
                self.moves(b.unit_ids, t, what)
                self.held_by(b.unit_ids, b.from_custodian, what)
                self.holder.update(dict.fromkeys(b.unit_ids, b.to_custodian))
            case ev.MaterialReceived():
                self.moves(b.unit_ids, t, what)
                self.held_by(b.unit_ids, b.actor, what)
            case ev.ManufacturingStarted():
                self.moves(b.input_unit_ids, t, what)
                self.inputs[b.batch_id] = list(b.input_unit_ids)
                self.gone.update(dict.fromkeys(b.input_unit_ids, "consumed"))
            case ev.ManufacturingCompleted():
                for output in b.outputs:
                    self.holder[output.unit_id] = self.holder[self.inputs[b.batch_id][0]]
                    self.batch_of[output.unit_id] = b.batch_id
            case ev.QcSampleTaken():
                self.holder[b.sample_id] = b.actor
            case ev.QcResultRecorded():
                self.qc[(b.batch_id, b.test)] = b.passed
            case ev.Disposition():
                assert b.batch_id not in self.decision, f"{b.batch_id} decided twice"
                failing = [test for test in REQUIRED_QC if not self.qc.get((b.batch_id, test))]
                assert b.decision == "rejected" or not failing, f"released without passing {failing}"
                self.decision[b.batch_id] = b.decision
            case ev.ShipmentDispatched():
                for unit_id in b.unit_ids:
                    batch = self.batch_of.get(unit_id)
                    decided = self.decision.get(batch or "")
                    assert decided == "released", f"shipped {unit_id} of batch {batch} ({decided})"
                    assert all(unit_id not in units for units in self.shipped.values()), "shipped twice"
                self.moves(b.unit_ids, t, what)
                self.held_by(b.unit_ids, b.actor, what)
                self.shipped[b.shipment_id] = list(b.unit_ids)
            case ev.ShipmentReceived():
                units = self.shipped[b.shipment_id]
                self.moves(units, t, what)
                self.held_by(units, b.actor, what)
                self.received_at_site.update(dict.fromkeys(units, b.site))
            case ev.BedsideIdentityVerified():
                self.matched[b.unit_id] = (
                    self.patient_key is not None
                    and b.patient_signature is not None
                    and bedside_signature_valid(
                        self.patient_key, b.patient_signature, b.coi, b.unit_id, b.event_id
                    )
                )
            case ev.Infused():
                self.moves([b.unit_id], t, what)
                assert b.site == self.treatment_site, f"infused at {b.site}, treated at {self.treatment_site}"
                assert self.received_at_site.get(b.unit_id) == b.site, f"{b.unit_id} not received at {b.site}"
                assert self.matched.get(b.unit_id), f"{b.unit_id} infused without a matching bedside check"
                self.gone[b.unit_id] = "infused"
            case ev.HoldPlaced():
                self.holds[b.hold_id] = (list(b.unit_ids), t, None)
            case ev.TemperatureExcursion():
                self.holds[excursion_ids(b.event_id)[0]] = (list(self.shipped[b.shipment_id]), t, None)
            case ev.HoldReleased():
                units, start, _ = self.holds[b.hold_id]
                self.holds[b.hold_id] = (units, start, t)

    def agrees_with(self, state: TherapyState) -> None:
        """The rules' state keeps one custodian per unit, the one the transfers say."""
        assert {u: unit.custodian for u, unit in state.units.items()} == self.holder


def _run(steps: list[Any], roles: dict[str, frozenset[str]]) -> Watch:
    """Each step decided and, if accepted, applied and watched."""
    state: TherapyState | None = None
    watch = Watch()
    context = ctx(roles=roles)
    for step in steps:
        before = copy.deepcopy(state)
        verdict = therapy.decide(state, step, context)
        assert state == before
        if verdict is None:
            watch.accepted(step)
            state = therapy.evolve(state, step)
            watch.agrees_with(state)
    return watch


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
    _run(steps, QA_ROLES)


# ------------------------------------------------------------------ the demo's journeys

CAST = Cast()
ROLES = {pid: frozenset(m.roles) for pid, m in CAST.members.items()}
START = datetime(2026, 1, 5, 8, tzinfo=UTC)


def _demo() -> dict[str, tuple[Journey, list[Any], list[str | None]]]:
    """One journey of each variant (each index its own sites), its steps as signed, the
    refused attempts too: (journey, bodies, the code each step is refused with or None)."""
    demo = {}
    for i, variant in enumerate(VARIANTS):
        journey = Journey(CAST, i, START + timedelta(days=i), variant)
        steps = list(journey.steps())
        demo[variant] = (journey, [body_of(s.envelope.decode()) for s in steps], [s.expect for s in steps])
    return demo


DEMO = _demo()


def _ours(b: Any, coi: str) -> Any:
    """A step of another journey as if of patient `coi`: its units, batch and bedside
    signature stay its own, so that patient's product never matches this one at the bedside."""
    changes: dict[str, Any] = {"coi": coi}
    if isinstance(b, ev.MaterialReceived):
        changes["scanned_coi"] = coi
    return msgspec.structs.replace(b, **changes)


@st.composite
def _own_steps(draw: st.DrawFn, journey: Journey) -> Any:
    """A step a site or QA could send about the journey's units at any time: a hold or its
    release, a deviation, a move to the other hospital, a bedside check that does not match."""
    h, f = journey.hospital[3:].lower(), journey.factory[3:].lower()
    qa = CAST[f"qa.{f}"]
    at = journey.clock - timedelta(hours=draw(st.floats(0, 300)))
    units = draw(
        st.lists(st.sampled_from([f"BAG-{journey.coi}", f"P-{journey.coi}-1"]), min_size=1, max_size=2)
    )
    common: dict[str, Any] = {
        "event_id": UUID(int=draw(st.integers(1, 2**64))),
        "occurred_at": at,
        "coi": journey.coi,
    }
    signed = [ev.Manifestation(qa.principal_id, qa.printed_name, at, "approved")]
    hold_id, deviation_id = draw(st.sampled_from(["H-1", "H-2"])), draw(st.sampled_from(["DV-1", "DV-2"]))
    other = next(site for site in HOSPITALS if site != journey.hospital)
    nurse = {"site": journey.hospital, "actor": f"nurse.{h}"}
    by_qa = {"site": journey.factory, "actor": qa.principal_id}
    cls, fields = draw(
        st.sampled_from(
            [
                (ev.HoldPlaced, nurse | {"hold_id": hold_id, "unit_ids": units, "reason": "seal"}),
                (ev.HoldReleased, by_qa | {"hold_id": hold_id, "reason": "ok", "manifestations": signed}),
                (ev.DeviationOpened, by_qa | {"deviation_id": deviation_id, "description": "d",
                                              "severity": "minor", "batch_id": f"B-{journey.coi}"}),
                (ev.DeviationClosed, by_qa | {"deviation_id": deviation_id, "outcome": "done"}),
                (ev.TreatmentSiteChanged, nurse | {"actor": f"coord.{h}", "treatment_site": other,
                                                   "reason": "moved", "manifestations": signed}),
                (ev.BedsideIdentityVerified, nurse | {"unit_id": units[0], "witness": f"witness.{h}",
                                                      "patient_signature": NOT_A_SIGNATURE}),
            ]
        )
    )  # fmt: skip
    return cls(**common, **fields)


def _anywhere(draw: st.DrawFn, steps: list[Any]) -> int:
    """A place in `steps`, often among the last few (where a journey's end can be reached)."""
    return draw(st.one_of(st.integers(0, len(steps)), st.integers(max(0, len(steps) - 4), len(steps))))


@st.composite
def _demo_sequences(draw: st.DrawFn) -> list[Any]:
    """A demo journey's steps after its enrolment, maybe another journey's steps merged in as
    the same patient's, then a few changes (a step dropped, sent twice, sent again under a new
    event id, retimed by up to a day and a half either way, or moved), and steps of the
    journey's own put in anywhere. Few changes each, so most sequences go deep."""
    variants = draw(st.lists(st.sampled_from(VARIANTS), min_size=1, max_size=2, unique=True))
    journey, first, _ = DEMO[variants[0]]
    others = [_ours(b, journey.coi) for v in variants[1:] for b in DEMO[v][1]]
    steps: list[Any] = []
    for b in first[1:]:  # merged, each journey's own order kept
        while others and draw(st.booleans()):
            steps.append(others.pop(0))
        steps.append(b)
    steps += others
    for change in draw(st.lists(st.sampled_from(["drop", "twice", "again", "retime", "move"]), max_size=4)):
        i = draw(st.integers(0, len(steps) - 1))
        b = steps.pop(i) if change in ("drop", "move") else steps[i]
        if change == "twice":
            steps.insert(i + 1, b)
        elif change == "again":
            steps.insert(
                _anywhere(draw, steps),
                msgspec.structs.replace(b, event_id=UUID(int=draw(st.integers(1, 2**64)))),
            )
        elif change == "retime":
            steps[i] = msgspec.structs.replace(
                b, occurred_at=b.occurred_at + timedelta(hours=draw(st.floats(-36, 36)))
            )
        elif change == "move":
            steps.insert(_anywhere(draw, steps), b)
    for extra in draw(st.lists(_own_steps(journey), max_size=4)):
        steps.insert(_anywhere(draw, steps), extra)
    return [first[0], *steps]


def test_each_demo_journey_as_sent_meets_its_expectations() -> None:
    """The unchanged journeys: the properties below start from sequences the rules accept."""
    for variant, (_, steps, expected) in DEMO.items():
        state: TherapyState | None = None
        got = []
        for b in steps:
            verdict = therapy.decide(state, b, ctx(roles=ROLES))
            got.append(None if verdict is None else str(verdict.code))
            if verdict is None:
                state = therapy.evolve(state, b)
        assert got == expected, variant
    assert "infused" in _run(DEMO["happy"][1], ROLES).gone.values()


@settings(max_examples=300, deadline=None)
@given(_demo_sequences())
def test_no_sequence_of_demo_steps_breaks_the_chain_of_identity(steps: list[Any]) -> None:
    _run(steps, ROLES)
