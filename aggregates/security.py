"""Which refusals count against a key, and when they lock it (Part 11.300(d)).

Only an authenticated failure counts: a signature that verifies with a registered key in
force, whose signer then breaks a role, site or meaning rule. A forged, unknown, revoked or
expired signature proves nothing about the key it names: counting it would let anyone lock
QA out by sending garbage in QA's name, so those are counted per source and alerted on
(`coi security watch`), never against a key. A failure counts once per distinct signed
payload (by its digest): replaying a refused envelope read from `coi.rejected` adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from aggregates.policy import Policy
from ledger.wire.messages import SecurityEntry
from ledger.wire.rejection import ReasonCode

# Refusals that say the signer, proven by its signature, tried what its roles, sites or the
# meaning of its signature do not allow (`site_not_bound`: acting at a site it is not bound
# to). Deliberately left out: `unknown_site` (a site system's configuration, not overreach),
# clock trouble (`signed_at_out_of_range` can be a site's drifting clock), journey state
# (`out_of_sequence` ... are a site's view lagging) and duplicates.
LOCKING_CODES = frozenset(
    {
        ReasonCode.ROLE_NOT_ALLOWED,
        ReasonCode.PERSON_REQUIRED,
        ReasonCode.MEANING_NOT_ALLOWED,
        ReasonCode.MANIFESTATION_MISMATCH,
        ReasonCode.ACTOR_NOT_SIGNER,
        ReasonCode.SITE_NOT_BOUND,
    }
)

# The security log's code for a lock that was due but could not be recorded (no service key).
LOCK_NOT_RECORDED = "lock_not_recorded"

# ... and for a deviation the ledger was to open after a bedside mismatch but could not.
DEVIATION_NOT_RECORDED = "deviation_not_recorded"

# The rules version from which failures lock keys and a locked key is refused.
LOCKOUT_VERSION = 3


def counts_against_key(failure: SecurityEntry) -> bool:
    """Whether this refusal counts towards locking its key."""
    return (
        failure.authenticated
        and failure.keyid is not None
        and failure.payload_sha256 is not None
        and failure.code in LOCKING_CODES
    )


def lock_due(failures: Iterable[SecurityEntry], keyid: str, policy: Policy) -> bool:
    """Whether `keyid` is to be locked, given the failures logged since it was last locked or
    unlocked: `lock_threshold` distinct signed payloads of authenticated failures."""
    if policy.version < LOCKOUT_VERSION:
        return False
    digests = {f.payload_sha256 for f in failures if f.keyid == keyid and counts_against_key(f)}
    return len(digests) >= policy.lock_threshold


def noisy_sources(failures: Iterable[SecurityEntry], threshold: int) -> dict[str, int]:
    """Sources (with their count) that sent at least `threshold` unauthenticated failures
    among `failures` (e.g. those of one time window)."""
    counts: dict[str, int] = {}
    for failure in failures:
        if not failure.authenticated:
            counts[failure.source] = counts.get(failure.source, 0) + 1
    return {source: n for source, n in counts.items() if n >= threshold}
