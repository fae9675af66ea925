"""What the therapy's state means to a person reading it: a unit's status in words that cannot
be misread, the holds on it, how a bedside check came out. Read-only over the state `evolve`
builds, so every view says what the rules decided.
"""

from __future__ import annotations

from typing import Literal

from aggregates.therapy import TherapyState, Unit

# One word per unit, most final first: an infused or consumed unit stays so whatever else
# holds; a product's release status comes from its batch's disposition.
UnitStatus = Literal["in_custody", "in_transit", "quarantined", "released", "rejected", "consumed", "infused"]
Bedside = Literal["MATCH", "MISMATCH"]


def unit_status(state: TherapyState, unit: Unit) -> UnitStatus:
    if unit.infused:
        return "infused"
    if unit.consumed_by is not None:
        return "consumed"
    shipment = state.shipments.get(unit.shipment_id or "")
    if shipment is not None and shipment.status == "in_transit":
        return "in_transit"
    if unit.kind == "product" and unit.batch_id is not None:
        batch = state.batches[unit.batch_id].status
        if batch == "released":
            return "released"
        if batch == "rejected":
            return "rejected"
        return "quarantined"
    return "in_custody"


def holds_on(state: TherapyState, unit_id: str) -> list[str]:
    """The holds in force on the unit: placed and not yet released."""
    return [hold_id for hold_id, hold in state.holds.items() if hold.end is None and unit_id in hold.units]


def bedside(state: TherapyState, unit_id: str) -> Bedside | None:
    """How the latest bedside check of the unit came out (a stored v0.1 proof that matched reads
    MATCH, as it did when recorded); None before any."""
    outcome = state.bedside.get(unit_id)
    if outcome is None:
        return None
    return "MISMATCH" if outcome == "mismatch" else "MATCH"


def open_deviations(state: TherapyState) -> set[str]:
    return {deviation_id for deviation_id, (_, is_open) in state.deviations.items() if is_open}
