"""Which role may sign which event type (Part 11.10(d)(g) authority checks)."""

from __future__ import annotations

_OPERATIONS = {"deviation_opened"}

ROLE_EVENTS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {"principal_registered", "principal_key_rotated", "principal_revoked", "policy_adopted",
         "principal_sites_bound", "site_registered", "principal_key_unlocked"}
    ),
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
    # the ledger's own service principal: it locks keys (aggregates/security.py) and opens
    # the deviation a bedside mismatch calls for (ledger/app/application.py), nothing else
    "ledger": frozenset({"principal_key_locked", "deviation_opened"}),
}  # fmt: skip

# Corrections may be signed by QA or by anyone whose roles allow the corrected event type;
# the therapy aggregate checks the second case because only it knows that type.
OPEN_TO_AUTHORS = frozenset({"record_corrected"})

# Events whose header `reason` is mandatory (Annex 11 §9: the reason for a change).
REASON_REQUIRED = frozenset(
    {"record_corrected", "label_voided", "hold_placed", "hold_released", "principal_revoked",
     "retest_authorised", "treatment_site_changed", "policy_adopted", "principal_key_locked",
     "principal_key_unlocked"}
)  # fmt: skip

# Roles that carry a person's accountability (administration, QA judgement): never a device's.
PEOPLE_ONLY_ROLES = frozenset({"admin", "qa"})

# Decisions and checks that need a person, whatever roles the signer was registered with.
PEOPLE_ONLY_EVENTS = frozenset({"disposition", "retest_authorised", "bedside_identity_verified"})

# Roles whose holders physically hold material. Custody goes to people only: a Cell Shuttle
# runs a batch while its material stays in the custody of the person who received it.
CUSTODIAN_ROLES = frozenset({"collection", "courier", "manufacturing", "treatment"})


# What a person's signature may mean (Part 11.50), by the event type it signs: the actor's
# meanings, the first being what a signing tool writes unless told otherwise; a disposition by
# its decision ("disposition/rejected"). A cosigner (the receiving custodian, QA beside a move,
# a second administrator) may sign as the actor may; the bedside witness only as WITNESSED.
# Rules version 2 on (aggregates/policy.py); a type not listed is signed as `performed`.
MEANINGS: dict[str, tuple[str, ...]] = {
    "disposition/released": ("approved", "released"),
    "disposition/rejected": ("rejected",),  # with a reason (aggregates/therapy.py)
    "retest_authorised": ("approved",),
    "hold_released": ("approved", "released"),
    "deviation_opened": ("performed", "reviewed"),
    "deviation_closed": ("approved", "reviewed"),
    "record_corrected": ("reviewed", "approved", "performed"),
    "treatment_site_changed": ("approved", "performed"),
    "qc_result_recorded": ("reviewed", "performed"),
    "material_received": ("performed", "verified"),
    "shipment_received": ("performed", "verified"),
    "bedside_identity_verified": ("verified",),
    "principal_registered": ("performed", "approved"),
    "principal_key_rotated": ("performed", "approved"),
    "principal_revoked": ("performed", "approved"),
    "policy_adopted": ("performed", "approved"),
    "principal_sites_bound": ("performed", "approved"),
    "site_registered": ("performed", "approved"),
    "principal_key_unlocked": ("performed", "approved"),
}
WITNESSED: tuple[str, ...] = ("witnessed",)
_PERFORMED = ("performed",)


def meanings(event_type: str, decision: str | None = None) -> tuple[str, ...]:
    """The meanings an actor's or cosigner's signature may have on this event type."""
    return MEANINGS.get(f"{event_type}/{decision}" if decision else event_type, _PERFORMED)


def allowed(roles: frozenset[str] | set[str], event_type: str) -> bool:
    return any(event_type in ROLE_EVENTS.get(role, ()) for role in roles)
