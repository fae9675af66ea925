"""The lockout's counting rule (aggregates/security.py): authenticated failures over distinct
signed payloads lock a key at the threshold; replays and forgeries never do."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from aggregates import principal
from aggregates.policy import Policy
from aggregates.security import LOCKING_CODES, counts_against_key, lock_due, noisy_sources
from ledger.wire import events as ev
from ledger.wire.messages import SecurityEntry
from ledger.wire.rejection import ReasonCode

KEY = "nurse.x:0123456789abcdef"
V3 = Policy(version=3, lock_threshold=3)


def _failure(
    digest: str, code: str = "role_not_allowed", authenticated: bool = True, source: str = "cli:a@b"
) -> SecurityEntry:
    return SecurityEntry(
        code=code, message="", at="2026-01-01T00:00:00+00:00", source=source, authenticated=authenticated,
        envelope_sha256="0" * 64, payload_sha256=digest, principal="nurse.x", keyid=KEY,
    )  # fmt: skip


def test_the_threshold_of_distinct_payloads_locks() -> None:
    failures = [_failure("a"), _failure("b")]
    assert not lock_due(failures, KEY, V3)
    assert lock_due([*failures, _failure("c")], KEY, V3)
    assert not lock_due([*failures, _failure("c")], "other.key:0123456789abcdef", V3)


def test_replays_and_forgeries_never_lock() -> None:
    replayed = [_failure("a")] * 10
    assert not lock_due(replayed, KEY, V3)
    forged = [_failure(str(i), "bad_signature", authenticated=False) for i in range(10)]
    assert not lock_due(forged, KEY, V3)
    # an unauthenticated failure never counts, whatever its code
    unproven = [_failure(str(i), "role_not_allowed", authenticated=False) for i in range(10)]
    assert not lock_due(unproven, KEY, V3)


def test_only_role_site_and_meaning_codes_count() -> None:
    assert counts_against_key(_failure("a", ReasonCode.MEANING_NOT_ALLOWED))
    for code in (
        ReasonCode.SIGNED_AT_OUT_OF_RANGE,
        ReasonCode.OUT_OF_SEQUENCE,
        ReasonCode.DUPLICATE_CONFLICT,
    ):
        assert code not in LOCKING_CODES
        assert not counts_against_key(_failure("a", code))


def test_no_lockout_before_rules_version_3() -> None:
    failures = [_failure(str(i)) for i in range(5)]
    assert not lock_due(failures, KEY, Policy(version=2, lock_threshold=3))


def test_unauthenticated_failures_are_counted_per_source() -> None:
    failures = [
        *(_failure(str(i), "bad_signature", False, "kafka:t/0/1") for i in range(3)),
        _failure("x", "unknown_key", False, "cli:eve@h"),
        *(_failure(str(i), "role_not_allowed", True, "cli:eve@h") for i in range(5)),
    ]
    assert noisy_sources(failures, 3) == {"kafka:t/0/1": 3}
    assert noisy_sources(failures, 1) == {"kafka:t/0/1": 3, "cli:eve@h": 1}


def test_a_locked_key_is_refused_from_rules_version_3_and_signs_again_once_unlocked() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    state = principal.evolve(None, _body(ev.PrincipalRegistered, at, kind="person", printed_name="Nina Nurse",
                                         roles=["collection"], public_key=PUBLIC, valid_from=at))  # fmt: skip
    keyid = next(iter(state.keys))
    principal.evolve(state, _body(ev.PrincipalKeyLocked, at, keyid=keyid))
    later = at + timedelta(minutes=1)
    assert principal.key_problem(state, keyid, later, later, Policy(version=2)) is None  # accepted before
    problem = principal.key_problem(state, keyid, later, later, V3)
    assert problem is not None and (problem.code, problem.field) == (ReasonCode.KEY_LOCKED, "signatures")
    principal.evolve(state, _body(ev.PrincipalKeyUnlocked, later, keyid=keyid, reason="retrained"))
    assert principal.key_problem(state, keyid, later, later, V3) is None
    assert state.keys[keyid].lock_changed_at == later  # failures count again from here


PUBLIC = base64.b64encode(bytes(range(32))).decode()


def _body(cls: type[Any], at: datetime, **fields: Any) -> Any:
    return cls(
        event_id=uuid4(), occurred_at=at, site="US-SSF", actor="admin.root", principal_id="nurse.x", **fields
    )
