"""Custody read models: where each journey leaves its units, a bag's chain of custody, and a
projector that is sent the same records twice, crashes and resumes, or fails mid-batch."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from aggregates.base import body_of
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import VARIANTS, Cast, Journey
from ledger.store.migrations import SCHEMA_TABLE
from projections.custody import CurrentCustody, Record
from projections.rebuild import rebuild
from projections.store import TABLES, ProjectionStore, Snapshot
from tests.stores import RawStore, fresh_store
from tests.support import advance, new_journey

CONSUMER, TOPIC = "custody-projector", "coi.ledger"


@pytest.fixture(params=["sqlite", "postgres"], ids=lambda kind: f"projections-{kind}")
def projection_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty projection store of each kind."""
    yield from fresh_store(
        request.param, tmp_path / "projections.sqlite", "coi_projection_tests", [*TABLES, SCHEMA_TABLE]
    )


@pytest.fixture
def projections(projection_url: str) -> Iterator[ProjectionStore]:
    store = ProjectionStore(projection_url)
    yield store
    store.close()


def _journeys(app: LedgerApplication, cast: Cast) -> dict[str, Journey]:
    """One patient per variant, each taken to its end."""
    journeys = {variant: new_journey(cast, variant, index) for index, variant in enumerate(VARIANTS)}
    for journey in journeys.values():
        advance(app, journey)
    return journeys


def _current(snapshot: Snapshot, coi: str, unit_id: str) -> CurrentCustody:
    (found,) = [c for c in snapshot.current if (c.coi, c.unit_id) == (coi, unit_id)]
    return found


def _who(journey: Journey) -> tuple[str, str]:
    """The journey's hospital nurse and factory receiver."""
    return f"nurse.{journey.hospital[3:].lower()}", f"recv.{journey.factory[3:].lower()}"


def test_each_journey_leaves_its_units_where_the_therapy_says(
    registered: LedgerApplication, cast: Cast, projections: ProjectionStore
) -> None:
    journeys = _journeys(registered, cast)
    assert rebuild(registered, projections).records == len(list(registered.records()))
    snapshot = projections.snapshot()
    expected = {  # the product: custodian, status, site
        "happy": ("nurse", "infused", "hospital"),
        "qc_failure": ("recv", "held", "factory"),  # rejected: it never leaves the factory
        "excursion": ("nurse", "infused", "hospital"),  # released from its hold, then infused
        "identity_mismatch": ("nurse", "received", "hospital"),  # infusion was refused
        "retest": ("nurse", "infused", "hospital"),  # released after a conforming retest
    }
    for variant, journey in journeys.items():
        coi, (nurse, recv) = journey.coi, _who(journey)
        f = journey.factory[3:].lower()
        people = {"nurse": nurse, "recv": recv}
        places = {"hospital": journey.hospital, "factory": journey.factory}
        custodian, status, site = expected[variant]
        product = _current(snapshot, coi, f"P-{coi}-1")
        assert (product.kind, product.custodian, product.custody, product.site) == (
            "product", people[custodian], status, places[site],
        ), variant  # fmt: skip
        assert product.batch_id == f"B-{coi}"
        assert product.shipment_id == (None if variant == "qc_failure" else f"SH-{coi}")
        bag = _current(snapshot, coi, f"BAG-{coi}")
        assert (bag.kind, bag.custodian, bag.custody, bag.site, bag.batch_id) == (
            "bag", recv, "consumed", journey.factory, f"B-{coi}",
        )  # fmt: skip
        sample = _current(snapshot, coi, f"S-{coi}")
        assert (sample.kind, sample.custodian, sample.custody) == ("sample", f"analyst.{f}", "held")
    assert len(snapshot.current) == 3 * len(journeys)


def test_a_bags_timeline_runs_from_the_nurse_via_the_courier_to_the_factory(
    registered: LedgerApplication, cast: Cast, projections: ProjectionStore
) -> None:
    journey = new_journey(cast)
    advance(registered, journey)
    projections.apply(registered.records())
    coi, (nurse, recv) = journey.coi, _who(journey)
    timeline = projections.snapshot().timeline

    bag = [
        (r.event_type, r.from_custodian, r.to_custodian, r.custodian)
        for r in timeline
        if r.unit_id == f"BAG-{coi}"
    ]
    assert bag == [
        ("apheresis_collected", None, None, nurse),
        ("custody_transferred", nurse, "courier.wc", "courier.wc"),
        ("custody_transferred", "courier.wc", recv, recv),
        ("material_received", None, None, recv),
        ("manufacturing_started", None, None, recv),
    ]
    product = [r for r in timeline if r.unit_id == f"P-{coi}-1"]
    assert [r.event_type for r in product] == [
        "manufacturing_completed", "shipment_dispatched", "custody_transferred", "custody_transferred",
        "shipment_received", "infused",
    ]  # fmt: skip
    assert product[0].parents == (f"BAG-{coi}",)
    assert [r.custodian for r in product] == [recv, recv, "courier.wc", nurse, nurse, nurse]
    assert product[-2].location == "cell therapy lab"
    assert all(r.coi == coi for r in timeline)
    assert [r.sequence for r in timeline] == sorted(r.sequence for r in timeline)


def test_applying_the_same_records_again_changes_nothing(
    registered: LedgerApplication, cast: Cast, projections: ProjectionStore
) -> None:
    _journeys(registered, cast)
    records = list(registered.records())
    projections.apply(records)
    once = projections.snapshot()
    projections.apply(records)
    for start in range(0, len(records), 7):
        projections.apply(records[start : start + 10])  # overlapping batches
    projections.apply(reversed(records))  # older records after newer ones
    assert projections.snapshot() == once


def _log(records: list[Record], partitions: int = 2) -> dict[int, list[Record]]:
    """The records as the coi.ledger topic holds them: keyed by COI (registry records by
    principal, here all in one partition), so each patient's records keep their order; the
    time they were recorded is text, as a LedgerRecord carries it."""
    log: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    keys: dict[str, int] = {}
    for sequence, recorded_at, envelope in records:
        key = getattr(body_of(envelope), "coi", None) or "registry"
        assert isinstance(recorded_at, datetime)
        log[keys.setdefault(key, len(keys) % partitions)].append(
            (sequence, recorded_at.isoformat(), envelope)
        )
    return log


class Crash(Exception):
    pass


def _poll(store: ProjectionStore, log: dict[int, list[Record]], size: int, crash: bool = False) -> int:
    """One round of a projector: up to `size` messages per partition from its stored
    positions, applied together with the positions after them; returns how many."""
    at = store.positions(CONSUMER, TOPIC)
    batch: list[Record] = []
    positions: dict[int, int] = {}
    for partition, messages in log.items():
        taken = messages[at.get(partition, 0) :][:size]
        batch += taken
        if taken:
            positions[partition] = at.get(partition, 0) + len(taken)
    store.apply(_dying(batch) if crash else batch, positions, consumer=CONSUMER, topic=TOPIC)
    return len(batch)


def _dying(batch: list[Record]) -> Iterator[Record]:
    """The batch, until the process dies halfway through it."""
    yield from batch[: len(batch) // 2]
    raise Crash


def test_a_projector_that_crashes_resumes_from_its_positions_to_what_a_rebuild_gives(
    registered: LedgerApplication, cast: Cast, projection_url: str
) -> None:
    _journeys(registered, cast)
    records = list(registered.records())
    log = _log(records)

    first = ProjectionStore(projection_url)
    for _ in range(3):
        _poll(first, log, 8)
    with pytest.raises(Crash):
        _poll(first, log, 8, crash=True)
    first.close()

    resumed = ProjectionStore(projection_url)
    try:
        assert resumed.positions(CONSUMER, TOPIC) == {0: 24, 1: 24}  # the dying batch left nothing
        while _poll(resumed, log, 8):
            pass
        assert resumed.positions(CONSUMER, TOPIC) == {p: len(messages) for p, messages in log.items()}
        live = resumed.snapshot()
        assert len(live.current) == 3 * len(VARIANTS)
        assert rebuild(registered, resumed).records == len(records)
        assert resumed.snapshot() == live
        # The rebuild keeps the positions: the projector carries on from where it stopped.
        assert resumed.positions(CONSUMER, TOPIC) == {p: len(messages) for p, messages in log.items()}
    finally:
        resumed.close()


def _with_nul_location(raw: RawStore, sequence: int) -> None:
    """The issue's record, written straight into the store (the decoder refuses it now): a
    custody transfer whose location holds a NUL, which PostgreSQL's text columns refuse."""
    row = raw.row(sequence)
    state = msgspec.json.decode(row[3])
    env = msgspec.json.decode(state["envelope"])
    body = msgspec.json.decode(base64.b64decode(env["payload"]))
    body["location"] = "dock\u0000 3"
    env["payload"] = base64.b64encode(msgspec.json.encode(body)).decode()
    state["envelope"] = msgspec.json.encode(env).decode()
    raw.set_row(sequence, (*row[:3], msgspec.json.encode(state)))


def test_a_record_that_cannot_be_projected_is_set_aside_and_the_rest_projected(
    registered: LedgerApplication, cast: Cast, store_url: str, projections: ProjectionStore,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    _journeys(registered, cast)
    records = list(registered.records())
    (bad, *_) = [
        seq for seq, _, env in records if type(body_of(env)).__struct_config__.tag == "custody_transferred"
    ]
    _with_nul_location(RawStore(store_url), bad)
    unreadable = (records[-1][0] + 1, records[-1][1], "not an envelope")
    with caplog.at_level(logging.ERROR, logger="coi.projections"):
        projections.apply([*registered.records(), unreadable])  # as the projector applies a batch
        live = projections.snapshot()
        assert rebuild(registered, projections).records == len(records)
    assert projections.snapshot() == live
    assert max(r.sequence for r in live.timeline) > bad  # it went on past the record
    assert f"sequence {unreadable[0]} set aside" in caplog.text
    if projections.postgres:  # SQLite stores the NUL
        assert f"sequence {bad} set aside" in caplog.text
        assert bad not in {r.sequence for r in live.timeline}


def test_records_and_positions_are_stored_in_one_transaction(
    registered: LedgerApplication, cast: Cast, projections: ProjectionStore
) -> None:
    _journeys(registered, cast)
    records = list(registered.records())
    half = len(records) // 2
    projections.apply(records[:half], {0: half}, consumer=CONSUMER, topic=TOPIC)
    before = projections.snapshot()
    assert before.timeline

    # The batch dies halfway through: the records and positions before it go too.
    with pytest.raises(Crash):
        projections.apply(_dying(records[half:]), {0: len(records) + 1}, consumer=CONSUMER, topic=TOPIC)
    assert projections.snapshot() == before
    assert projections.positions(CONSUMER, TOPIC) == {0: half}
    assert projections.positions("another-projector", TOPIC) == {}
    with pytest.raises(ValueError, match="consumer and a topic"):
        projections.apply([], {0: 1})
