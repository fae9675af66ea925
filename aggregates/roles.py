"""Which role may sign which event type (Part 11.10(d)(g) authority checks)."""

from __future__ import annotations

_OPERATIONS = {"deviation_opened"}

ROLE_EVENTS: dict[str, frozenset[str]] = {
    "admin": frozenset({"principal_registered", "principal_key_rotated", "principal_revoked"}),
    "enrolment": frozenset({"enrolled", "patient_key_registered", "treatment_site_changed"}),
    "collection": frozenset(
        {"apheresis_collected", "label_printed", "label_applied", "label_voided",
         "custody_transferred", "hold_placed"} | _OPERATIONS
    ),
    "courier": frozenset(
        {"custody_transferred", "temperature_recorded", "temperature_excursion"} | _OPERATIONS
    ),
    "manufacturing": frozenset(
        {"material_received", "custody_transferred", "manufacturing_started",
         "manufacturing_step_completed", "manufacturing_completed", "label_printed",
         "label_applied", "label_voided", "qc_sample_taken", "shipment_dispatched",
         "hold_placed"} | _OPERATIONS
    ),
    "qc": frozenset({"qc_sample_taken", "qc_result_recorded"} | _OPERATIONS),
    "qa": frozenset(
        {"disposition", "retest_authorised", "hold_placed", "hold_released", "deviation_closed",
         "record_corrected"}
        | _OPERATIONS
    ),
    "treatment": frozenset(
        {"custody_transferred", "shipment_received", "material_received",
         "bedside_identity_verified", "infused", "hold_placed"} | _OPERATIONS
    ),
    "logger": frozenset({"temperature_recorded", "temperature_excursion"}),
}  # fmt: skip

# Corrections may be signed by QA or by anyone whose roles allow the corrected event type;
# the therapy aggregate checks the second case because only it knows that type.
OPEN_TO_AUTHORS = frozenset({"record_corrected"})

# Events whose header `reason` is mandatory (Annex 11 §9: the reason for a change).
REASON_REQUIRED = frozenset(
    {"record_corrected", "label_voided", "hold_placed", "hold_released", "principal_revoked",
     "retest_authorised", "treatment_site_changed"}
)  # fmt: skip

# Roles that carry a person's accountability (administration, QA judgement): never a device's.
PEOPLE_ONLY_ROLES = frozenset({"admin", "qa"})

# Decisions and checks that need a person, whatever roles the signer was registered with.
PEOPLE_ONLY_EVENTS = frozenset({"disposition", "retest_authorised", "bedside_identity_verified"})

# Roles whose holders physically hold material. Custody goes to people only: a Cell Shuttle
# runs a batch while its material stays in the custody of the person who received it.
CUSTODIAN_ROLES = frozenset({"collection", "courier", "manufacturing", "treatment"})


def allowed(roles: frozenset[str] | set[str], event_type: str) -> bool:
    return any(event_type in ROLE_EVENTS.get(role, ()) for role in roles)
