"""The one error type for refused input: a stable machine code plus a human message."""

from __future__ import annotations


class Rejected(Exception):  # noqa: N818 - a verdict, not a fault
    """Input refused before anything was stored.

    `code` is stable and machine-readable (it travels to `coi.rejected`);
    `message` tells a person what was wrong and, where it helps, what to do.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
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
    {"out_of_sequence", "not_enrolled", "unknown_unit", "not_custodian", "patient_key_missing"}
)
