"""The auditors' read models (projections/audit.py) as a person reads them: unit status and
holds, bedside and QC outcomes, the registers, the registry history, the signature manifest,
the identifier index and genealogy, stage durations; live projection in any Kafka order
equals a rebuild; and a projection database of the earlier version migrates."""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from aggregates.base import body_of
from aggregates.therapy import excursion_ids, failure_deviation
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import VARIANTS, Cast, Journey, Step, compressed_run
from ledger.demo.kit import interleave, register_cast
from ledger.site.signing import Member, envelope, registration
from ledger.store.migrations import SCHEMA_TABLE, migrate
from ledger.wire import events as ev
from projections.audit import CACHED_PATIENTS, Patients
from projections.custody import CurrentCustody, Record
from projections.rebuild import rebuild
from projections.rows import UnitRow
from projections.store import TABLES, ProjectionStore, Snapshot
from projections.tables import (
    GENEALOGY,
    IDENTIFIERS,
    MIGRATIONS,
    QC,
    RECORDS,
    REGISTER,
    REGISTRY,
    SIGNATURES,
    STAGES,
    UNITS,
    Table,
    decode,
    placeholders,
    values,
)
from tests.conftest import LEDGER_TABLES
from tests.stores import fresh_store
from tests.support import new_journey, tag_of


class _Signed(msgspec.Struct):
    signatures: list[object]


_signed = msgspec.json.Decoder(_Signed)

# One unit's row each time a record changed it: (the record's type, status, holds).
Trace = list[tuple[str, str, tuple[str, ...]]]


@dataclass
class World:
    """Every variant's patient taken to its end (their steps interleaved, as sites send them),
    then a principal registered, rotated and revoked; projected one record per batch."""

    kind: str
    app: LedgerApplication  # its ledger, open while the module runs
    cast: Cast
    journeys: dict[str, Journey]
    steps: dict[str, list[Step]]  # each journey's accepted steps
    temp: tuple[Member, Member]  # the principal registered, and its rotated-in key
    changed_at: datetime  # when it was registered, rotated and revoked
    records: list[tuple[int, datetime, str]]  # as the ledger gives them
    snapshot: Snapshot
    traces: dict[tuple[str, str], Trace]  # (coi, unit_id) -> its rows over time

    def rows(self, table: Table, coi: str | None = None) -> list[Any]:
        return [r for r in self.snapshot.rows(table) if coi is None or r.coi == coi]

    def sequence(self, step: Step) -> int:
        (found,) = [r.sequence for r in self.snapshot.rows(RECORDS) if r.event_id == str(step.event_id)]
        return int(found)

    def step(self, variant: str, tag: str) -> Step:
        """The variant's first accepted step of this type."""
        return next(s for s in self.steps[variant] if tag_of(s) == tag)

    def retest_deviation(self) -> str:
        """The deviation the retest patient's failed endotoxin test opened, as QA named it."""
        authorised = body_of(self.step("retest", "retest_authorised").envelope.decode())
        assert isinstance(authorised, ev.RetestAuthorised)
        return authorised.deviation_id


def _registry_changes(app: LedgerApplication, cast: Cast) -> tuple[Member, Member, datetime]:
    """temp.x registered, its key rotated (with its old key, as a routine rotation is signed),
    then the new key revoked, all on the admin's authority."""
    now = datetime.now(UTC)
    temp = Member.new("temp.x", "Tess Temp", "person", ("qc",), "US-SSF")
    later = Member.new("temp.x", "Tess Temp", "person", ("qc",), "US-SSF")
    changes = [
        registration(cast.admin, temp, now),
        envelope(
            ev.PrincipalKeyRotated, cast.admin, now, (temp,), principal_id="temp.x",
            public_key=later.public_key, valid_from=now, routine=True, reason="yearly rotation",
        ),
        envelope(
            ev.PrincipalRevoked, cast.admin, now, principal_id="temp.x", keyid=later.signer.keyid,
            effective_at=now, reason="laptop stolen",
        ),
    ]  # fmt: skip
    assert [o.status for o in app.submit_many(changes, now=now)] == ["accepted"] * 3
    return temp, later, now


def _changed_units(store: ProjectionStore, sequence: int) -> list[UnitRow]:
    sql = f"SELECT {', '.join(UnitRow.__struct_fields__)} FROM proj_units WHERE sequence = ? ORDER BY unit_id"
    rows = store.connection.execute(placeholders(sql, store.postgres), (sequence,)).fetchall()
    return [decode(UnitRow, row) for row in rows]


def _build(kind: str, app: LedgerApplication, cast: Cast, projection_url: str) -> World:
    register_cast(app, cast, compressed_run(datetime.now(UTC)).registered_at)
    journeys = {variant: new_journey(cast, variant, index) for index, variant in enumerate(VARIANTS)}
    steps: dict[str, list[Step]] = {variant: [] for variant in journeys}
    for variant, step in interleave([[(v, s) for s in j.steps()] for v, j in journeys.items()]):
        outcome = app.submit(step.envelope)
        assert (outcome.code or "accepted") == (step.expect or "accepted"), (tag_of(step), outcome)
        if step.expect is None:
            steps[variant].append(step)
    temp, later, changed_at = _registry_changes(app, cast)
    records = list(app.records())
    traces: dict[tuple[str, str], Trace] = {}
    store = ProjectionStore(projection_url)
    try:
        for record in records:
            store.apply([record])
            for row in _changed_units(store, record[0]):
                traces.setdefault((row.coi, row.unit_id), []).append((_tag(record[2]), row.status, row.holds))
        return World(
            kind, app, cast, journeys, steps, (temp, later), changed_at, records, store.snapshot(), traces
        )
    finally:
        store.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cast: Cast
) -> Iterator[World]:
    """Built once per store kind: the tests only read it (in databases of its own, so the
    other tests' fixtures, which drop their tables, cannot touch it)."""
    folder = tmp_path_factory.mktemp("audit-world")
    ledger = fresh_store(request.param, folder / "ledger.sqlite", "coi_audit_ledger", LEDGER_TABLES)
    projections = fresh_store(
        request.param, folder / "proj.sqlite", "coi_audit_projections", [*TABLES, SCHEMA_TABLE]
    )
    app = LedgerApplication(next(ledger))
    try:
        yield _build(request.param, app, cast, next(projections))
    finally:
        app.close()
        for cleanup in (ledger, projections):
            next(cleanup, None)  # drops its tables


def _tag(raw: str) -> str:
    return str(type(body_of(raw)).__struct_config__.tag)


# ------------------------------------------------------------------ 1. unit status


# A released product's rows up to its handover to the courier, and from its arrival on.
DISPATCHED: Trace = [
    ("manufacturing_completed", "quarantined", ()),  # its batch not yet dispositioned
    ("disposition", "released", ()),
    ("shipment_dispatched", "in_transit", ()),
    ("custody_transferred", "in_transit", ()),
]
DELIVERED: Trace = [
    ("custody_transferred", "in_transit", ()),
    ("shipment_received", "released", ()),  # at the hospital
    ("bedside_identity_verified", "released", ()),
    ("infused", "infused", ()),
]


def test_a_products_status_follows_its_journey_as_a_person_reads_it(world: World) -> None:
    coi = world.journeys["happy"].coi
    assert world.traces[(coi, f"P-{coi}-1")] == DISPATCHED + DELIVERED
    assert world.traces[(coi, f"BAG-{coi}")] == [
        ("apheresis_collected", "in_custody", ()),
        ("custody_transferred", "in_custody", ()),
        ("custody_transferred", "in_custody", ()),
        ("material_received", "in_custody", ()),
        ("manufacturing_started", "consumed", ()),
    ]


def test_a_rejected_batchs_product_reads_rejected_where_it_stays(world: World) -> None:
    coi, recv = world.journeys["qc_failure"].coi, "recv.ssf"
    assert world.traces[(coi, f"P-{coi}-1")] == [
        ("manufacturing_completed", "quarantined", ()),
        ("disposition", "rejected", ()),
    ]
    bag, product = [u for u in world.rows(UNITS, coi) if u.unit_id in (f"P-{coi}-1", f"BAG-{coi}")]
    assert (product.status, product.custodian, product.site, product.shipment_id) == (
        "rejected", recv, "US-SSF", None,
    )  # fmt: skip
    assert (bag.unit_id, bag.status, bag.batch_id) == (f"BAG-{coi}", "consumed", f"B-{coi}")


def test_an_excursions_hold_is_on_the_product_while_open_and_gone_after_release(world: World) -> None:
    coi = world.journeys["excursion"].coi
    hold, _ = excursion_ids(world.step("excursion", "temperature_excursion").event_id)
    assert world.traces[(coi, f"P-{coi}-1")] == [
        *DISPATCHED,
        ("temperature_excursion", "in_transit", (hold,)),
        ("hold_released", "in_transit", ()),
        *DELIVERED,
    ]


def test_every_unit_ends_where_the_therapy_says(world: World) -> None:
    final = {
        (u.coi, u.unit_id): (u.kind, u.status, u.holds, u.custodian, u.site, u.bedside, u.batch_id)
        for u in world.rows(UNITS)
    }
    expected = {}
    for variant, j in world.journeys.items():
        h, f = j.hospital[3:].lower(), j.factory[3:].lower()
        product = {
            "happy": ("infused", f"nurse.{h}", j.hospital, "MATCH"),
            "qc_failure": ("rejected", f"recv.{f}", j.factory, None),
            "excursion": ("infused", f"nurse.{h}", j.hospital, "MATCH"),
            "identity_mismatch": ("released", f"nurse.{h}", j.hospital, "MISMATCH"),  # infusion refused
            "retest": ("infused", f"nurse.{h}", j.hospital, "MATCH"),
        }[variant]
        status, custodian, site, checked = product
        batch = f"B-{j.coi}"  # made in, consumed into (the bag), sampled from
        expected[(j.coi, f"P-{j.coi}-1")] = ("product", status, (), custodian, site, checked, batch)
        expected[(j.coi, f"BAG-{j.coi}")] = ("bag", "consumed", (), f"recv.{f}", j.factory, None, batch)
        expected[(j.coi, f"S-{j.coi}")] = ("sample", "in_custody", (), f"analyst.{f}", j.factory, None, batch)
    assert final == expected


# ------------------------------------------------------------------ 2. bedside and QC outcomes


def test_bedside_and_qc_records_say_what_they_decided(world: World) -> None:
    outcomes = {r.sequence: r.outcome for r in world.rows(RECORDS)}
    mismatch = world.step("identity_mismatch", "bedside_identity_verified")
    match = world.step("happy", "bedside_identity_verified")
    assert (outcomes[world.sequence(mismatch)], outcomes[world.sequence(match)]) == ("MISMATCH", "MATCH")

    coi = world.journeys["qc_failure"].coi
    qc = [(r.test, r.result, r.specification, r.passed, r.retest) for r in world.rows(QC, coi)]
    assert qc == [
        ("sterility", "growth detected day 5", "conforms", False, False),
        ("mycoplasma", "conforms", "conforms", True, False),
        ("endotoxin", "< 0.1 EU/mL", "<= 0.5 EU/mL", True, False),
        *((test, "conforms", "conforms", True, False) for test in ("identity", "potency", "viability")),
    ]
    results = [outcomes[r.sequence] for r in world.rows(QC, coi)]
    assert results == ["FAIL", *["PASS"] * 5]
    decisions = [r.outcome for r in world.rows(RECORDS, coi) if r.event_type == "disposition"]
    assert decisions == ["REJECTED"]

    coi = world.journeys["retest"].coi
    endotoxin = [(r.result, r.passed, r.retest, outcomes[r.sequence]) for r in world.rows(QC, coi)
                 if r.test == "endotoxin"]  # fmt: skip
    assert endotoxin == [("2.1 EU/mL", False, False, "FAIL"), ("< 0.1 EU/mL", True, True, "PASS")]


# ------------------------------------------------------------------ 3. the register


def test_a_failed_sterility_test_opens_a_deviation_that_stays_open(world: World) -> None:
    coi = world.journeys["qc_failure"].coi
    failed = world.step("qc_failure", "qc_result_recorded")
    rejected = world.step("qc_failure", "disposition")
    register = [
        (r.kind, r.item_id, r.summary, r.opened_sequence, r.opened_by, r.batch_id, r.closed_sequence,
         r.closed_by, r.outcome)
        for r in world.rows(REGISTER, coi)
    ]  # fmt: skip
    assert register == [
        (
            "deviation", failure_deviation(failed.event_id),
            "failed release test sterility: result 'growth detected day 5', specification 'conforms'",
            world.sequence(failed), "cellq.ssf", f"B-{coi}", None, None, None,
        ),
        (
            "disposition", f"B-{coi}", f"batch B-{coi} rejected", world.sequence(rejected), "qa.ssf",
            f"B-{coi}", world.sequence(rejected), "qa.ssf", "rejected",
        ),
    ]  # fmt: skip


def test_an_excursion_opens_a_hold_a_deviation_and_itself_closed_by_qa(world: World) -> None:
    j = world.journeys["excursion"]
    excursion = world.step("excursion", "temperature_excursion")
    hold, deviation = excursion_ids(excursion.event_id)
    closed, released = world.step("excursion", "deviation_closed"), world.step("excursion", "hold_released")
    opened_at = world.sequence(excursion)
    outcome = "logger data reviewed: product stayed below -150 C at the bag; no impact"
    rows = {(r.kind, r.item_id): r for r in world.rows(REGISTER, j.coi) if r.opened_sequence == opened_at}
    assert {
        key: (r.opened_by, r.links, r.batch_id, r.closed_sequence, r.closed_by, r.outcome)
        for key, r in rows.items()
    } == {
        ("deviation", deviation): ("logger.wc", (), f"B-{j.coi}", world.sequence(closed), "qa.lei", outcome),
        ("excursion", str(excursion.event_id)): (
            "logger.wc", (hold, deviation), f"B-{j.coi}", world.sequence(closed), "qa.lei", outcome,
        ),
        ("hold", hold): (
            "logger.wc", (f"P-{j.coi}-1",), f"B-{j.coi}", world.sequence(released), "qa.lei",
            "excursion assessed, no impact",
        ),
    }  # fmt: skip
    assert rows[("hold", hold)].summary.startswith(f"hold on P-{j.coi}-1 after temperature excursion on")


def test_a_failed_test_retested_under_its_deviation_is_closed_by_qa_before_release(world: World) -> None:
    coi = world.journeys["retest"].coi
    bodies = [(s, body_of(s.envelope.decode())) for s in world.steps["retest"]]
    failed, retested = [s for s, b in bodies if isinstance(b, ev.QcResultRecorded) and b.test == "endotoxin"]
    deviation = world.retest_deviation()
    assert deviation == failure_deviation(failed.event_id)
    authorised, closed = world.step("retest", "retest_authorised"), world.step("retest", "deviation_closed")
    released = world.step("retest", "disposition")
    assert world.sequence(failed) < world.sequence(authorised) < world.sequence(retested)
    assert world.sequence(retested) < world.sequence(closed) < world.sequence(released)
    (row,) = [r for r in world.rows(REGISTER, coi) if r.kind == "deviation"]
    assert (row.item_id, row.summary, row.opened_by, row.closed_sequence, row.closed_by, row.outcome) == (
        deviation, "failed release test endotoxin: result '2.1 EU/mL', specification '<= 0.5 EU/mL'",
        "cellq.ssf", world.sequence(closed), "qa.ssf", "invalid assay run: retest conforms",
    )  # fmt: skip
    (record,) = [r for r in world.rows(RECORDS, coi) if r.event_type == "retest_authorised"]
    assert (record.actor, record.reason) == (
        "qa.ssf", "assay run suspect: spike recovery out of range; retest from the retained sample",
    )  # fmt: skip
    (signature,) = [r for r in world.rows(SIGNATURES, coi) if r.sequence == world.sequence(authorised)]
    assert (signature.principal, signature.printed_name, signature.meaning) == (
        "qa.ssf", "Quinn QA SSF", "approved",
    )  # fmt: skip


def test_corrections_and_dispositions_are_closed_at_once(world: World) -> None:
    coi = world.journeys["happy"].coi
    correction = world.step("happy", "record_corrected")
    disposition = world.step("happy", "disposition")
    collected = world.step("happy", "apheresis_collected")
    rows = [
        (r.kind, r.item_id, r.summary, r.links, r.opened_sequence, r.closed_sequence, r.closed_by, r.outcome)
        for r in world.rows(REGISTER, coi)
    ]
    assert rows == [
        (
            "disposition", f"B-{coi}", f"batch B-{coi} released", (), world.sequence(disposition),
            world.sequence(disposition), "qa.ssf", "released",
        ),
        (
            "correction", str(correction.event_id), "volume_ml: '180.0' -> '182.0'",
            (str(collected.event_id),), world.sequence(correction), world.sequence(correction), "qa.ssf",
            "corrected",
        ),
    ]  # fmt: skip
    by_variant = {j.coi: variant for variant, j in world.journeys.items()}
    kinds = sorted((by_variant[r.coi], r.kind) for r in world.rows(REGISTER))
    assert kinds == [  # the bedside mismatch refused the infusion and opened nothing
        ("excursion", "correction"), ("excursion", "deviation"), ("excursion", "disposition"),
        ("excursion", "excursion"),
        ("excursion", "hold"), ("happy", "correction"), ("happy", "disposition"),
        ("identity_mismatch", "disposition"), ("qc_failure", "deviation"), ("qc_failure", "disposition"),
        ("retest", "correction"), ("retest", "deviation"), ("retest", "disposition"),
    ]  # fmt: skip
    (record,) = [r for r in world.rows(RECORDS, coi) if r.event_type == "record_corrected"]
    assert (record.corrects, record.reason) == (
        world.sequence(collected), "volume transcribed wrongly from the apheresis log",
    )  # fmt: skip


def test_a_retest_qa_authorised_and_a_hold_and_deviation_opened_by_hand(
    registered: LedgerApplication, cast: Cast, projection_url: str
) -> None:
    """A failed sterility test retested under its deviation, and QA's own deviation and hold on
    the product, all closed before the batch is released."""
    j = new_journey(cast, "qc_failure")
    done = [s for s in j.steps() if tag_of(s) != "disposition"][:-1]  # no decision, no refused dispatch
    assert [tag_of(s) for s in done[-6:]] == ["qc_result_recorded"] * 6
    batch, product = f"B-{j.coi}", f"P-{j.coi}-1"
    failed = failure_deviation(done[-6].event_id)
    qa, cellq = cast["qa.ssf"], cast["cellq.ssf"]

    def at(seconds: int) -> datetime:
        return j.clock + timedelta(seconds=seconds)

    later = [
        envelope(ev.DeviationOpened, qa, at(1), coi=j.coi, deviation_id="D-RECALL", severity="minor",
                 description="media lot recalled by its supplier", batch_id=batch),
        envelope(ev.HoldPlaced, qa, at(2), coi=j.coi, hold_id="H-RECALL", unit_ids=[product],
                 reason="until the recall is assessed"),
        envelope(ev.RetestAuthorised, qa, at(3), coi=j.coi, batch_id=batch, deviation_id=failed,
                 test="sterility", reason="growth traced to the sampling"),
        envelope(ev.QcResultRecorded, cellq, at(4), coi=j.coi, batch_id=batch, sample_id=f"S-{j.coi}",
                 test="sterility", method="sterility assay (Cell Q)", result="conforms",
                 specification="conforms", passed=True),
        envelope(ev.DeviationClosed, qa, at(5), coi=j.coi, deviation_id=failed,
                 outcome="sampling contamination; the retest conforms"),
        envelope(ev.DeviationClosed, qa, at(6), coi=j.coi, deviation_id="D-RECALL",
                 outcome="this batch used another lot"),
        envelope(ev.HoldReleased, qa, at(7), coi=j.coi, hold_id="H-RECALL", reason="recall assessed"),
        envelope(ev.Disposition, qa, at(8), coi=j.coi, batch_id=batch, decision="released"),
    ]  # fmt: skip
    outcomes = list(registered.submit_many([s.envelope for s in done] + later))
    assert [(o.code, o.message) for o in outcomes if o.status != "accepted"] == []
    store = ProjectionStore(projection_url)
    try:
        rebuild(registered, store)
        snapshot = store.snapshot()
    finally:
        store.close()
    sequences = [r[0] for r in registered.records()]
    failed_at, seq = sequences[-len(later) - 6], sequences[-len(later) :]  # seq: of `later`
    qc = [(r.sequence, r.test, r.passed, r.retest) for r in snapshot.rows(QC) if r.test == "sterility"]
    assert qc == [(failed_at, "sterility", False, False), (seq[3], "sterility", True, True)]
    register = [
        (r.kind, r.item_id, r.summary, r.severity, r.batch_id, r.links, r.opened_sequence, r.closed_sequence,
         r.outcome)
        for r in snapshot.rows(REGISTER)
    ]  # fmt: skip
    assert register == [
        ("deviation", failed,
         "failed release test sterility: result 'growth detected day 5', specification 'conforms'",
         None, batch, (), failed_at, seq[4], "sampling contamination; the retest conforms"),
        ("deviation", "D-RECALL", "media lot recalled by its supplier", "minor", batch, (), seq[0], seq[5],
         "this batch used another lot"),
        ("hold", "H-RECALL", f"hold on {product}", None, batch, (product,), seq[1], seq[6],
         "recall assessed"),
        ("disposition", batch, f"batch {batch} released", None, batch, (), seq[7], seq[7], "released"),
    ]  # fmt: skip
    (unit,) = [u for u in snapshot.rows(UNITS) if u.unit_id == product]
    assert (unit.status, unit.holds) == ("released", ())


# ------------------------------------------------------------------ 4. registry history


def test_the_registry_history_says_who_changed_which_key_on_whose_authority_and_why(world: World) -> None:
    temp, later = world.temp
    admin = world.cast.admin.signer.keyid
    history = [
        (
            r.principal_id,
            r.change,
            r.keyid,
            r.authority,
            r.actor,
            r.printed_name,
            r.roles,
            r.routine,
            r.reason,
        )
        for r in world.rows(REGISTRY)
    ]
    # each member registered bound to its own site (issue 14)
    assert {r.principal_id: r.sites for r in world.rows(REGISTRY) if r.change == "registered"}[
        "nurse.bdw"
    ] == ("US-BDW",)
    assert len(history) == len(world.cast.members) + 3
    assert history[0] == (
        "admin.root",
        "registered",
        admin,
        (admin,),
        "admin.root",
        "Riley Root",
        ("admin",),
        False,
        None,
    )
    assert history[-3:] == [
        (
            "temp.x",
            "registered",
            temp.signer.keyid,
            (admin,),
            "admin.root",
            "Tess Temp",
            ("qc",),
            False,
            None,
        ),
        (
            "temp.x",
            "key_rotated",
            later.signer.keyid,
            (admin, temp.signer.keyid),
            "admin.root",
            None,
            (),
            True,
            "yearly rotation",
        ),
        ("temp.x", "revoked", later.signer.keyid, (admin,), "admin.root", None, (), False, "laptop stolen"),
    ]
    assert {r.principal_id for r in world.rows(REGISTRY)} == {*world.cast.members, "temp.x"}
    # Made at one time and effective then: valid from (registered, rotated), as of (revoked).
    changes = world.rows(REGISTRY)[-3:]
    assert [(r.occurred_at, r.effective_at) for r in changes] == [(world.changed_at, world.changed_at)] * 3


# ------------------------------------------------------------------ 5. signature manifest


def test_a_persons_signature_carries_its_manifestation_and_a_devices_none(world: World) -> None:
    cast = world.cast
    coi = world.journeys["happy"].coi
    signatures = world.rows(SIGNATURES, coi)

    def signed(step: Step) -> list[tuple[Any, ...]]:
        return [
            (s.position, s.keyid, s.principal, s.printed_name, s.signed_at, s.meaning)
            for s in signatures
            if s.sequence == world.sequence(step)
        ]

    def at(step: Step) -> datetime:
        return body_of(step.envelope.decode()).occurred_at.astimezone(UTC)

    qa, bedside = world.step("happy", "disposition"), world.step("happy", "bedside_identity_verified")
    started = world.step("happy", "manufacturing_started")
    assert signed(qa) == [(0, cast["qa.ssf"].signer.keyid, "qa.ssf", "Quinn QA SSF", at(qa), "approved")]
    assert signed(bedside) == [
        (0, cast["nurse.bdw"].signer.keyid, "nurse.bdw", "Noor Nurse BDW", at(bedside), "verified"),
        (1, cast["witness.bdw"].signer.keyid, "witness.bdw", "Wes Witness BDW", at(bedside), "witnessed"),
    ]
    assert signed(started) == [(0, cast["shuttle.ssf"].signer.keyid, "shuttle.ssf", None, None, None)]
    # Every signature of every record is in the manifest.
    assert len(world.rows(SIGNATURES)) == sum(len(_signed.decode(e).signatures) for *_, e in world.records)


# ------------------------------------------------------------------ 6. identifiers and genealogy


def test_every_identifier_maps_to_its_patient(world: World) -> None:
    for variant, j in world.journeys.items():
        coi = j.coi
        named = {(r.identifier, r.kind) for r in world.rows(IDENTIFIERS) if r.coi == coi}
        expected = {
            (coi, "coi"), (j.din, "din"), (f"ORD-{coi[-6:]}", "order"), (f"L1-{coi}", "label"),
            (f"L2-{coi}", "label"), (f"BAG-{coi}", "bag"), (f"B-{coi}", "batch"),
            (f"CART-{coi}", "cartridge"), (f"SHUTTLE-{j.factory[3:]}-03", "shuttle"),
            (f"P-{coi}-1", "product"), (f"S-{coi}", "sample"),
            *((str(s.event_id), "event") for s in world.steps[variant]),
        }  # fmt: skip
        if variant != "qc_failure":
            expected |= {(f"SH-{coi}", "shipment"), ("LOG-77", "logger")}
        if variant == "qc_failure":
            expected.add((failure_deviation(world.step(variant, "qc_result_recorded").event_id), "deviation"))
        if variant == "excursion":
            hold, deviation = excursion_ids(world.step(variant, "temperature_excursion").event_id)
            expected |= {(hold, "hold"), (deviation, "deviation")}
        if variant == "retest":
            expected.add((world.retest_deviation(), "deviation"))
        assert named == expected, variant
    # An identifier of one patient never points at another.
    owners: dict[tuple[str, str], set[str]] = {}
    for r in world.rows(IDENTIFIERS):
        owners.setdefault((r.identifier, r.kind), set()).add(r.coi)
    shared = {key: cois for key, cois in owners.items() if len(cois) > 1}
    assert (
        shared
        == {  # the devices, which serve every patient
            ("LOG-77", "logger"): {j.coi for v, j in world.journeys.items() if v != "qc_failure"},
            **{
                (f"SHUTTLE-{site[3:]}-03", "shuttle"): {
                    j.coi for j in world.journeys.values() if j.factory == site
                }
                for site in ("US-SSF", "NL-LEI")
            },
        }
    )


def test_genealogy_links_patient_donation_bag_batch_products_shipment_and_infusion(world: World) -> None:
    j = world.journeys["happy"]
    coi = j.coi
    bag, batch, product = f"BAG-{coi}", f"B-{coi}", f"P-{coi}-1"
    edges = {(e.parent_kind, e.parent, e.relation, e.child_kind, e.child) for e in world.rows(GENEALOGY, coi)}
    assert edges == {
        ("patient", coi, "donated", "donation", j.din),
        ("donation", j.din, "collected as", "bag", bag),
        ("label", f"L1-{coi}", "applied to", "bag", bag),
        ("bag", bag, "consumed into", "batch", batch),
        ("batch", batch, "made in", "cartridge", f"CART-{coi}"),
        ("batch", batch, "produced", "product", product),
        ("batch", batch, "sampled", "sample", f"S-{coi}"),
        ("product", product, "shipped in", "shipment", f"SH-{coi}"),
        ("product", product, "infused into", "patient", coi),
    }
    rejected = world.journeys["qc_failure"].coi
    assert {e.relation for e in world.rows(GENEALOGY, rejected)} == {
        "donated", "collected as", "applied to", "consumed into", "made in", "produced", "sampled",
    }  # fmt: skip


# ------------------------------------------------------------------ 7. stages


def test_vein_to_vein_is_infusion_less_apheresis(world: World) -> None:
    for variant in ("happy", "excursion", "retest"):
        coi = world.journeys[variant].coi
        collected, infused = world.step(variant, "apheresis_collected"), world.step(variant, "infused")
        start = body_of(collected.envelope.decode()).occurred_at.astimezone(UTC)
        end = body_of(infused.envelope.decode()).occurred_at.astimezone(UTC)
        stages = {(s.stage, s.subject): s for s in world.rows(STAGES, coi)}
        v2v = stages[("vein to vein", f"P-{coi}-1")]
        assert (v2v.started_at, v2v.ended_at, v2v.seconds) == (start, end, (end - start).total_seconds())
        assert (v2v.start_sequence, v2v.end_sequence) == (world.sequence(collected), world.sequence(infused))
        assert sorted(stage for stage, _ in stages) == sorted([
            "enrolment to collection", "collection to manufacturing site", "manufacturing",
            "QC and disposition", "release to dispatch", "shipment", "receipt to infusion", "vein to vein",
        ])  # fmt: skip
        assert all(s.seconds == (s.ended_at - s.started_at).total_seconds() > 0 for s in stages.values())
    rejected = world.journeys["qc_failure"].coi
    assert [s.stage for s in world.rows(STAGES, rejected)] == [
        "QC and disposition", "collection to manufacturing site", "enrolment to collection", "manufacturing",
    ]  # fmt: skip


# ------------------------------------------------------------------ 8. live in any order equals a rebuild


@pytest.fixture
def projection_url(world: World, tmp_path: Path) -> Iterator[str]:
    """An empty projection store of the world's kind."""
    yield from fresh_store(world.kind, tmp_path / "proj.sqlite", "coi_audit_live", [*TABLES, SCHEMA_TABLE])


def _as_delivered(records: list[tuple[int, datetime, str]], seed: int) -> list[Record]:
    """The records as a projector may receive them from coi.ledger's partitions: each patient's
    (and the registry's) in log order, the patients interleaved at random; recorded_at as the
    text a LedgerRecord carries."""
    queues: dict[str, list[Record]] = {}
    for sequence, recorded_at, raw in records:
        key = getattr(body_of(raw), "coi", None) or "registry"
        queues.setdefault(key, []).append((sequence, recorded_at.isoformat(), raw))
    pending = [queue[::-1] for queue in queues.values()]  # each popped from its end
    rng = random.Random(seed)
    delivered = []
    while pending:
        queue = rng.choice(pending)
        delivered.append(queue.pop())
        if not queue:
            pending.remove(queue)
    return delivered


def _batches(records: list[Record], sizes: tuple[int, ...]) -> Iterator[list[Record]]:
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(records):
            return
        yield records[start : start + size]
        start += size


def _counted(store: ProjectionStore, size: int) -> list[str]:
    """The store's patients held `size` at most; returns the COIs it replays, as it does."""
    loads: list[str] = []

    def load(coi: str) -> list[Record]:
        loads.append(coi)
        return store._patient(coi)

    store.patients = Patients(load, size)
    return loads


@pytest.mark.parametrize("seed", [1, 2])
def test_live_projection_in_any_delivery_order_equals_a_rebuild(
    world: World, projection_url: str, seed: int
) -> None:
    delivered = _as_delivered(world.records, seed)
    assert [r[0] for r in delivered] != [r[0] for r in world.records]  # not the log's order
    store = ProjectionStore(projection_url)
    try:
        # Two patients held: the others are replayed from what is projected, mid-batch too.
        loads = _counted(store, size=2)
        seen = 0  # patients first met in a batch (every batch starts with none held)
        for batch in _batches(delivered, (1, 13, 2, 40, 5, 27)):
            assert store.apply(batch) == []
            seen += len({coi for *_, raw in batch if (coi := getattr(body_of(raw), "coi", None))})
        assert len(loads) > seen  # some were dropped from the cache and replayed
        live = store.snapshot()
        assert live == world.snapshot  # one record a batch, in log order
        for batch in _batches(delivered, (50, 3)):  # all of it again
            assert store.apply(batch) == []
        assert store.snapshot() == live
        assert rebuild(world.app, store).records == len(world.records)
        assert store.snapshot() == live
    finally:
        store.close()


def test_a_patient_held_is_not_replayed_batch_after_batch(world: World, projection_url: str) -> None:
    store = ProjectionStore(projection_url)
    try:
        loads = _counted(store, CACHED_PATIENTS)
        for batch in _batches(_as_delivered(world.records, 3), (10,)):
            assert store.apply(batch) == []
        assert sorted(loads) == sorted(j.coi for j in world.journeys.values())  # once each
        assert store.snapshot() == world.snapshot
    finally:
        store.close()


# ------------------------------------------------------------------ 9. the earlier version's database


def _connect(url: str, postgres: bool) -> Any:
    if postgres:
        return psycopg.connect(url, autocommit=True)
    return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)


def test_a_projection_database_of_the_earlier_version_migrates_and_a_rebuild_fills_it(
    world: World, projection_url: str
) -> None:
    postgres = world.kind == "postgres"
    old = _connect(projection_url, postgres)
    try:
        assert migrate(old, postgres, MIGRATIONS[:1]) == ["custody-projection-tables"]
        # Its projector's rows: current custody under the column's old name.
        columns = ", ".join(f if f != "custody" else "status" for f in CurrentCustody.__struct_fields__)
        marks = ", ".join(["?"] * len(CurrentCustody.__struct_fields__))
        insert = placeholders(f"INSERT INTO proj_custody_current ({columns}) VALUES ({marks})", postgres)
        current = world.snapshot.current
        assert {c.custody for c in current} == {"held", "received", "consumed", "infused"}
        old.cursor().executemany(insert, [values(row, postgres) for row in current])
    finally:
        old.close()

    store = ProjectionStore(projection_url)
    try:
        assert store.migrations == [
            "custody-current-status-is-custody",
            "audit-read-models",
            "registry-history-sites",
        ]
        migrated = store.snapshot()
        assert migrated.current == current  # the custody column holds what status held
        assert {name: rows for name, rows in migrated.tables.items() if rows} == {
            "proj_custody_current": current
        }
        assert rebuild(world.app, store).set_aside == []
        assert store.snapshot() == world.snapshot
    finally:
        store.close()
