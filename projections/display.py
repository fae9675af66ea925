"""How the read models show times to people: in UTC, whatever zone the site wrote."""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE = "%Y-%m-%d %H:%M"


def utc(at: datetime, spec: str = "%Y-%m-%d %H:%M:%S") -> str:
    """`at` converted to UTC, with a Z; a time that has no UTC form (the first hours of year 1
    east of Greenwich) is shown as written."""
    try:
        return f"{at.astimezone(UTC):{spec}}Z"
    except OverflowError:
        return at.isoformat()
