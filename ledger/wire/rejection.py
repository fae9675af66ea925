"""The one error type for refused input: a stable machine code plus a human message."""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Every code a refusal can carry; README.md's reason-code table lists each with what to do.
    The values travel to `coi.rejected` and site systems: a value, once published, is never
    changed or reused."""

    # the envelope and the body as sent (ledger/wire)
    MALFORMED_JSON = "malformed_json"
    MALFORMED_ENVELOPE = "malformed_envelope"
    WRONG_PAYLOAD_TYPE = "wrong_payload_type"
    BAD_BASE64 = "bad_base64"
    MISSING_SIGNATURE = "missing_signature"
    OVERSIZE = "oversize"
    DUPLICATE_KEY = "duplicate_key"
    REPEATED_SIGNATURE = "repeated_signature"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    NAIVE_TIMESTAMP = "naive_timestamp"
    INVALID_DIN = "invalid_din"
    CONTROL_CHARACTER = "control_character"
    PHI_SUSPECTED = "phi_suspected"
    FUTURE_TIMESTAMP = "future_timestamp"
    # signatures and key state
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    KEY_NOT_YET_VALID = "key_not_yet_valid"
    KEY_LOCKED = "key_locked"
    VALID_FROM_TOO_EARLY = "valid_from_too_early"
    LAST_ADMINISTRATOR = "last_administrator"
    SECOND_ADMINISTRATOR_REQUIRED = "second_administrator_required"
    # authority
    ACTOR_NOT_SIGNER = "actor_not_signer"
    MISSING_COSIGNATURE = "missing_cosignature"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    PERSON_REQUIRED = "person_required"
    MISSING_MANIFESTATION = "missing_manifestation"
    MANIFESTATION_MISMATCH = "manifestation_mismatch"
    REASON_REQUIRED = "reason_required"
    SIGNED_AT_OUT_OF_RANGE = "signed_at_out_of_range"
    MEANING_NOT_ALLOWED = "meaning_not_allowed"
    NO_ADMINISTRATOR = "no_administrator"
    PRINCIPAL_EXISTS = "principal_exists"
    UNKNOWN_PRINCIPAL = "unknown_principal"
    # sites (aggregates/site.py)
    UNKNOWN_SITE = "unknown_site"
    SITE_NOT_BOUND = "site_not_bound"
    SITE_EXISTS = "site_exists"
    # the patient's journey
    NOT_ENROLLED = "not_enrolled"
    ALREADY_ENROLLED = "already_enrolled"
    DUPLICATE_ID = "duplicate_id"
    DIN_IN_USE = "din_in_use"
    CARTRIDGE_IN_USE = "cartridge_in_use"
    OUT_OF_SEQUENCE = "out_of_sequence"
    NOT_CUSTODIAN = "not_custodian"
    UNKNOWN_UNIT = "unknown_unit"
    NOT_A_CUSTODIAN = "not_a_custodian"
    WRONG_TREATMENT_SITE = "wrong_treatment_site"
    UNIT_ON_HOLD = "unit_on_hold"
    BEFORE_PREREQUISITE = "before_prerequisite"
    IDENTITY_MISMATCH = "identity_mismatch"
    IDENTITY_NOT_VERIFIED = "identity_not_verified"
    PATIENT_SIGNATURE_REQUIRED = "patient_signature_required"
    PATIENT_KEY_MISSING = "patient_key_missing"
    PATIENT_KEY_EXISTS = "patient_key_exists"
    QC_INCOMPLETE = "qc_incomplete"
    QC_FAILED = "qc_failed"
    RETEST_NOT_AUTHORISED = "retest_not_authorised"
    OPEN_DEVIATION = "open_deviation"
    UNKNOWN_EVENT = "unknown_event"
    NOT_CORRECTABLE = "not_correctable"
    STALE_OLD_VALUE = "stale_old_value"
    INTERVAL_OUT_OF_ORDER = "interval_out_of_order"
    UNIT_CONSUMED = "unit_consumed"
    LATE_ENTRY_REASON_REQUIRED = "late_entry_reason_required"
    # the acceptance policy
    POLICY_DOWNGRADE = "policy_downgrade"
    POLICY_VERSION_UNKNOWN = "policy_version_unknown"
    # duplicates
    DUPLICATE_CONFLICT = "duplicate_conflict"


class Rejected(Exception):  # noqa: N818 - a verdict, not a fault
    """Input refused before anything was stored.

    `code` is stable and machine-readable (it travels to `coi.rejected`);
    `message` tells a person what was wrong and, where it helps, what to do.
    """

    def __init__(self, code: ReasonCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = ReasonCode(code)  # a code outside the enum fails here, loudly
        self.message = message
        self.field = field


# Refusals that can be an effect of an earlier event of the same patient still in flight
# (lost by a broker and resent, or stored but not yet relayed): the same envelope may be
# accepted once that event is in. A site's outbox holds such a refusal until the earlier
# events are acknowledged. Every other code is final for the outbox, which never sends that
# envelope again: the same bytes are refused again, except that time or a registry change
# can lift future_timestamp, key_not_yet_valid and unknown_key, which is for a person to
# see to before sending it again.
IN_FLIGHT_CODES = frozenset(
    {
        ReasonCode.OUT_OF_SEQUENCE,
        ReasonCode.NOT_ENROLLED,
        ReasonCode.UNKNOWN_UNIT,
        ReasonCode.NOT_CUSTODIAN,
        ReasonCode.PATIENT_KEY_MISSING,
    }
)
