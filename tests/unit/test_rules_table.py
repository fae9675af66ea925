"""Every reason code the domain rules give, one row each at least: the state, the body, the
code and the field. States are built with plain Python (the rules' own `evolve` over plain
bodies, or a field set by hand): no database, no signing, no eventsourcing. Also: every body
type is handled by the right aggregate, and every reason code is asserted by some test."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest

from aggregates import policy, principal, site, therapy
from aggregates.base import Administrators, ClaimsTable, Context
from aggregates.policy import LEGACY, RULES_VERSION, Policy
from aggregates.principal import KeyState, PrincipalState
from aggregates.roles import meanings
from aggregates.therapy import REQUIRED_QC, TherapyState
from ledger.site.signing import manifestations
from ledger.wire import events as ev
from ledger.wire.keys import keyid_for
from ledger.wire.rejection import ReasonCode, Rejected
from tests.unit.test_policy_rules import POLICY_ROWS
from tests.unit.test_wire_table import WIRE

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
COI = "CHW000026AAAAAA"
DIN = "G123498654321H"
OTHER_DIN = "W000009123456G"
PATIENT_KEY = base64.b64encode(bytes(range(32))).decode()
NEW_KEY = base64.b64encode(bytes([200]) * 32).decode()  # a rotation's new key
NOT_A_SIGNATURE = "A" * 86 + "=="  # well formed, verifies under no key: a bedside mismatch


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


RECEIVED = at(100)  # the ledger's clock: after every step of the journey
# Entries up to a week late need no reason here (the journey lies up to 100 hours before
# RECEIVED); the late-entry rows set their own.
NOW = Policy(version=RULES_VERSION, late_entry_after=timedelta(days=7))


def _qa() -> list[ev.Manifestation]:
    """QA's e-signature (qa.ssf, as QA below is registered)."""
    return [ev.Manifestation("qa.ssf", "Quinn QA SSF", at(16), "approved")]


def _step(n: float, cls: type[Any], actor: str, site: str, **fields: Any) -> Any:
    return cls(
        event_id=UUID(int=1000 + int(n * 10)), occurred_at=at(n), site=site, actor=actor, coi=COI, **fields
    )


def _journey() -> list[Any]:
    """One patient, vein to vein, each step an hour after the one before."""
    steps: list[Any] = [
        _step(0, ev.Enrolled, "coord.bdw", "US-BDW", order_id="O-1", product="CAR-T",
              treatment_site="US-BDW", patient_key=PATIENT_KEY),
        _step(1, ev.ApheresisCollected, "nurse.bdw", "US-BDW", din=DIN, product_code="S1234ABC",
              collection_facility="G1234", unit_id="BAG-1", started_at=at(0.5), ended_at=at(1),
              volume_ml=180.0),
        _step(2, ev.LabelPrinted, "nurse.bdw", "US-BDW", label_id="L-1", din=DIN),
        _step(3, ev.LabelApplied, "nurse.bdw", "US-BDW", label_id="L-1", unit_id="BAG-1"),
        _step(4, ev.CustodyTransferred, "nurse.bdw", "US-BDW", unit_ids=["BAG-1"],
              from_custodian="nurse.bdw", to_custodian="courier.wc", location="dock", condition="ok"),
        _step(5, ev.CustodyTransferred, "courier.wc", "US-SSF", unit_ids=["BAG-1"],
              from_custodian="courier.wc", to_custodian="recv.ssf", location="dock", condition="ok"),
        _step(6, ev.MaterialReceived, "recv.ssf", "US-SSF", unit_ids=["BAG-1"], location="dock",
              condition="ok", scanned_coi=COI, scanned_dins=[DIN]),
        _step(7, ev.ManufacturingStarted, "shuttle.ssf", "US-SSF", batch_id="B-1", shuttle_id="SH-1",
              slot=1, cartridge_id="C-1", recipe_version="R1", input_unit_ids=["BAG-1"]),
        _step(8, ev.ManufacturingCompleted, "shuttle.ssf", "US-SSF", batch_id="B-1",
              outputs=[ev.Output("P-1", "S1234ABC", 50.0)]),
        _step(9, ev.QcSampleTaken, "cellq.ssf", "US-SSF", batch_id="B-1", sample_id="S-1"),
        *[
            _step(10 + i * 0.1, ev.QcResultRecorded, "cellq.ssf", "US-SSF", batch_id="B-1",
                  sample_id="S-1", test=test, method="m", result="ok", specification="spec", passed=True)
            for i, test in enumerate(REQUIRED_QC)
        ],
        _step(16, ev.Disposition, "qa.ssf", "US-SSF", batch_id="B-1", decision="released",
              manifestations=_qa()),
        _step(17, ev.ShipmentDispatched, "recv.ssf", "US-SSF", shipment_id="SHP-1", unit_ids=["P-1"],
              shipper_id="DS-1", data_logger_id="LOG-1", destination_site="US-BDW"),
        _step(18, ev.CustodyTransferred, "recv.ssf", "US-SSF", unit_ids=["P-1"],
              from_custodian="recv.ssf", to_custodian="courier.wc", location="dock", condition="ok"),
        _step(19, ev.CustodyTransferred, "courier.wc", "US-BDW", unit_ids=["P-1"],
              from_custodian="courier.wc", to_custodian="nurse.bdw", location="ward", condition="ok"),
        _step(20, ev.ShipmentReceived, "nurse.bdw", "US-BDW", shipment_id="SHP-1", location="ward",
              condition="ok", logger_reviewed=True),
        _step(21, ev.BedsideIdentityVerified, "nurse.bdw", "US-BDW", unit_id="P-1",
              witness="witness.bdw", patient_signature=NOT_A_SIGNATURE),
        _step(22, ev.Infused, "nurse.bdw", "US-BDW", unit_id="P-1", thaw_started_at=at(21.5)),
    ]  # fmt: skip
    return steps


JOURNEY = _journey()


def body(tag: str, **changes: Any) -> Any:
    """The journey's first step of type `tag`, with `changes`."""
    found = next(b for b in JOURNEY if b.__struct_config__.tag == tag)
    return msgspec.structs.replace(found, **changes)


def before(tag: str, *extra: Any) -> TherapyState:
    """The journey's state just before its first step of type `tag`, then `extra` steps."""
    state: TherapyState | None = None
    for step in JOURNEY:
        if step.__struct_config__.tag == tag:
            break
        state = therapy.evolve(state, step)
    for step in extra:
        state = therapy.evolve(state, step)
    assert state is not None
    return state


def checked_at_bedside() -> TherapyState:
    """Received at the hospital, the bedside check matched (set by hand: no patient signing)."""
    state = before("bedside_identity_verified")
    state.bedside["P-1"] = "signature"
    return state


def ctx(
    *,
    claims: dict[tuple[str, str], str] | None = None,
    roles: dict[str, frozenset[str]] | None = None,
    administrators: tuple[PrincipalState, ...] = (),
    policy: Policy = NOW,
    received_at: datetime = RECEIVED,
) -> Context:
    return Context(
        received_at, policy, ClaimsTable(claims or {}), Administrators(administrators), roles or {}
    )


def person(pid: str, *roles: str, kind: str = "person", name: str | None = None) -> PrincipalState:
    """A registered principal with one key, valid from a day before the journey."""
    raw = bytes([len(pid)]) * 32
    return PrincipalState(
        pid,
        kind,
        name or pid.upper(),
        frozenset(roles),
        at(-24),
        {keyid_for(pid, raw): KeyState(raw, at(-24))},
    )


def keyid(state: PrincipalState) -> str:
    return next(iter(state.keys))


def _registered(pid: str, *roles: str, kind: str = "person", **changes: Any) -> ev.PrincipalRegistered:
    fields: dict[str, Any] = {
        "event_id": UUID(int=9),
        "occurred_at": RECEIVED,
        "site": "US-SSF",
        "actor": "admin.ssf",
        "principal_id": pid,
        "kind": kind,
        "printed_name": pid.upper(),
        "roles": list(roles),
        "public_key": base64.b64encode(bytes([7]) * 32).decode(),
        "valid_from": RECEIVED,
    }
    return ev.PrincipalRegistered(**(fields | changes))


def _registry(cls: type[Any], pid: str, **fields: Any) -> Any:
    return cls(
        event_id=UUID(int=10),
        occurred_at=RECEIVED,
        site="US-SSF",
        actor="admin.ssf",
        principal_id=pid,
        **fields,
    )


def copy_of(state: PrincipalState) -> PrincipalState:
    """A copy to evolve: `evolve` changes state in place."""
    return replace(state, keys={k: replace(v) for k, v in state.keys.items()})


def rotated(state: PrincipalState, routine: bool) -> PrincipalState:
    """`state` after a rotation at hour 50."""
    copy = copy_of(state)
    rotation = _registry(
        ev.PrincipalKeyRotated,
        state.principal_id,
        public_key=NEW_KEY,
        valid_from=at(50),
        routine=routine,
    )
    return principal.evolve(copy, rotation)


def locked(state: PrincipalState) -> PrincipalState:
    """`state` with its key locked by the ledger's service principal."""
    lock = _registry(ev.PrincipalKeyLocked, state.principal_id, keyid=keyid(state))
    return principal.evolve(copy_of(state), lock)


def revoked(state: PrincipalState, whole: bool) -> PrincipalState:
    copy = copy_of(state)
    revocation = _registry(
        ev.PrincipalRevoked, state.principal_id, effective_at=at(50), keyid=None if whole else keyid(state)
    )
    return principal.evolve(copy, revocation)


# The cast, as the registry holds them.
ADMIN = person("admin.ssf", "admin")
NURSE = person("nurse.bdw", "collection", "treatment")
WITNESS = person("witness.bdw", "treatment")
COURIER = person("courier.wc", "courier")
QA = person("qa.ssf", "qa", name="Quinn QA SSF")
DEPUTY = person("admin.dep", "admin")  # the second administrator (dual control, rules version 3)
ONE_ADMIN = {"admin.ssf": frozenset({"admin"})}  # the signers' roles, as the ledger gives them
TWO_ADMINS = ONE_ADMIN | {"admin.dep": frozenset({"admin"})}
COORD = person("coord.bdw", "enrolment")
SHUTTLE = person("shuttle.ssf", "manufacturing", kind="device")
LOGGER = person("logger.1", "logger", kind="device")


def signed_by(*states: PrincipalState) -> dict[str, PrincipalState]:
    return {s.principal_id: s for s in states}


def _manifest(*states: PrincipalState) -> list[ev.Manifestation]:
    return [ev.Manifestation(s.principal_id, s.printed_name, at(4), "performed") for s in states]


def authorized(
    b: Any, signers: dict[str, PrincipalState], policy: Policy = NOW, received_at: datetime = RECEIVED
) -> Rejected | None:
    return principal.authorize(b, signers, received_at, policy)


def _signature(state: PrincipalState, signed_at: datetime, meaning: str) -> ev.Manifestation:
    return ev.Manifestation(state.principal_id, state.printed_name, signed_at, meaning)  # type: ignore[arg-type]


def moved(**changes: Any) -> Any:
    """The first custody transfer (nurse to courier), manifested by both people."""
    return body("custody_transferred", **({"manifestations": _manifest(NURSE, COURIER)} | changes))


@dataclass(frozen=True)
class Row:
    what: str
    run: Callable[[], Rejected | None]
    code: ReasonCode
    field: str | None


QA_ROLES = {"qa.ssf": frozenset({"qa"})}


def _decide(
    state: TherapyState | None, b: Any, context: Context | None = None
) -> Callable[[], Rejected | None]:
    return lambda: therapy.decide(state, b, context or ctx(roles=QA_ROLES))


def _site_change(**changes: Any) -> Any:
    move = _step(23, ev.TreatmentSiteChanged, "coord.bdw", "US-BDW", treatment_site="JP-KAS",
                 reason="the family moved", manifestations=_qa())  # fmt: skip
    return msgspec.structs.replace(move, **changes)


def _correct(**changes: Any) -> Any:
    fix = _step(23, ev.RecordCorrected, "qa.ssf", "US-SSF", corrects_event_id=body("apheresis_collected").event_id,
                field="volume_ml", old_value="180.0", new_value="182.0", reason="typo", manifestations=_qa())  # fmt: skip
    return msgspec.structs.replace(fix, **changes)


def received_again(**changes: Any) -> Any:
    """The bag's receipt at the factory sent again, after the bag went into its batch."""
    return body("material_received", **({"event_id": UUID(int=4), "occurred_at": at(7.5)} | changes))


def _failed_qc() -> TherapyState:
    results = [b for b in JOURNEY if isinstance(b, ev.QcResultRecorded)]
    failed = msgspec.structs.replace(results[0], passed=False)
    return before("qc_result_recorded", failed, *results[1:])


def _run(n: float, start: float, end: float, step: str = "enrichment") -> Any:
    """A manufacturing step of B-1 recorded at hour `n`, run from `start` to `end`."""
    return _step(n, ev.ManufacturingStepCompleted, "shuttle.ssf", "US-SSF", batch_id="B-1", step=step,
                 started_at=at(start), ended_at=at(end), material_lots=["LOT-1"])  # fmt: skip


FIRST_RUN, SECOND_RUN = _run(7.4, 7.0, 7.4), _run(7.6, 7.4, 7.6, "activation")  # B-1 started at hour 7


def _infused() -> TherapyState:
    return therapy.evolve(checked_at_bedside(), body("infused"))


def _moved_run(start: float) -> Any:
    """QA corrects the second run's start."""
    return _correct(corrects_event_id=SECOND_RUN.event_id, field="started_at",
                    old_value=therapy._text(SECOND_RUN.started_at), new_value=at(start).isoformat())  # fmt: skip


DAY = Policy(version=RULES_VERSION, late_entry_after=timedelta(hours=24))  # the default delay

# What rules version 2 refuses that version 1 accepted: (what, state and body, code, field,
# the policy judging it).
TIME_AND_ORDER: list[tuple[str, Callable[[], tuple[TherapyState, Any]], ReasonCode, str, Policy]] = [
    ("ended after it was recorded", lambda: (before("apheresis_collected"), body("apheresis_collected", ended_at=at(1.5))), ReasonCode.INTERVAL_OUT_OF_ORDER, "ended_at", NOW),
    ("a thaw after the infusion", lambda: (checked_at_bedside(), body("infused", thaw_started_at=at(22.5))), ReasonCode.INTERVAL_OUT_OF_ORDER, "thaw_started_at", NOW),
    ("a step before its batch started", lambda: (before("manufacturing_completed"), _run(7.5, 6.5, 7.5)), ReasonCode.INTERVAL_OUT_OF_ORDER, "started_at", NOW),
    ("two steps of a batch at once", lambda: (before("manufacturing_completed", FIRST_RUN), _run(7.6, 7.2, 7.6, "activation")), ReasonCode.INTERVAL_OUT_OF_ORDER, "started_at", NOW),
    ("the same step window again", lambda: (before("manufacturing_completed", FIRST_RUN), _run(7.5, 7.0, 7.4)), ReasonCode.INTERVAL_OUT_OF_ORDER, "started_at", NOW),
    ("a step corrected into another", lambda: (before("manufacturing_completed", FIRST_RUN, SECOND_RUN), _moved_run(7.3)), ReasonCode.INTERVAL_OUT_OF_ORDER, "new_value", NOW),
    ("a late entry without a reason", lambda: (before("label_printed"), body("label_printed")), ReasonCode.LATE_ENTRY_REASON_REQUIRED, "reason", DAY),
    ("a hold on an infused product", lambda: (_infused(), _step(23, ev.HoldPlaced, "nurse.bdw", "US-BDW", hold_id="H-1", unit_ids=["P-1"], reason="recall")), ReasonCode.UNIT_CONSUMED, "unit_ids", NOW),
    ("a hold on a bag that went into its batch", lambda: (before("manufacturing_completed"), _step(7.5, ev.HoldPlaced, "recv.ssf", "US-SSF", hold_id="H-1", unit_ids=["BAG-1"], reason="seal")), ReasonCode.UNIT_CONSUMED, "unit_ids", NOW),
]  # fmt: skip


def _judged(made: Callable[[], tuple[TherapyState, Any]], policy: Policy) -> Rejected | None:
    state, b = made()
    return therapy.decide(state, b, ctx(roles=QA_ROLES, policy=policy))


THERAPY: list[Row] = [
    *[Row(what, lambda made=made, p=p: _judged(made, p), code, name) for what, made, code, name, p in TIME_AND_ORDER],
    Row("a step before enrolment", _decide(None, body("apheresis_collected")), ReasonCode.NOT_ENROLLED, "coi"),
    Row("enrolled twice", _decide(before("label_printed"), body("enrolled")), ReasonCode.ALREADY_ENROLLED, "coi"),
    Row("a v0.1 commitment", _decide(None, body("enrolled", patient_commitment="0" * 64)), ReasonCode.INVALID_VALUE, "patient_commitment"),
    Row("no patient key", _decide(None, body("enrolled", patient_key=None)), ReasonCode.MISSING_FIELD, "patient_key"),
    Row("a DIN another patient holds", _decide(before("apheresis_collected"), body("apheresis_collected"), ctx(claims={("din", DIN): "CHW000026BBBBBB"})), ReasonCode.DIN_IN_USE, "din"),
    Row("a label for another patient's DIN", _decide(before("label_printed"), body("label_printed"), ctx(claims={("din", DIN): "CHW000026BBBBBB"})), ReasonCode.DIN_IN_USE, "din"),
    Row("a cartridge used before", _decide(before("manufacturing_started"), body("manufacturing_started"), ctx(claims={("cartridge", "C-1"): "CHW000026BBBBBB"})), ReasonCode.CARTRIDGE_IN_USE, "cartridge_id"),
    Row("a DIN of another facility", _decide(before("apheresis_collected"), body("apheresis_collected", collection_facility="W0000")), ReasonCode.INVALID_VALUE, "din"),
    Row("ended before it started", _decide(before("apheresis_collected"), body("apheresis_collected", ended_at=at(0))), ReasonCode.INTERVAL_OUT_OF_ORDER, "ended_at"),
    Row("a unit id used twice", _decide(before("label_printed"), body("apheresis_collected", event_id=UUID(int=1))), ReasonCode.DUPLICATE_ID, "unit_id"),
    Row("a label never printed", _decide(before("label_applied"), body("label_applied", label_id="L-9")), ReasonCode.OUT_OF_SEQUENCE, "label_id"),
    Row("a label for another DIN", _decide(before("label_applied", body("label_printed", event_id=UUID(int=2), label_id="L-2", din=OTHER_DIN)), body("label_applied", label_id="L-2")), ReasonCode.IDENTITY_MISMATCH, "unit_id"),
    Row("a transfer signed off by another", _decide(before("custody_transferred"), body("custody_transferred", actor="courier.wc")), ReasonCode.NOT_CUSTODIAN, "actor"),
    Row("a transfer from a non-custodian", _decide(before("custody_transferred"), body("custody_transferred", actor="witness.bdw", from_custodian="witness.bdw")), ReasonCode.NOT_CUSTODIAN, "from_custodian"),
    Row("a transfer to oneself", _decide(before("custody_transferred"), body("custody_transferred", to_custodian="nurse.bdw")), ReasonCode.INVALID_VALUE, "to_custodian"),
    Row("a unit on hold", _decide(before("custody_transferred", _step(3.5, ev.HoldPlaced, "nurse.bdw", "US-BDW", hold_id="H-1", unit_ids=["BAG-1"], reason="seal")), body("custody_transferred")), ReasonCode.UNIT_ON_HOLD, "unit_ids"),
    Row("a hold on an unknown unit", _decide(before("custody_transferred"), _step(4, ev.HoldPlaced, "nurse.bdw", "US-BDW", hold_id="H-1", unit_ids=["BAG-9"], reason="seal")), ReasonCode.UNKNOWN_UNIT, "unit_ids"),
    Row("another patient's COI scanned", _decide(before("material_received"), body("material_received", scanned_coi="CHW000026BBBBBB")), ReasonCode.IDENTITY_MISMATCH, "scanned_coi"),
    Row("other DINs scanned", _decide(before("material_received"), body("material_received", scanned_dins=[OTHER_DIN])), ReasonCode.IDENTITY_MISMATCH, "scanned_dins"),
    Row("a step dated before the one it follows", _decide(before("material_received"), body("material_received", occurred_at=at(4.5))), ReasonCode.BEFORE_PREREQUISITE, "occurred_at"),
    Row("manufacturing before receipt", _decide(before("material_received"), body("manufacturing_started")), ReasonCode.OUT_OF_SEQUENCE, "input_unit_ids"),
    Row("a consumed unit received again", _decide(before("manufacturing_completed"), received_again()), ReasonCode.OUT_OF_SEQUENCE, "unit_ids"),
    Row("an infused unit received", _decide(therapy.evolve(checked_at_bedside(), body("infused")), received_again(actor="nurse.bdw", site="US-BDW", unit_ids=["P-1"], scanned_dins=[], occurred_at=at(23))), ReasonCode.OUT_OF_SEQUENCE, "unit_ids"),
    Row("a sample of another batch", _decide(before("qc_result_recorded"), body("qc_result_recorded", sample_id="S-9")), ReasonCode.UNKNOWN_UNIT, "sample_id"),
    Row("a second result unauthorised", _decide(before("disposition"), body("qc_result_recorded", event_id=UUID(int=3), occurred_at=at(15))), ReasonCode.RETEST_NOT_AUTHORISED, "test"),
    Row("a retest under another deviation", _decide(_failed_qc(), _step(15, ev.RetestAuthorised, "qa.ssf", "US-SSF", batch_id="B-1", deviation_id="D-9", test="sterility", reason="retest", manifestations=_qa())), ReasonCode.RETEST_NOT_AUTHORISED, "deviation_id"),
    Row("release with tests missing", _decide(before("qc_result_recorded"), body("disposition")), ReasonCode.QC_INCOMPLETE, "decision"),
    Row("release after a failed test", _decide(_failed_qc(), body("disposition")), ReasonCode.QC_FAILED, "decision"),
    Row("release with a deviation open", _decide(before("disposition", _step(15, ev.DeviationOpened, "qa.ssf", "US-SSF", deviation_id="DV-1", description="d", severity="minor", batch_id="B-1")), body("disposition")), ReasonCode.OPEN_DEVIATION, "batch_id"),
    Row("a rejection without a reason", _decide(before("disposition"), body("disposition", decision="rejected", manifestations=[_signature(QA, at(16), "rejected")])), ReasonCode.REASON_REQUIRED, "reason"),
    Row("a disposition without QA's e-signature", _decide(before("disposition"), body("disposition", manifestations=[])), ReasonCode.MISSING_MANIFESTATION, "manifestations"),
    Row("shipment before release", _decide(before("disposition"), body("shipment_dispatched")), ReasonCode.OUT_OF_SEQUENCE, "unit_ids"),
    Row("a shipment to another hospital", _decide(before("shipment_dispatched"), body("shipment_dispatched", destination_site="JP-KAS")), ReasonCode.WRONG_TREATMENT_SITE, "destination_site"),
    Row("a bedside check at another hospital", _decide(before("bedside_identity_verified"), body("bedside_identity_verified", site="JP-KAS")), ReasonCode.WRONG_TREATMENT_SITE, "site"),
    Row("an infusion at another hospital", _decide(checked_at_bedside(), body("infused", site="JP-KAS")), ReasonCode.WRONG_TREATMENT_SITE, "site"),
    Row("a bedside check without the patient's signature", _decide(before("bedside_identity_verified"), body("bedside_identity_verified", patient_signature=None)), ReasonCode.PATIENT_SIGNATURE_REQUIRED, "patient_signature"),
    Row("a bedside check with no patient key", _decide(replace(before("bedside_identity_verified"), patient_key=None), body("bedside_identity_verified")), ReasonCode.PATIENT_KEY_MISSING, "patient_signature"),
    Row("a patient key registered twice", _decide(before("label_printed"), _step(2, ev.PatientKeyRegistered, "coord.bdw", "US-BDW", patient_key=PATIENT_KEY)), ReasonCode.PATIENT_KEY_EXISTS, "patient_key"),
    Row("an infusion without a bedside check", _decide(before("bedside_identity_verified"), body("infused")), ReasonCode.IDENTITY_NOT_VERIFIED, "unit_id"),
    Row("an infusion after a mismatch", _decide(before("infused"), body("infused")), ReasonCode.IDENTITY_MISMATCH, "unit_id"),
    Row("a correction of an unknown event", _decide(before("infused"), _correct(corrects_event_id=UUID(int=77))), ReasonCode.UNKNOWN_EVENT, "corrects_event_id"),
    Row("a correction of an identifier", _decide(before("infused"), _correct(field="din", old_value=DIN, new_value=OTHER_DIN)), ReasonCode.NOT_CORRECTABLE, "field"),
    Row("a correction from a stale value", _decide(before("infused"), _correct(old_value="170.0")), ReasonCode.STALE_OLD_VALUE, "old_value"),
    Row("a correction by a role that may not", _decide(before("infused"), _correct(actor="logger.1", manifestations=[]), ctx(roles={"logger.1": frozenset({"logger"})})), ReasonCode.ROLE_NOT_ALLOWED, "type"),
    Row("a deviation closed that is not open", _decide(before("infused"), _step(23, ev.DeviationClosed, "qa.ssf", "US-SSF", deviation_id="DV-9", outcome="o")), ReasonCode.OUT_OF_SEQUENCE, "deviation_id"),
    Row("a move to the same hospital", _decide(before("infused"), _site_change(treatment_site="US-BDW"), ctx(roles=QA_ROLES)), ReasonCode.INVALID_VALUE, "treatment_site"),
    Row("a move without QA's e-signature", _decide(before("infused"), _site_change(), ctx()), ReasonCode.MISSING_MANIFESTATION, "manifestations"),
    Row("a move while a shipment is in transit", _decide(before("custody_transferred", *[b for b in JOURNEY[4:] if b.occurred_at < at(18)]), _site_change(), ctx(roles=QA_ROLES)), ReasonCode.OUT_OF_SEQUENCE, "treatment_site"),
]  # fmt: skip

PRINCIPAL: list[Row] = [
    Row("a key valid from the past", lambda: principal.decide(None, _registered("new.one", "qc", valid_from=at(90)), ctx()), ReasonCode.VALID_FROM_TOO_EARLY, "valid_from"),
    Row("registered twice", lambda: principal.decide(NURSE, _registered("nurse.bdw", "qc"), ctx()), ReasonCode.PRINCIPAL_EXISTS, "principal_id"),
    Row("a device with the qa role", lambda: principal.decide(None, _registered("robot.qa", "qa", kind="device"), ctx()), ReasonCode.PERSON_REQUIRED, "kind"),
    Row("a rotation of nobody", lambda: principal.decide(None, _registry(ev.PrincipalKeyRotated, "no.one", public_key=PATIENT_KEY, valid_from=RECEIVED), ctx()), ReasonCode.UNKNOWN_PRINCIPAL, "principal_id"),
    Row("a rotation to the same key", lambda: principal.decide(rotated(NURSE, False), _registry(ev.PrincipalKeyRotated, "nurse.bdw", public_key=NEW_KEY, valid_from=RECEIVED), ctx()), ReasonCode.INVALID_VALUE, "public_key"),
    Row("a revocation of a key it never had", lambda: principal.decide(NURSE, _registry(ev.PrincipalRevoked, "nurse.bdw", effective_at=RECEIVED, keyid="nurse.bdw:0123456789abcdef"), ctx()), ReasonCode.UNKNOWN_KEY, "keyid"),
    Row("the last administrator revoked", lambda: principal.decide(ADMIN, _registry(ev.PrincipalRevoked, "admin.ssf", effective_at=RECEIVED, reason="left"), ctx(administrators=(ADMIN,))), ReasonCode.LAST_ADMINISTRATOR, "principal_id"),
    Row("a qa grant signed by one administrator", lambda: principal.decide(None, _registered("qa.new", "qa"), ctx(roles=ONE_ADMIN, administrators=(ADMIN, DEPUTY))), ReasonCode.SECOND_ADMINISTRATOR_REQUIRED, "signatures"),
    Row("an admin grant signed by one of two administrators", lambda: principal.decide(None, _registered("admin.new", "admin"), ctx(roles=ONE_ADMIN, administrators=(ADMIN, DEPUTY))), ReasonCode.SECOND_ADMINISTRATOR_REQUIRED, "signatures"),
    Row("a key after a loss signed by one administrator", lambda: principal.decide(copy_of(NURSE), _registry(ev.PrincipalKeyRotated, "nurse.bdw", public_key=NEW_KEY, valid_from=RECEIVED), ctx(roles=ONE_ADMIN, administrators=(ADMIN, DEPUTY))), ReasonCode.SECOND_ADMINISTRATOR_REQUIRED, "signatures"),
    Row("a routine rotation without the old key", lambda: principal.decide(copy_of(NURSE), _registry(ev.PrincipalKeyRotated, "nurse.bdw", public_key=NEW_KEY, valid_from=RECEIVED, routine=True), ctx(roles=TWO_ADMINS, administrators=(ADMIN, DEPUTY))), ReasonCode.MISSING_COSIGNATURE, "signatures"),
    Row("an administrator rotating its own key alone", lambda: principal.decide(copy_of(ADMIN), _registry(ev.PrincipalKeyRotated, "admin.ssf", public_key=NEW_KEY, valid_from=RECEIVED, routine=True), ctx(roles=ONE_ADMIN, administrators=(ADMIN, DEPUTY))), ReasonCode.SECOND_ADMINISTRATOR_REQUIRED, "signatures"),
    Row("a revocation leaving one administrator", lambda: principal.decide(ADMIN, _registry(ev.PrincipalRevoked, "admin.ssf", effective_at=RECEIVED, reason="left"), ctx(roles=TWO_ADMINS, administrators=(ADMIN, DEPUTY))), ReasonCode.LAST_ADMINISTRATOR, "principal_id"),
    Row("a first principal who is no administrator", lambda: principal.genesis_problem(_registered("first.one", "qc", actor="first.one")), ReasonCode.NO_ADMINISTRATOR, "roles"),
    Row("a first administrator valid later", lambda: principal.genesis_problem(_registered("first.one", "admin", actor="first.one", valid_from=at(101))), ReasonCode.KEY_NOT_YET_VALID, "valid_from"),
    Row("signed before the signer was registered", lambda: principal.key_problem(NURSE, keyid(NURSE), at(-25), RECEIVED, NOW), ReasonCode.KEY_NOT_YET_VALID, "signatures"),
    Row("a key valid only later", lambda: principal.key_problem(NURSE, keyid(NURSE), at(1), at(-30), NOW), ReasonCode.KEY_NOT_YET_VALID, "signatures"),
    Row("a principal revoked before occurred_at", lambda: principal.key_problem(revoked(NURSE, True), keyid(NURSE), at(60), at(60), NOW), ReasonCode.KEY_REVOKED, "signatures"),
    Row("a key revoked before receipt", lambda: principal.key_problem(revoked(NURSE, False), keyid(NURSE), at(1), at(60), NOW), ReasonCode.KEY_REVOKED, "signatures"),
    Row("a locked key", lambda: principal.key_problem(locked(NURSE), keyid(NURSE), at(1), at(2), NOW), ReasonCode.KEY_LOCKED, "signatures"),
    Row("a key rotated out, no grace", lambda: principal.key_problem(rotated(NURSE, False), keyid(NURSE), at(49), at(50), NOW), ReasonCode.KEY_EXPIRED, "signatures"),
    Row("a key rotated routinely, after the grace", lambda: principal.key_problem(rotated(NURSE, True), keyid(NURSE), at(49), at(50) + NOW.rotation_grace, NOW), ReasonCode.KEY_EXPIRED, "signatures"),
]  # fmt: skip

# Signatures whose time or meaning rules version 2 refuses (aggregates/roles.py MEANINGS).
SIGNATURES: list[tuple[str, Any, tuple[PrincipalState, ...], ReasonCode]] = [
    ("signed before the event, past the skew", body("apheresis_collected", manifestations=[_signature(NURSE, at(0.5), "performed")]), (NURSE,), ReasonCode.SIGNED_AT_OUT_OF_RANGE),
    ("signed after the receipt, past the skew", body("apheresis_collected", manifestations=[_signature(NURSE, at(101), "performed")]), (NURSE,), ReasonCode.SIGNED_AT_OUT_OF_RANGE),
    ("signed in 1900", body("apheresis_collected", manifestations=[_signature(NURSE, datetime(1900, 1, 1, tzinfo=UTC), "performed")]), (NURSE,), ReasonCode.SIGNED_AT_OUT_OF_RANGE),
    ("a release meaning performed", body("disposition", manifestations=[_signature(QA, at(16), "performed")]), (QA,), ReasonCode.MEANING_NOT_ALLOWED),
    ("a rejection meaning approved", body("disposition", decision="rejected", reason="sterility failed", manifestations=[_signature(QA, at(16), "approved")]), (QA,), ReasonCode.MEANING_NOT_ALLOWED),
    ("a deviation opened meaning released", _step(15, ev.DeviationOpened, "qa.ssf", "US-SSF", deviation_id="DV-1", description="d", severity="minor", manifestations=[_signature(QA, at(15), "released")]), (QA,), ReasonCode.MEANING_NOT_ALLOWED),
    ("a witness who verified", body("bedside_identity_verified", manifestations=[_signature(NURSE, at(21), "verified"), _signature(WITNESS, at(21), "verified")]), (NURSE, WITNESS), ReasonCode.MEANING_NOT_ALLOWED),
    ("a nurse who witnessed her own check", body("bedside_identity_verified", manifestations=[_signature(NURSE, at(21), "witnessed"), _signature(WITNESS, at(21), "witnessed")]), (NURSE, WITNESS), ReasonCode.MEANING_NOT_ALLOWED),
]  # fmt: skip

AUTHORITY: list[Row] = [
    Row("the actor did not sign", lambda: authorized(moved(), signed_by(COURIER)), ReasonCode.ACTOR_NOT_SIGNER, "actor"),
    Row("a role that may not sign it", lambda: authorized(body("enrolled", actor="courier.wc", manifestations=_manifest(COURIER)), signed_by(COURIER)), ReasonCode.ROLE_NOT_ALLOWED, "type"),
    Row("a device's decision", lambda: authorized(body("disposition", actor="shuttle.ssf", manifestations=[]), signed_by(person("shuttle.ssf", "qa", kind="device"))), ReasonCode.PERSON_REQUIRED, "actor"),
    Row("no reason for a hold", lambda: authorized(_step(4, ev.HoldPlaced, "nurse.bdw", "US-BDW", hold_id="H-1", unit_ids=["BAG-1"], manifestations=_manifest(NURSE)), signed_by(NURSE)), ReasonCode.REASON_REQUIRED, "reason"),
    Row("the receiving custodian did not sign", lambda: authorized(moved(manifestations=_manifest(NURSE)), signed_by(NURSE)), ReasonCode.MISSING_COSIGNATURE, "to_custodian"),
    Row("the witness is the actor", lambda: authorized(body("bedside_identity_verified", witness="nurse.bdw", manifestations=_manifest(NURSE)), signed_by(NURSE)), ReasonCode.MISSING_COSIGNATURE, "witness"),
    Row("custody to a device", lambda: authorized(moved(to_custodian="shuttle.ssf", manifestations=_manifest(NURSE)), signed_by(NURSE, SHUTTLE)), ReasonCode.NOT_A_CUSTODIAN, "to_custodian"),
    Row("a device as witness", lambda: authorized(body("bedside_identity_verified", witness="logger.1", manifestations=_manifest(NURSE)), signed_by(NURSE, LOGGER)), ReasonCode.PERSON_REQUIRED, "witness"),
    Row("a witness who may not treat", lambda: authorized(body("bedside_identity_verified", witness="coord.bdw", manifestations=_manifest(NURSE, COORD)), signed_by(NURSE, COORD)), ReasonCode.ROLE_NOT_ALLOWED, "witness"),
    Row("a device's manifestation", lambda: authorized(body("manufacturing_started", manifestations=_manifest(SHUTTLE)), signed_by(SHUTTLE)), ReasonCode.PERSON_REQUIRED, "manifestations"),
    Row("a person without a manifestation", lambda: authorized(moved(manifestations=_manifest(NURSE)), signed_by(NURSE, COURIER)), ReasonCode.MISSING_MANIFESTATION, "manifestations"),
    Row("a manifestation under another name", lambda: authorized(moved(manifestations=_manifest(NURSE, replace(COURIER, printed_name="Someone Else"))), signed_by(NURSE, COURIER)), ReasonCode.MANIFESTATION_MISMATCH, "manifestations"),
    Row("a manifestation by one who did not sign", lambda: authorized(body("apheresis_collected", manifestations=_manifest(NURSE, QA)), signed_by(NURSE)), ReasonCode.MANIFESTATION_MISMATCH, "manifestations"),
    *[Row(what, lambda b=b, signers=signers: authorized(b, signed_by(*signers)), code, "manifestations") for what, b, signers, code in SIGNATURES],
]  # fmt: skip

# ------------------------------------------------------------------ sites (issue 14)

# The log adopted the site rules (aggregates/policy.py SITES_ADOPTED): the writer's version alone
# does not turn them on.
ADOPTED = replace(NOW, adopted=policy.SITES_ADOPTED)
SITES = frozenset({"US-BDW", "US-SSF", "US-WCX"})


def at_sites(state: PrincipalState, *codes: str) -> PrincipalState:
    return replace(state, sites=frozenset(codes))


B_NURSE, B_COURIER, B_QA = at_sites(NURSE, "US-BDW"), at_sites(COURIER, "US-WCX"), at_sites(QA, "US-SSF")
B_RECV = at_sites(person("recv.ssf", "manufacturing"), "US-SSF")


def collected(**changes: Any) -> Any:
    """The collection, manifested by the nurse."""
    return body("apheresis_collected", **({"manifestations": _manifest(NURSE)} | changes))


def sited(b: Any, *signers: PrincipalState, sites: frozenset[str] = SITES) -> Callable[[], Rejected | None]:
    return lambda: principal.authorize(b, signed_by(*signers), RECEIVED, ADOPTED, sites)


def _site_record(**changes: Any) -> ev.SiteRegistered:
    fields: dict[str, Any] = {
        "event_id": UUID(int=11), "occurred_at": RECEIVED, "site": "US-SSF", "actor": "admin.ssf",
        "code": "JP-KAS", "name": "Kashiwa", "country": "JP", "time_zone": "Asia/Tokyo", "kind": "treatment",
    }  # fmt: skip
    return ev.SiteRegistered(**(fields | changes))


def _registered_sites() -> dict[str, site.SiteState]:
    return site.evolve({}, _site_record(code="US-SSF", time_zone="America/Los_Angeles"))


def _bound_ctx() -> Context:
    return replace(ctx(policy=ADOPTED), sites=SITES)


SITE_ROWS: list[Row] = [
    Row("an event at a site nobody registered", sited(collected(site="XX-NOWHERE"), B_NURSE), ReasonCode.UNKNOWN_SITE, "site"),
    Row("a nurse signing at a site she is not bound to", sited(collected(site="US-SSF"), B_NURSE), ReasonCode.SITE_NOT_BOUND, "actor"),
    Row("a cosigner not bound to the site", sited(body("disposition", site="US-SSF", manifestations=[*_qa(), _signature(B_NURSE, at(16), "approved")]), B_QA, B_NURSE), ReasonCode.SITE_NOT_BOUND, "signatures"),
    Row("a hand-off at neither custodian's site", sited(moved(site="US-SSF"), B_NURSE, B_COURIER), ReasonCode.SITE_NOT_BOUND, "site"),
    Row("Leiden QA releasing a South San Francisco batch", _decide(before("disposition"), body("disposition"), replace(ctx(roles=QA_ROLES, policy=ADOPTED), bound={"qa.ssf": frozenset({"NL-LEI"})})), ReasonCode.SITE_NOT_BOUND, "actor"),
    Row("a principal bound to an unregistered site", lambda: principal.decide(None, _registered("new.one", "qc", sites=["JP-KAS"]), _bound_ctx()), ReasonCode.UNKNOWN_SITE, "sites"),
    Row("more sites, one unregistered", lambda: principal.decide(copy_of(NURSE), _registry(ev.PrincipalSitesBound, "nurse.bdw", sites=["JP-KAS"]), _bound_ctx()), ReasonCode.UNKNOWN_SITE, "sites"),
    Row("a site registered twice", lambda: site.decide(_registered_sites(), _site_record(code="US-SSF")), ReasonCode.SITE_EXISTS, "code"),
    Row("a time zone nobody has heard of", lambda: site.decide({}, _site_record(time_zone="Mars/Olympus")), ReasonCode.INVALID_VALUE, "time_zone"),
    Row("a country ISO 3166 does not list", lambda: site.decide({}, _site_record(country="XX")), ReasonCode.INVALID_VALUE, "country"),
]  # fmt: skip

ROWS = THERAPY + PRINCIPAL + AUTHORITY + SITE_ROWS


def test_the_site_rules_accept_what_happens_where_its_signers_are_bound() -> None:
    assert sited(collected(), B_NURSE)() is None
    # a hand-off at the courier's hub or at the nurse's hospital: either custodian's site
    assert sited(moved(), B_NURSE, B_COURIER)() is None
    assert sited(moved(site="US-WCX"), B_NURSE, B_COURIER)() is None
    release = ctx(roles=QA_ROLES, policy=ADOPTED)
    assert (
        therapy.decide(
            before("disposition"), body("disposition"), replace(release, bound={"qa.ssf": B_QA.sites})
        )
        is None
    )
    assert site.decide(_registered_sites(), _site_record()) is None


def test_the_site_rules_wait_for_the_logs_adoption_not_the_writers_version() -> None:
    """A writer judges by RULES_VERSION whatever the log adopted (aggregates/policy.py judging):
    a ledger under version 2 keeps accepting events at free-text sites until it adopts 3."""
    writer = policy.judging(replace(NOW, version=2, adopted=2))
    assert isinstance(writer, Policy) and (writer.version, writer.adopted) == (RULES_VERSION, 2)
    anywhere = collected(site="XX-NOWHERE")
    assert principal.authorize(anywhere, signed_by(NURSE), RECEIVED, writer, ()) is None
    assert (
        therapy.decide(before("disposition"), body("disposition"), ctx(roles=QA_ROLES, policy=writer)) is None
    )
    assert (
        principal.decide(None, _registered("new.one", "qc", sites=["XX-NOWHERE"]), ctx(policy=writer)) is None
    )
    adopted = policy.judging(ADOPTED)
    assert isinstance(adopted, Policy)
    refused = principal.authorize(anywhere, signed_by(NURSE), RECEIVED, adopted, SITES)
    assert refused is not None and refused.code == ReasonCode.UNKNOWN_SITE


def test_bindings_only_grow() -> None:
    bound = principal.evolve(
        copy_of(B_NURSE), _registry(ev.PrincipalSitesBound, "nurse.bdw", sites=["US-SSF"])
    )
    assert bound.sites == {"US-BDW", "US-SSF"}
    assert principal.evolve(None, _registered("new.one", "qc", sites=["US-SSF"])).sites == {"US-SSF"}


@pytest.mark.parametrize("row", ROWS, ids=[row.what for row in ROWS])
def test_the_rules_refuse_with_the_code_and_name_the_field(row: Row) -> None:
    refused = row.run()
    assert refused is not None, "accepted"
    assert (refused.code, refused.field) == (row.code, row.field), refused.message


def test_the_journey_itself_is_accepted_step_by_step_and_by_its_signers() -> None:
    """The rows differ from an accepted step by what they change."""
    state: TherapyState | None = None
    for step in JOURNEY[:-1]:  # the bedside check in JOURNEY is a mismatch
        assert therapy.decide(state, step, ctx(roles=QA_ROLES)) is None, step
        state = therapy.evolve(state, step)
    assert therapy.decide(checked_at_bedside(), body("infused"), ctx()) is None
    assert authorized(moved(), signed_by(NURSE, COURIER)) is None
    assert principal.key_problem(NURSE, keyid(NURSE), at(1), RECEIVED, NOW) is None
    assert principal.key_problem(rotated(NURSE, True), keyid(NURSE), at(49), at(50), NOW) is None
    assert principal.decide(None, _registered("new.one", "qc"), ctx()) is None


def test_a_patient_moves_and_is_then_treated_at_the_new_hospital() -> None:
    state = before("custody_transferred")
    move = _site_change(occurred_at=at(3.5))
    assert therapy.decide(state, move, ctx(roles=QA_ROLES)) is None
    state = therapy.evolve(state, move)
    assert state.treatment_site == "JP-KAS"
    shipment = body("shipment_dispatched", destination_site="JP-KAS")
    later = before("shipment_dispatched", move)
    assert therapy.decide(later, shipment, ctx()) is None
    refused = therapy.decide(later, body("shipment_dispatched"), ctx())
    assert refused is not None and refused.code == ReasonCode.WRONG_TREATMENT_SITE


def test_the_treatment_site_rules_start_at_rules_version_1() -> None:
    """Records accepted under version 0 went anywhere: a verifier judging them by the policy
    in force then accepts them."""
    to_kashiwa = body("shipment_dispatched", destination_site="JP-KAS")
    assert therapy.decide(before("shipment_dispatched"), to_kashiwa, ctx(policy=LEGACY)) is None
    assert therapy.decide(before("shipment_dispatched"), to_kashiwa, ctx()) is not None


def test_a_used_up_unit_is_refused_at_receipt_from_rules_version_2() -> None:
    """Version 1 accepted the receipt of a bag already in its batch (a property test found it):
    a verifier judging such a record by the policy in force then accepts it."""
    consumed = before("manufacturing_completed")
    assert therapy.decide(consumed, received_again(), ctx(policy=Policy(version=1))) is None
    assert therapy.decide(consumed, received_again(), ctx()) is not None


def test_the_rotation_grace_is_the_policys() -> None:
    longer = Policy(version=RULES_VERSION, rotation_grace=timedelta(hours=1))
    late = at(50) + timedelta(minutes=30)
    assert principal.key_problem(rotated(NURSE, True), keyid(NURSE), at(49), late, NOW) is not None
    assert principal.key_problem(rotated(NURSE, True), keyid(NURSE), at(49), late, longer) is None


# ------------------------------------------------------------------ exhaustiveness


def _bare(cls: type[Any]) -> Any:
    """An instance with no values: enough for a class pattern, nothing more."""
    return cls(**dict.fromkeys(cls.__struct_fields__))


ALL_TYPES = (*ev.EVENT_TYPES.values(), *ev.STORED_TYPES)  # a Stored* class is matched as its event's
# (the ignores: mypy does not see a Union alias's __args__)
JOURNEY_TYPES = [c for c in ALL_TYPES if issubclass(c, ev.JourneyEvent.__args__)]  # type: ignore[attr-defined]
REGISTRY_TYPES = [c for c in ALL_TYPES if issubclass(c, ev.RegistryEvent.__args__)]  # type: ignore[attr-defined]
POLICY_TYPES = [c for c in ALL_TYPES if issubclass(c, ev.PolicyAdopted)]
SITE_TYPES = [c for c in ALL_TYPES if issubclass(c, ev.SiteRegistered)]


@pytest.mark.parametrize("cls", SITE_TYPES, ids=lambda c: c.__name__)
def test_a_site_body_is_the_sites_and_never_the_therapys_or_a_principals(cls: type[ev.Body]) -> None:
    with pytest.raises(AssertionError):
        therapy._match(_bare(cls))
    with pytest.raises(AssertionError):
        principal.decide(None, _bare(cls), ctx())
    assert "JP-KAS" in site.evolve({}, _site_record())


@pytest.mark.parametrize("cls", JOURNEY_TYPES, ids=lambda c: c.__name__)
def test_every_journey_body_has_its_own_rule_and_change_in_the_therapy(cls: type[ev.Body]) -> None:
    decide, evolve = therapy._match(_bare(cls))
    tag = cls.__struct_config__.tag
    assert (decide.__name__, evolve.__name__) == (f"_decide_{tag}", f"_evolve_{tag}")
    with pytest.raises(AssertionError):
        principal.decide(None, _bare(cls), ctx())
    with pytest.raises(AssertionError):
        principal.evolve(None, _bare(cls))


@pytest.mark.parametrize("cls", REGISTRY_TYPES, ids=lambda c: c.__name__)
def test_every_registry_body_is_the_principals_and_never_the_therapys(cls: type[ev.Body]) -> None:
    with pytest.raises(AssertionError):
        therapy._match(_bare(cls))
    samples: dict[str, dict[str, Any]] = {
        "principal_registered": {},
        "principal_key_rotated": {"public_key": PATIENT_KEY, "valid_from": RECEIVED},
        "principal_revoked": {"effective_at": RECEIVED, "keyid": None},
        "principal_sites_bound": {"sites": ["US-SSF"]},
        "principal_key_locked": {"keyid": keyid(NURSE)},
        "principal_key_unlocked": {"keyid": keyid(NURSE)},
    }
    fields = samples[str(cls.__struct_config__.tag)]
    sample = _registered("nurse.bdw", "qc") if not fields else _registry(cls, "nurse.bdw", **fields)
    state = principal.evolve(None if not fields else copy_of(NURSE), sample)
    assert state.principal_id == "nurse.bdw"


@pytest.mark.parametrize("cls", POLICY_TYPES, ids=lambda c: c.__name__)
def test_a_policy_body_is_the_policys_and_never_the_therapys_or_a_principals(cls: type[ev.Body]) -> None:
    with pytest.raises(AssertionError):
        therapy._match(_bare(cls))
    with pytest.raises(AssertionError):
        principal.decide(None, _bare(cls), ctx())
    with pytest.raises(AssertionError):
        principal.evolve(None, _bare(cls))
    adopted = cls(**{**dict.fromkeys(cls.__struct_fields__), "version": RULES_VERSION, "skew_seconds": 60,
                     "rotation_grace_seconds": 60, "late_entry_after_seconds": 3600, "lock_threshold": 3,
                     "manifestations": []})  # fmt: skip
    assert policy.evolve(policy.PolicyState(), adopted).policy.skew == timedelta(minutes=1)


def test_every_body_type_belongs_to_an_aggregate() -> None:
    """A new body type needs its aggregate's decide and evolve, and its place above."""
    assert set(JOURNEY_TYPES) | set(REGISTRY_TYPES) | set(POLICY_TYPES) | set(SITE_TYPES) == set(ALL_TYPES)


# ------------------------------------------------------------------ every code asserted

TESTS = Path(__file__).parent.parent


def _asserted_elsewhere(code: ReasonCode) -> bool:
    """A code only the application gives (a signature that does not verify, an event id
    reused): asserted by a test that submits to a ledger."""
    return any(
        f'"{code}"' in path.read_text()
        for path in TESTS.rglob("test_*.py")
        if path.name not in ("test_rules_table.py", "test_reason_codes.py")
    )


def test_every_reason_code_is_asserted_by_a_test() -> None:
    tabled = {row.code for row in ROWS} | {row[3] for row in WIRE} | {row[3] for row in POLICY_ROWS}
    assert {c for c in ReasonCode if c not in tabled and not _asserted_elsewhere(c)} == set()
    # Only what the rules cannot give is left to the tests with a ledger.
    assert {c for c in ReasonCode if c not in tabled} == {
        ReasonCode.BAD_SIGNATURE,
        ReasonCode.DUPLICATE_CONFLICT,
    }


def test_signature_times_and_meanings_are_judged_from_rules_version_2() -> None:
    """Records accepted under version 1 carried any time and meaning: a verifier judging them
    by the policy in force then accepts them."""
    for what, b, signers, _ in SIGNATURES:
        assert authorized(b, signed_by(*signers), Policy(version=1)) is None, what
    rejection = body("disposition", decision="rejected", manifestations=[_signature(QA, at(16), "rejected")])
    assert (
        therapy.decide(before("disposition"), rejection, ctx(roles=QA_ROLES, policy=Policy(version=1)))
        is None
    )


@pytest.mark.parametrize(
    ("what", "b", "signers"),
    [
        ("a release meaning released", body("disposition", manifestations=[_signature(QA, at(16), "released")]), (QA,)),
        ("a rejection meaning rejected", body("disposition", decision="rejected", reason="sterility failed", manifestations=[_signature(QA, at(16), "rejected")]), (QA,)),
        ("a late entry signed at its receipt", body("apheresis_collected", manifestations=[_signature(NURSE, at(99), "performed")]), (NURSE,)),
        ("signed within the skew before the event", body("apheresis_collected", manifestations=[_signature(NURSE, at(1) - NOW.skew, "performed")]), (NURSE,)),
        ("signed within the skew after the receipt", body("apheresis_collected", manifestations=[_signature(NURSE, RECEIVED + NOW.skew, "performed")]), (NURSE,)),
        ("a checked bedside, verified and witnessed", body("bedside_identity_verified", manifestations=[_signature(NURSE, at(21), "verified"), _signature(WITNESS, at(21), "witnessed")]), (NURSE, WITNESS)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_signatures_that_mean_what_they_say_are_accepted(
    what: str, b: Any, signers: tuple[PrincipalState, ...]
) -> None:
    assert authorized(b, signed_by(*signers)) is None, what


def test_time_and_order_are_judged_from_rules_version_2() -> None:
    """A version-1 ledger holds such records: judged by the policy in force then, accepted."""
    for what, made, _, _, judging in TIME_AND_ORDER:
        assert _judged(made, replace(judging, version=1)) is None, what


@pytest.mark.parametrize(
    ("what", "made"),
    [
        ("steps end to end", lambda: (before("manufacturing_completed", FIRST_RUN), SECOND_RUN)),
        ("a step corrected into free time", lambda: (before("manufacturing_completed", FIRST_RUN, SECOND_RUN), _moved_run(7.5))),
        ("a late entry with a reason", lambda: (before("label_printed"), body("label_printed", reason="printer log keyed in late"))),
        ("a hold on a product not yet infused", lambda: (checked_at_bedside(), _step(22, ev.HoldPlaced, "nurse.bdw", "US-BDW", hold_id="H-1", unit_ids=["P-1"], reason="bag cracked"))),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_times_in_order_are_accepted(what: str, made: Callable[[], tuple[TherapyState, Any]]) -> None:
    assert _judged(made, DAY if "late" in what else NOW) is None, what


def test_a_corrected_step_is_judged_by_its_new_times() -> None:
    """After the second run is corrected to start later, a run in the time it freed fits."""
    state = before("manufacturing_completed", FIRST_RUN, SECOND_RUN)
    state = therapy.evolve(state, _moved_run(7.5))
    assert therapy.decide(state, _run(7.7, 7.4, 7.5, "transduction"), ctx()) is None
    assert therapy.decide(state, _run(7.7, 7.5, 7.6, "transduction"), ctx()) is not None


@pytest.mark.parametrize("tag", sorted(ev.EVENT_TYPES), ids=str)
def test_the_signing_tools_default_meaning_is_one_the_rules_allow(tag: str) -> None:
    """`coi sign` and the demo write each person's meaning when none is given: the actor's and a
    cosigner's from the table (a disposition's by its decision), the witness's `witnessed`."""
    for decision in ("released", "rejected") if tag == "disposition" else (None,):
        written = manifestations([QA, WITNESS], tag, at(1), witness="witness.bdw", decision=decision)
        assert [m.meaning for m in written] == [meanings(tag, decision)[0], "witnessed"]
        assert written[0].meaning in meanings(tag, decision)
    assert manifestations([QA], "disposition", at(1), decision="rejected")[0].meaning == "rejected"
