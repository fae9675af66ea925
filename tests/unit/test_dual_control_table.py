"""Dual control (issue 14, item 3; rules version 3): what two administrators may do that one
may not, what the bootstrap allows, and that records accepted under version 2 stay valid.
The refusals are rows of tests/unit/test_rules_table.py; here the cases that pass."""

from __future__ import annotations

from typing import Any

import pytest

from aggregates import principal
from aggregates.policy import Policy
from ledger.wire import events as ev
from tests.unit.test_rules_table import (
    ADMIN,
    DEPUTY,
    NEW_KEY,
    NURSE,
    ONE_ADMIN,
    RECEIVED,
    TWO_ADMINS,
    _registered,
    _registry,
    copy_of,
    ctx,
)

LOSS = _registry(ev.PrincipalKeyRotated, "nurse.bdw", public_key=NEW_KEY, valid_from=RECEIVED)
ROUTINE = _registry(
    ev.PrincipalKeyRotated, "nurse.bdw", public_key=NEW_KEY, valid_from=RECEIVED, routine=True
)
NURSE_AND_ADMIN = ONE_ADMIN | {"nurse.bdw": NURSE.roles}


@pytest.mark.parametrize(
    ("what", "state", "b", "roles", "administrators"),
    [
        ("a qa grant signed by two administrators", None, _registered("qa.new", "qa"), TWO_ADMINS, (ADMIN, DEPUTY)),
        ("an admin grant signed by two administrators", None, _registered("admin.new", "admin"), TWO_ADMINS, (ADMIN, DEPUTY)),
        ("the second administrator, signed by the only one", None, _registered("admin.dep", "admin"), ONE_ADMIN, (ADMIN,)),
        ("a grant of no authority, signed by one", None, _registered("nurse.new", "collection"), ONE_ADMIN, (ADMIN, DEPUTY)),
        ("a key after a loss, signed by two administrators", copy_of(NURSE), LOSS, TWO_ADMINS, (ADMIN, DEPUTY)),
        ("a routine rotation with the old key and an administrator", copy_of(NURSE), ROUTINE, NURSE_AND_ADMIN, (ADMIN, DEPUTY)),
        ("an administrator's routine rotation with another administrator", copy_of(ADMIN), _registry(ev.PrincipalKeyRotated, "admin.ssf", public_key=NEW_KEY, valid_from=RECEIVED, routine=True), TWO_ADMINS, (ADMIN, DEPUTY)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_dual_control_accepts(what: str, state: Any, b: Any, roles: Any, administrators: Any) -> None:
    assert principal.decide(state, b, ctx(roles=roles, administrators=administrators)) is None, what


def test_a_revocation_may_leave_two_administrators_and_the_bootstrap_one() -> None:
    third = _registered("admin.third", "admin")
    admins = (ADMIN, DEPUTY, principal.evolve(None, third))
    revocation = _registry(ev.PrincipalRevoked, "admin.ssf", effective_at=RECEIVED, reason="left")
    assert principal.decide(ADMIN, revocation, ctx(roles=TWO_ADMINS, administrators=admins)) is None
    # Under version 2, one administrator may be left (only the last is kept).
    pair = ctx(roles=TWO_ADMINS, administrators=(ADMIN, DEPUTY), policy=Policy(version=2))
    assert principal.decide(ADMIN, revocation, pair) is None


def test_records_accepted_under_version_2_stay_valid() -> None:
    """One administrator alone granted qa and replaced lost keys under version 2: a verifier
    judging those records by the policy in force then accepts them."""
    old = Policy(version=2)
    alone = ctx(roles=ONE_ADMIN, administrators=(ADMIN, DEPUTY), policy=old)
    assert principal.decide(None, _registered("qa.new", "qa"), alone) is None
    assert principal.decide(copy_of(NURSE), LOSS, alone) is None
    assert principal.decide(copy_of(NURSE), ROUTINE, alone) is None


def test_the_bootstrap_lets_the_only_administrator_add_the_second_but_not_grant_qa() -> None:
    """Until two administrators can sign, one adds the second and rotates keys alone (there
    is no second to ask); qa, alone or with admin, waits for the second."""
    sole = ctx(roles=ONE_ADMIN, administrators=(ADMIN,))
    for roles in (("qa",), ("admin", "qa")):
        problem = principal.decide(None, _registered("x.new", *roles), sole)
        assert problem is not None and problem.code == "second_administrator_required", roles
    assert principal.decide(copy_of(NURSE), LOSS, sole) is None
    own = _registry(
        ev.PrincipalKeyRotated, "admin.ssf", public_key=NEW_KEY, valid_from=RECEIVED, routine=True
    )
    assert principal.decide(copy_of(ADMIN), own, sole) is None
    # The old key is needed all the same: a routine rotation is the person's own.
    problem = principal.decide(copy_of(NURSE), ROUTINE, sole)
    assert problem is not None and problem.code == "missing_cosignature"
