"""The custody projection's model of one record, on plain values (no store)."""

from __future__ import annotations

from ledger.demo.journeys import Cast
from projections.custody import CurrentCustody, project
from tests.support import new_journey, tag_of


class _Custody:
    """Current custody as a test states it."""

    def __init__(self, *rows: CurrentCustody) -> None:
        self.rows = {(r.coi, r.unit_id): r for r in rows}

    def unit(self, coi: str, unit_id: str) -> CurrentCustody | None:
        return self.rows.get((coi, unit_id))

    def batch_inputs(self, coi: str, batch_id: str) -> list[CurrentCustody]:
        return [
            r for r in self.rows.values() if (r.coi, r.batch_id, r.custody) == (coi, batch_id, "consumed")
        ]

    def shipment_units(self, coi: str, shipment_id: str) -> list[CurrentCustody]:
        return [r for r in self.rows.values() if (r.coi, r.shipment_id) == (coi, shipment_id)]


def test_a_product_is_held_by_whoever_holds_its_first_input(cast: Cast) -> None:
    journey = new_journey(cast)
    steps = {tag_of(step): step for step in journey.steps()}
    completed = (7, journey.clock, steps["manufacturing_completed"].envelope.decode())
    bag = CurrentCustody(
        coi=journey.coi, unit_id=f"BAG-{journey.coi}", kind="bag", custodian="recv.elsewhere",
        site=journey.factory, custody="consumed", since=journey.clock, sequence=3,
        batch_id=f"B-{journey.coi}",
    )  # fmt: skip
    changes = project(completed, _Custody(bag))
    (product,) = changes.current
    assert (product.unit_id, product.sequence) == (f"P-{journey.coi}-1", 7)
    assert product.custodian == "recv.elsewhere"  # not the shuttle that signed the record
    assert changes.timeline[0].parents == (bag.unit_id,)
    # A unit the model never saw (the projector started late) is taken as the signer's.
    received = (8, journey.clock, steps["material_received"].envelope.decode())
    (unseen,) = project(received, _Custody()).current
    assert (unseen.kind, unseen.custodian, unseen.custody) == ("unknown", "recv.ssf", "received")
    # Records that move nothing add nothing.
    label = (9, journey.clock, steps["label_printed"].envelope.decode())
    assert project(label, _Custody()).timeline == []
