"""The acceptance policy: which version of the rules and which settings judge a record.

Versions are boundaries in the log: a signed policy record says from where on a version and
its settings are in force, and each record is judged by the policy in force at its place.
Records before the first boundary are judged by version 0, the rules before issue 10. A
writer always judges new records by the newest version it knows (`RULES_VERSION`) with the
settings in force, and refuses to write to a log whose version in force is newer than that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# The newest version of the rules this code enforces. Raise it, and gate the new rule with
# `policy.version >= N`, whenever a rule tightens: records accepted before stay valid.
RULES_VERSION = 1


@dataclass(frozen=True)
class Setting:
    """A setting that changes what is accepted: its bounds are fixed here, not by a writer."""

    name: str
    env: str  # the environment variable that seeds `coi init`
    default: timedelta | int
    lowest: timedelta | int
    highest: timedelta | int


SETTINGS: tuple[Setting, ...] = (
    # how far a signed time may lie ahead of the ledger's clock
    Setting("skew", "COI_SKEW", timedelta(minutes=5), timedelta(0), timedelta(minutes=15)),
    # how long a key replaced by a routine rotation may still sign what was in flight
    Setting("rotation_grace", "COI_ROTATION_GRACE", timedelta(minutes=10), timedelta(0), timedelta(hours=1)),
    # past this delay between occurred_at and recorded_at, a record reads as entered late
    Setting(
        "late_entry_after",
        "COI_LATE_ENTRY_AFTER",
        timedelta(hours=24),
        timedelta(minutes=1),
        timedelta(days=30),
    ),
    # authenticated failures in a row that lock a key
    Setting("lock_threshold", "COI_LOCK_THRESHOLD", 5, 1, 20),
)


@dataclass(frozen=True)
class Policy:
    version: int = 0
    skew: timedelta = timedelta(minutes=5)
    rotation_grace: timedelta = timedelta(minutes=10)
    late_entry_after: timedelta = timedelta(hours=24)
    lock_threshold: int = 5


# Before any boundary: the rules and settings ledgers were first written under.
LEGACY = Policy()
