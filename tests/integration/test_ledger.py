"""The ledger on both stores: whole journeys, idempotent submission, verbatim storage and
state that replays identically from the store."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from eventsourcing.persistence import JSONTranscoder

from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.demo.journeys import VARIANTS, Cast
from ledger.demo.kit import interleave
from ledger.site.signing import envelope
from ledger.store.streams import Therapy
from ledger.wire import events as ev
from tests.stores import history
from tests.support import advance, new_journey, tag_of


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_journey_variant_ends_as_the_rules_say(
    registered: LedgerApplication, cast: Cast, variant: str
) -> None:
    journey = new_journey(cast, variant)
    advance(registered, journey)  # asserts every step's expected outcome
    stream = registered.repository.get(therapy_uuid(journey.coi))
    assert isinstance(stream, Therapy)
    therapy = stream.state
    product = therapy.units.get(f"P-{journey.coi}-1")
    assert product is not None
    assert product.infused == (variant in ("happy", "excursion", "retest"))
    assert therapy.batches[f"B-{journey.coi}"].status == (
        "rejected" if variant == "qc_failure" else "released"
    )
    assert all(h.end is not None for h in therapy.holds.values())  # QA released the excursion's hold
    # Deviations still open: the rejected batch's; QA closed the excursion's and the retest's.
    still_open = [is_open for _, is_open in therapy.deviations.values()]
    assert still_open == {"qc_failure": [True], "excursion": [False], "retest": [False]}.get(variant, [])
    assert not therapy.retests  # an authorised retest is used up by its result


def test_envelopes_are_stored_byte_for_byte_and_in_order(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast)
    steps = [s for s in journey.steps() if s.expect is None]
    outcomes = list(registered.submit_many(s.envelope for s in steps))
    assert all(o.status == "accepted" for o in outcomes)
    sequences = [o.sequence for o in outcomes]
    assert sequences == sorted(sequences)
    stored = {seq: env for seq, _, env in registered.records()}
    assert list(stored) == list(range(1, len(stored) + 1))  # the log numbers records only, densely
    for step, outcome in zip(steps, outcomes, strict=True):
        assert outcome.sequence is not None
        assert stored[outcome.sequence].encode() == step.envelope


def test_same_event_twice_is_a_duplicate_stored_once(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast)
    first = next(journey.steps()).envelope
    assert registered.submit(first).status == "accepted"
    top = registered.recorder.max_notification_id()
    again = list(registered.submit_many([first, first]))
    assert [o.status for o in again] == ["duplicate", "duplicate"]
    assert registered.recorder.max_notification_id() == top


def test_a_duplicate_inside_one_batch_is_stored_once(registered: LedgerApplication, cast: Cast) -> None:
    raw = next(new_journey(cast).steps()).envelope
    assert [o.status for o in registered.submit_many([raw, raw])] == ["accepted", "duplicate"]


def _state(aggregate: object) -> dict[str, object]:
    """An aggregate's state, its bodies by value: a replayed body is of the Stored* class of
    the decided one (read under the rules it was accepted with), equal field by field."""
    assert isinstance(aggregate, Therapy)
    state = {**vars(aggregate), **vars(aggregate.state)}
    del state["state"]
    state["bodies"] = {k: msgspec.to_builtins(v) for k, v in state["bodies"].items()}
    return state


def test_state_replays_identically_from_the_store(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    journeys = [new_journey(cast, v, i) for i, v in enumerate(VARIANTS)]
    for j in journeys:
        advance(registered, j)
    fresh = LedgerApplication(store_url)  # no cache: every aggregate is rebuilt from envelopes
    for j in journeys:
        live = registered.repository.get(therapy_uuid(j.coi))
        replayed = fresh.repository.get(therapy_uuid(j.coi))
        assert _state(replayed) == _state(live)


def test_stored_state_is_what_eventsourcings_own_json_encoder_writes(
    registered: LedgerApplication, cast: Cast
) -> None:
    """The ledger writes event state with msgspec (ledger/store/transcoder.py); the rows must be the
    very bytes eventsourcing's standard-library encoder writes, tagged datetimes included."""
    advance(registered, new_journey(cast))
    own = JSONTranscoder()
    registered.register_transcodings(own)
    rows = registered.recorder.select_notifications(start=1, limit=1000)
    assert len(rows) > len(cast.members)
    for row in rows:
        state = own.decode(row.state)
        assert isinstance(state["timestamp"], datetime)  # tagged, not a bare string
        assert own.encode(state) == row.state


def test_a_din_belongs_to_one_therapy_only(registered: LedgerApplication, cast: Cast) -> None:
    a, b = new_journey(cast, index=0), new_journey(cast, index=2)
    b.din = a.din  # a second patient collected under the same DIN
    advance(registered, a, before="label_applied")
    steps = list(b.steps())
    outcomes = [registered.submit(s.envelope) for s in steps[:5]]
    collected = next(o for s, o in zip(steps, outcomes, strict=False) if tag_of(s) == "apheresis_collected")
    assert collected.code == "din_in_use"


def test_a_cartridge_carries_one_patient(registered: LedgerApplication, cast: Cast) -> None:
    a, b = new_journey(cast, index=0), new_journey(cast, index=4)
    advance(registered, a, before="manufacturing_step_completed")
    remaining = advance(registered, b, before="manufacturing_started")
    at = datetime.now(UTC)
    start = envelope(
        ev.ManufacturingStarted, cast["shuttle.ssf"], at, coi=b.coi, batch_id=f"B-{b.coi}",
        shuttle_id="SHUTTLE-SSF-03", slot=2, cartridge_id=f"CART-{a.coi}", recipe_version="CD19-v4.2",
        input_unit_ids=[f"BAG-{b.coi}"],
    )  # fmt: skip
    assert registered.submit(start).code == "cartridge_in_use"
    assert registered.submit(remaining[0].envelope).status == "accepted"


def test_history_shows_signatures_and_keeps_corrected_values(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    advance(registered, journey)
    rows = history(registered, journey.coi)
    collected = next(r for r in rows if r.type == "apheresis_collected")
    assert collected.details["volume_ml"] == 180.0  # the original value stays
    assert [(c.old_value, c.new_value) for c in collected.corrections] == [("180.0", "182.0")]
    transfer = next(r for r in rows if r.type == "custody_transferred")
    assert [s.meaning for s in transfer.signatures] == ["performed", "performed"]
    release = next(r for r in rows if r.type == "disposition")
    assert [s.meaning for s in release.signatures] == ["approved"]


def test_journeys_of_many_patients_interleave(registered: LedgerApplication, cast: Cast) -> None:
    journeys = [new_journey(cast, "happy", i) for i in range(6)]
    interleaved = interleave(j.steps() for j in journeys)
    assert all(o.status == "accepted" for o in registered.submit_many(s.envelope for s in interleaved))


def test_a_second_writer_with_stale_state_retries_on_fresh_state(
    store_url: str, registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    steps = [s for s in journey.steps() if s.expect is None]
    assert all(o.status == "accepted" for o in registered.submit_many(s.envelope for s in steps[:3]))
    other = LedgerApplication(store_url)
    other.repository.get(therapy_uuid(journey.coi))  # caches version 3
    assert registered.submit(steps[3].envelope).status == "accepted"  # version 4, behind other's back
    # other's cached therapy is stale: its save conflicts, it re-reads and applies the rules again.
    outcomes = list(other.submit_many([steps[3].envelope, steps[4].envelope]))
    assert [o.status for o in outcomes] == ["duplicate", "accepted"]
    assert _state(other.repository.get(therapy_uuid(journey.coi))) == _state(
        LedgerApplication(store_url).repository.get(therapy_uuid(journey.coi))
    )


def test_a_consumed_bag_cannot_change_hands_and_decisions_cannot_be_corrected(
    registered: LedgerApplication, cast: Cast
) -> None:
    journey = new_journey(cast)
    advance(registered, journey, before="manufacturing_step_completed")
    at = datetime.now(UTC)
    moved = envelope(
        ev.CustodyTransferred, cast["recv.ssf"], at, (cast["courier.wc"],), coi=journey.coi,
        unit_ids=[f"BAG-{journey.coi}"], from_custodian="recv.ssf", to_custodian="courier.wc",
        location="dock", condition="intact",
    )  # fmt: skip
    assert registered.submit(moved).code == "out_of_sequence"
    rows = history(registered, journey.coi)
    transfer = next(r for r in rows if r.type == "custody_transferred")
    therapy = registered.repository.get(therapy_uuid(journey.coi)).state
    event_id = next(e for e, b in therapy.bodies.items() if type(b).__name__ == "CustodyTransferred")
    fix = envelope(
        ev.RecordCorrected, cast["qa.ssf"], at, coi=journey.coi, corrects_event_id=event_id,
        field="to_custodian", old_value="courier.wc", new_value="someone.else", reason="typo",
    )  # fmt: skip
    assert transfer.actor == "nurse.bdw"
    assert registered.submit(fix).code == "not_correctable"
