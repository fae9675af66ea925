"""The policy records (aggregates/policy.py): adopted, shown, refused and verified, on SQLite
and PostgreSQL, through the application, the verifier and the `coi policy` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import aggregates.policy
from aggregates.policy import RULES_VERSION, Policy
from aggregates.principal import principal_uuid
from ledger.app.application import LedgerApplication, Outcome
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast
from ledger.site.signing import Member, adoption, envelope, registration
from ledger.store.streams import POLICY_STREAM
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire import events as ev
from projections.policy import late_entry_after, view
from tests.integration.test_principals import _rotation
from tests.stores import RawStore, verify_ledger
from tests.support import passphrase_fd, with_passphrase


def _adopt(
    app: LedgerApplication, admins: list[Member], policy: Policy, at: datetime | None = None
) -> Outcome:
    at = at or datetime.now(UTC)
    return app.submit(adoption(admins, policy, at, "tested"), now=at)


def _by_hand(store_url: str, stream: UUID, envelope: str, topic: str, at: datetime | None = None) -> int:
    """Append a record to `stream` with SQL, past the rules, as an insider could."""
    raw = RawStore(store_url)
    try:
        return raw.append(stream, envelope, topic, at)
    finally:
        raw.conn.close()


def _lower_by_hand(store_url: str, cast: Cast, version: int) -> int:
    lower = adoption(cast.admins, Policy(version), datetime.now(UTC), "by hand").decode()
    return _by_hand(store_url, POLICY_STREAM, lower, "coi:policy.recorded")


@pytest.fixture
def newer_rules(monkeypatch: pytest.MonkeyPatch) -> int:
    """This code knowing one version more than it does, so a version can be lowered."""
    monkeypatch.setattr(aggregates.policy, "RULES_VERSION", RULES_VERSION + 1)
    return RULES_VERSION + 1


def test_adopted_settings_are_shown_with_the_boundary_they_hold_from(
    registered: LedgerApplication, cast: Cast
) -> None:
    first = view(registered)
    assert first.version == RULES_VERSION and first.signed_by == [a.principal_id for a in cast.admins]
    outcome = _adopt(registered, cast.admins, Policy(RULES_VERSION, skew=timedelta(minutes=10)))
    assert outcome.status == "accepted", outcome
    shown = view(registered)
    assert (shown.version, shown.sequence, shown.reason) == (RULES_VERSION, outcome.sequence, "tested")
    settings = {s.name: (s.value, s.since_sequence) for s in shown.settings}
    assert settings["skew"] == ("10m", outcome.sequence)
    assert settings["rotation_grace"] == ("10m", first.sequence)  # unchanged since the first boundary


def test_late_entries_are_judged_by_the_setting_in_force_when_recorded(
    registered: LedgerApplication, cast: Cast
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1)
    hour = Policy(RULES_VERSION, late_entry_after=timedelta(hours=1))
    assert _adopt(registered, cast.admins, hour, at).status == "accepted"
    late_after = late_entry_after(registered)
    assert late_after(at - timedelta(days=1)) == timedelta(hours=24)  # before any boundary
    assert late_after(at) == timedelta(hours=1)


def test_a_lower_version_is_refused(registered: LedgerApplication, cast: Cast, newer_rules: int) -> None:
    assert _adopt(registered, cast.admins, Policy(newer_rules)).status == "accepted"
    refused = _adopt(registered, cast.admins, Policy(newer_rules - 1))
    assert (refused.code, refused.field) == ("policy_downgrade", "version")
    unknown = _adopt(registered, cast.admins, Policy(newer_rules + 1))
    assert (unknown.code, unknown.field) == ("policy_version_unknown", "version")


def test_a_writer_refuses_a_log_under_newer_rules(
    registered: LedgerApplication, cast: Cast, newer_rules: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _adopt(registered, cast.admins, Policy(newer_rules)).status == "accepted"
    monkeypatch.setattr(aggregates.policy, "RULES_VERSION", newer_rules - 1)  # an older coi
    at = datetime.now(UTC)
    refused = registered.submit(
        registration(cast.admin, Member.new("x.y", "X Y", "person", ("qa",), "US-SSF"), at)
    )
    assert refused.code == "policy_version_unknown" and "upgrade coi" in (refused.message or "")


@pytest.mark.parametrize(
    ("setting", "value", "bounds"),
    [("skew", timedelta(minutes=16), "0s..15m"), ("lock_threshold", 0, "1..20")],
)
def test_a_setting_out_of_bounds_is_refused_naming_the_field(
    registered: LedgerApplication, cast: Cast, setting: str, value: object, bounds: str
) -> None:
    policy = aggregates.policy.with_settings(Policy(RULES_VERSION), {setting: value})  # type: ignore[dict-item]
    refused = _adopt(registered, cast.admins, policy)
    field = f"{setting}_seconds" if setting == "skew" else setting
    assert (refused.code, refused.field) == ("invalid_value", field)
    assert bounds in (refused.message or "")


def test_two_administrators_sign_once_two_exist(registered: LedgerApplication, cast: Cast) -> None:
    nurse = cast["nurse.bdw"]
    refused = _adopt(registered, [nurse], Policy(RULES_VERSION))
    assert refused.code == "role_not_allowed"
    alone = _adopt(registered, [cast.admin], Policy(RULES_VERSION))  # the cast has two
    assert (alone.code, alone.field) == ("missing_cosignature", "signatures")
    both = _adopt(registered, cast.admins, Policy(RULES_VERSION))
    assert both.status == "accepted", both
    assert view(registered).signed_by == [a.principal_id for a in cast.admins]


def test_the_skew_in_force_decides_what_is_from_the_future(registered: LedgerApplication, cast: Cast) -> None:
    def ahead(minutes: int) -> Outcome:
        now = datetime.now(UTC)
        member = Member.new(f"qa.ahead{minutes}", "Ahead QA", "person", ("qa",), "US-SSF")
        at = now + timedelta(minutes=minutes)
        return registered.submit(registration(cast.admin, member, at, (cast.admins[1],)), now=now)

    assert ahead(8).code == "future_timestamp"
    assert (
        _adopt(registered, cast.admins, Policy(RULES_VERSION, skew=timedelta(minutes=10))).status
        == "accepted"
    )
    assert ahead(9).status == "accepted"
    assert _adopt(registered, cast.admins, Policy(RULES_VERSION, skew=timedelta(0))).status == "accepted"
    assert ahead(1).code == "future_timestamp"


def test_the_rotation_grace_in_force_decides_how_long_a_replaced_key_signs(
    registered: LedgerApplication, cast: Cast, store_url: str
) -> None:
    now = datetime.now(UTC)
    grace = Policy(RULES_VERSION, rotation_grace=timedelta(minutes=2))
    assert _adopt(registered, cast.admins, grace, now).status == "accepted"
    _, rotation = _rotation(cast, cast.admin.principal_id, now, routine=True)
    assert registered.submit(rotation, now=now).status == "accepted"

    def signed_by_the_old_key(after: timedelta) -> Outcome:
        member = Member.new(f"qa.after{after.seconds}", "After QA", "person", ("qa",), "US-SSF")
        return registered.submit(
            registration(cast.admin, member, now + after, (cast.admins[1],)), now=now + after
        )

    assert signed_by_the_old_key(timedelta(minutes=1)).status == "accepted"
    assert signed_by_the_old_key(timedelta(minutes=3)).code == "key_expired"  # the default grace is 10m
    assert verify_ledger(registered, []).failure is None

    # What the ledger refused, written into the table: the verifier judges by the same grace.
    later = now + timedelta(minutes=3)
    forged = envelope(ev.PrincipalRevoked, cast.admin, later, principal_id="nurse.bdw", effective_at=later,
                      reason="by hand").decode()  # fmt: skip
    sequence = _by_hand(
        store_url, principal_uuid("nurse.bdw"), forged, "aggregates.principal:Principal.Recorded", later
    )
    failure = verify_ledger(registered, []).failure
    assert failure is not None and failure.sequence == sequence and "key_expired" in failure.reason


def test_the_verifier_refuses_a_decrease_written_into_the_table(
    registered: LedgerApplication, cast: Cast, store_url: str, newer_rules: int
) -> None:
    assert _adopt(registered, cast.admins, Policy(newer_rules)).status == "accepted"
    assert verify_ledger(registered, []).failure is None
    sequence = _lower_by_hand(store_url, cast, newer_rules - 1)
    failure = verify_ledger(registered, []).failure
    assert failure is not None and failure.sequence == sequence
    assert "policy_downgrade" in failure.reason


def test_an_incremental_verify_resumes_with_the_policy_in_force(
    registered: LedgerApplication, cast: Cast, store_url: str, newer_rules: int, tmp_path: Path
) -> None:
    assert _adopt(registered, cast.admins, Policy(newer_rules)).status == "accepted"
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    MerkleLog(registered).checkpoint(signer, signer.name, memory=None)
    state = tmp_path / "verify-state.json"
    assert verify_ledger(registered, [signer.verifier], state).failure is None
    sequence = _lower_by_hand(store_url, cast, newer_rules - 1)
    report = verify_ledger(registered, [signer.verifier], state)
    assert report.resumed_from > 0
    assert report.failure is not None and report.failure.sequence == sequence
    assert "policy_downgrade" in report.failure.reason


def _coi(tmp: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "COI_DATA_DIR": str(tmp / "coi-data"), "COI_DATABASE_URL": url,
               "COI_SITE": "US-SSF", **env}  # fmt: skip
    with passphrase_fd("correct horse") as fd:
        return subprocess.run(
            [sys.executable, "-m", "ledger.cli", *with_passphrase(args, fd)], capture_output=True, text=True,
            env=environ, timeout=120, pass_fds=(fd,),
        )  # fmt: skip


INIT = ("init", "--admin", "admin.jane", "--name", "Jane Admin")  # at COI_SITE


def test_coi_init_seeds_and_coi_policy_sets_and_shows(tmp_path: Path, store_url: str) -> None:
    bad = _coi(tmp_path, store_url, *INIT, COI_SKEW="5 min")
    assert bad.returncode == 2 and "COI_SKEW" in bad.stderr
    done = _coi(tmp_path, store_url, *INIT, COI_SKEW="2m")
    assert done.returncode == 0, done.stdout + done.stderr
    # the genesis, its site (issue 14), the first boundary, then the service principal
    assert "2: accepted  seq=2 site_registered" in done.stdout
    assert "3: accepted  seq=3 policy_adopted" in done.stdout
    assert "4: accepted  seq=4 principal_registered" in done.stdout
    key = str(tmp_path / "coi-data" / "keys" / "admin.jane.key")
    set_ = _coi(tmp_path, store_url, "policy", "set", "--version", str(RULES_VERSION),
                "--late-entry-after", "12h", "--reason", "night shifts", "--key", key)  # fmt: skip
    assert set_.returncode == 0, set_.stdout + set_.stderr
    shown = _coi(tmp_path, store_url, "policy", "show", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    policy = json.loads(shown.stdout)
    settings = {s["name"]: (s["value"], s["since_sequence"]) for s in policy["settings"]}
    assert (policy["version"], policy["sequence"], policy["signed_by"]) == (RULES_VERSION, 5, ["admin.jane"])
    assert settings == {"skew": ("2m", 3), "rotation_grace": ("10m", 3), "late_entry_after": ("12h", 5),
                        "lock_threshold": ("5", 3)}  # fmt: skip
    table = _coi(tmp_path, store_url, "policy", "show")
    assert "in force from sequence 5" in table.stdout and "night shifts" in table.stdout
    out_of_bounds = _coi(tmp_path, store_url, "policy", "set", "--version", str(RULES_VERSION),
                         "--skew", "1h", "--reason", "x", "--key", key)  # fmt: skip
    assert (
        out_of_bounds.returncode == 2
        and "--skew" in out_of_bounds.stderr
        and "0s..15m" in out_of_bounds.stderr
    )
