"""The policy rules and the settings syntax on plain values: no database, no signing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from aggregates.policy import (
    RULES_VERSION,
    SETTINGS,
    SITES_ADOPTED,
    Policy,
    PolicyContext,
    PolicyState,
    Setting,
    decide,
    evolve,
    fields_of,
    judging,
    parse_setting,
    seeded,
    written,
)
from ledger.wire import events as ev
from ledger.wire.rejection import Rejected

SKEW, _, LATE, LOCK = SETTINGS
ONE = PolicyContext(frozenset({"admin.a"}), administrators=1)
TWO = PolicyContext(frozenset({"admin.a", "admin.b"}), administrators=2)


def _body(policy: Policy, actor: str = "admin.a", reason: str | None = "tested") -> ev.PolicyAdopted:
    return ev.PolicyAdopted(
        event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), site="US-SSF", actor=actor, reason=reason,
        version=policy.version, **fields_of(policy),  # type: ignore[arg-type]  # the settings' fields
    )  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "text", "value"),
    [(SKEW, "30s", timedelta(seconds=30)), (SKEW, "5m", timedelta(minutes=5)),
     (LATE, "24h", timedelta(hours=24)), (LATE, "1h30m", timedelta(minutes=90)),
     (LATE, "30d", timedelta(days=30)), (LOCK, "7", 7)],
)  # fmt: skip
def test_settings_are_written_as_durations_or_counts(setting: Setting, text: str, value: object) -> None:
    assert parse_setting(setting, text, "X") == value


@pytest.mark.parametrize(
    ("setting", "text", "says"),
    [(SKEW, "5 min", "write a duration"), (SKEW, "5", "write a duration"), (SKEW, "", "write a duration"),
     (SKEW, "16m", "0s..15m"), (LATE, "30s", "1m..30d"), (LOCK, "21", "1..20"), (LOCK, "5m", "whole number")],
)  # fmt: skip
def test_a_bad_setting_names_where_it_came_from(setting: Setting, text: str, says: str) -> None:
    with pytest.raises(ValueError, match="COI_X") as caught:
        parse_setting(setting, text, "COI_X")
    assert says in str(caught.value)


def test_the_environment_seeds_the_first_boundary_and_nothing_else_is_needed() -> None:
    assert seeded({}) == Policy(RULES_VERSION, adopted=RULES_VERSION)
    policy = seeded({"COI_SKEW": "2m", "COI_LOCK_THRESHOLD": "3", "COI_OTHER": "x"})
    assert (policy.version, policy.skew, policy.lock_threshold) == (RULES_VERSION, timedelta(minutes=2), 3)
    assert written(policy.late_entry_after) == "24h" and written(timedelta(days=30)) == "30d"


# Every refusal of the policy rules (tests/unit/test_rules_table.py counts these codes as tabled).
POLICY_ROWS = [
        (PolicyState(), _body(Policy(RULES_VERSION), actor="nurse.x"), ONE, "role_not_allowed", "actor"),
        (PolicyState(), _body(Policy(RULES_VERSION)), PolicyContext(frozenset({"admin.a"}), 2),
         "missing_cosignature", "signatures"),
        (PolicyState(), _body(Policy(RULES_VERSION), reason=None), ONE, "reason_required", "reason"),
        (PolicyState(Policy(RULES_VERSION + 1)), _body(Policy(RULES_VERSION)), ONE,
         "policy_downgrade", "version"),
        (PolicyState(), _body(Policy(RULES_VERSION + 1)), ONE, "policy_version_unknown", "version"),
        (PolicyState(), _body(Policy(RULES_VERSION, rotation_grace=timedelta(hours=2))), ONE,
         "invalid_value", "rotation_grace_seconds"),
        # issue 14: the site rules wait until every principal who can sign has a registered site
        (PolicyState(Policy(2, 2)), _body(Policy(SITES_ADOPTED)),
         PolicyContext(frozenset({"admin.a"}), 1, ("nurse.x",)), "site_not_bound", "version"),
    ]  # fmt: skip


@pytest.mark.parametrize(("state", "body", "ctx", "code", "field"), POLICY_ROWS)
def test_what_a_policy_record_is_refused_for(
    state: PolicyState, body: ev.PolicyAdopted, ctx: PolicyContext, code: str, field: str
) -> None:
    refused = decide(state, body, ctx)
    assert refused is not None and (refused.code, refused.field) == (code, field)


def test_the_same_version_again_changes_settings_and_two_administrators_sign_once_two_exist() -> None:
    state = evolve(PolicyState(), _body(Policy(RULES_VERSION)))
    again = _body(Policy(RULES_VERSION, skew=timedelta(minutes=1)))
    assert decide(state, again, ONE) is None and decide(state, again, TWO) is None
    assert evolve(state, again).policy.skew == timedelta(minutes=1)


def test_a_writer_judges_by_its_own_rules_and_refuses_a_log_under_newer_ones() -> None:
    assert judging(Policy(0, skew=timedelta(minutes=1))) == Policy(RULES_VERSION, skew=timedelta(minutes=1))
    assert judging(Policy(2, 2)) == Policy(RULES_VERSION, adopted=2)  # the log's own version stays
    refused = judging(Policy(RULES_VERSION + 1))
    assert isinstance(refused, Rejected) and refused.code == "policy_version_unknown"
