"""Strict decoding of an event body, turning every msgspec error into a reason code
that names the field."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import msgspec

from ledger.events import Event
from ledger.rejection import Rejected

# Site clocks may run a little ahead of ours; beyond this an event claims to come from
# the future, which breaks "contemporaneous" (ALCOA+) and key-validity checks.
CLOCK_SKEW = timedelta(minutes=5)

_decoder = msgspec.json.Decoder(Event)
_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED = re.compile(r"field `([^`]+)`")

# (substring of msgspec's message, reason code), first match wins.
_CODES = (
    ("unknown field", "unknown_field"),
    ("missing required field", "missing_field"),
    ("with a timezone component", "naive_timestamp"),
    ("invalid DIN", "invalid_din"),
    ("at `$.type`", "unknown_event_type"),
    (", got `", "wrong_type"),
    ("Invalid RFC3339", "wrong_type"),
)


def _field_of(message: str) -> str | None:
    match = _PATH.search(message) or _NAMED.search(message)
    return match.group(1) if match else None


def decode_body(body: bytes, now: datetime) -> Event:
    """Decode and sanity-check one body; raises Rejected naming the field and the reason."""
    try:
        event = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        code = next((c for text, c in _CODES if text in message), "invalid_value")
        raise Rejected(code, message, _field_of(message)) from None
    except msgspec.DecodeError as exc:
        raise Rejected("malformed_json", f"payload is not valid JSON: {exc}") from None
    if event.occurred_at > now + CLOCK_SKEW:
        raise Rejected(
            "future_timestamp",
            f"occurred_at {event.occurred_at.isoformat()} is more than "
            f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes ahead of the ledger clock "
            f"({now.isoformat()}); check the site system's clock",
            "occurred_at",
        )
    return event
