"""The security log and lockout (issue 14 item 5) on SQLite and PostgreSQL: every refusal is
logged in its own table with who and which key it claims, authenticated failures lock a key
after the policy's threshold of distinct signed payloads, by a registry record the ledger's
service principal signs, and an administrator's unlock lifts it; forgeries lock no one."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.principal import principal_uuid
from aggregates.security import LOCK_NOT_RECORDED
from ledger.app.application import LedgerApplication
from ledger.app.log import MerkleLog
from ledger.app.servicekey import SERVICE_KIND, SERVICE_PRINCIPAL, SERVICE_ROLE
from ledger.demo.journeys import Cast
from ledger.site.signing import Member, envelope
from ledger.store.security import SecurityLog
from ledger.store.streams import Principal
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire import events as ev
from ledger.wire.keys import key_file_for, write_key_file
from tests.stores import ledger_url, verify_ledger

THRESHOLD = 5  # the policy's default lock_threshold
COI = "CHW045126009S4F"  # no patient: the role is refused before the journey is looked at


def _now() -> datetime:
    return datetime.now(UTC)


def _overreach(cast: Cast) -> bytes:
    """A nurse (collection, treatment) releasing a hold, which only QA may: an authenticated
    failure (role_not_allowed), each call a new signed payload."""
    return envelope(
        ev.HoldReleased, cast["nurse.bdw"], _now(), coi=COI, hold_id=uuid.uuid4().hex[:8], reason="tried"
    )


def _forged(cast: Cast) -> bytes:
    """The nurse's event with a signature that does not verify: claims the nurse, proves nothing."""
    raw = bytearray(_overreach(cast))
    doc = msgspec.json.decode(bytes(raw))
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[0] ^= 1
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return msgspec.json.encode(doc)


def _log(app: LedgerApplication) -> SecurityLog:
    return SecurityLog(ledger_url(app))


def _key(app: LedgerApplication, cast: Cast) -> tuple[str, bool]:
    keyid = cast["nurse.bdw"].signer.keyid
    stream = app.repository.get(principal_uuid("nurse.bdw"))
    assert isinstance(stream, Principal)
    return keyid, stream.state.keys[keyid].locked


def test_each_refusal_is_logged_with_claims_source_and_authentication(
    registered: LedgerApplication, cast: Cast
) -> None:
    outcomes = list(
        registered.submit_many(
            [_overreach(cast), _forged(cast), b"{not json"],
            sources=["kafka:t/0/1", "kafka:t/0/2", "kafka:t/0/3"],
        )
    )
    assert [o.code for o in outcomes] == ["role_not_allowed", "bad_signature", "malformed_json"]
    log = _log(registered)
    entries = list(log.entries())
    assert [(e.code, e.authenticated, e.source) for e in entries] == [
        ("role_not_allowed", True, "kafka:t/0/1"),
        ("bad_signature", False, "kafka:t/0/2"),
        ("malformed_json", False, "kafka:t/0/3"),
    ]
    keyid = cast["nurse.bdw"].signer.keyid
    assert [(e.principal, e.keyid) for e in entries[:2]] == [("nurse.bdw", keyid)] * 2
    assert entries[0].payload_sha256 is not None and entries[2].payload_sha256 is None
    assert outcomes[0].security == entries[0]
    # the same Kafka position handled again (a redelivery) is logged once
    list(registered.submit_many([_overreach(cast)], sources=["kafka:t/0/1"]))
    assert len(list(log.entries())) == 3
    assert [e.code for e in log.entries(principal="nurse.bdw")] == ["role_not_allowed", "bad_signature"]
    log.close()


def test_authenticated_failures_lock_the_key_and_an_unlock_lifts_it(
    registered: LedgerApplication, cast: Cast, service: Member
) -> None:
    replayed = _overreach(cast)
    # one refused envelope replayed many times (as read from coi.rejected) counts once
    for _ in range(THRESHOLD + 2):
        assert registered.submit(replayed).code == "role_not_allowed"
    # forgeries in the nurse's name count for nothing
    for _ in range(THRESHOLD + 2):
        assert registered.submit(_forged(cast)).code == "bad_signature"
    assert _key(registered, cast)[1] is False
    for _ in range(THRESHOLD - 2):
        registered.submit(_overreach(cast))
    assert _key(registered, cast)[1] is False
    registered.submit(_overreach(cast))  # the threshold-th distinct payload
    assert _key(registered, cast)[1] is True
    assert registered.submit(_overreach(cast)).code == "key_locked"
    keyid = _key(registered, cast)[0]
    unlock = envelope(
        ev.PrincipalKeyUnlocked, cast.admin, _now(), principal_id="nurse.bdw", keyid=keyid,
        reason="training given",
    )  # fmt: skip
    assert registered.submit(unlock).status == "accepted"
    assert _key(registered, cast)[1] is False
    # the failures before the unlock count no more
    assert registered.submit(_overreach(cast)).code == "role_not_allowed"
    assert _key(registered, cast)[1] is False
    # a standalone verifier replays the lock and the unlock from the registry records
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    MerkleLog(registered).checkpoint(signer, signer.name, memory=None)
    report = verify_ledger(registered, [signer.verifier])
    assert report.failure is None and report.replayed, report.failure


def test_without_a_service_key_the_lock_is_said_not_recorded(
    registered: LedgerApplication, cast: Cast
) -> None:
    for _ in range(THRESHOLD):
        registered.submit(_overreach(cast))
    assert _key(registered, cast)[1] is False
    log = _log(registered)
    said = [e for e in log.entries() if e.code == LOCK_NOT_RECORDED]
    assert [(e.keyid, e.source) for e in said] == [(cast["nurse.bdw"].signer.keyid, "ledger")]
    assert "is NOT locked" in said[0].message and "coi security service" in said[0].message
    log.close()


def test_only_an_administrator_unlocks(registered: LedgerApplication, cast: Cast, service: Member) -> None:
    keyid = cast["nurse.bdw"].signer.keyid
    by_service = envelope(
        ev.PrincipalKeyUnlocked, service, _now(), principal_id="nurse.bdw", keyid=keyid, reason="self-service"
    )
    assert registered.submit(by_service).code == "role_not_allowed"
    not_locked = envelope(
        ev.PrincipalKeyUnlocked, cast.admin, _now(), principal_id="nurse.bdw", keyid=keyid, reason="why not"
    )
    assert registered.submit(not_locked).code == "invalid_value"


def test_a_service_key_others_can_read_locks_nothing_and_refusals_go_on(
    registered: LedgerApplication, cast: Cast, service: Member, tmp_path: Path
) -> None:
    (tmp_path / "service.key").chmod(0o644)
    assert "chmod 600" in registered.locker()[1]
    for _ in range(THRESHOLD + 1):
        assert registered.submit(_overreach(cast)).code == "role_not_allowed"
    assert _key(registered, cast)[1] is False
    log = _log(registered)
    assert any(e.code == LOCK_NOT_RECORDED and "chmod 600" in e.message for e in log.entries())
    log.close()


def test_a_service_key_never_registered_locks_nothing(
    registered: LedgerApplication, cast: Cast, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = Member.new(SERVICE_PRINCIPAL, "Ledger service", SERVICE_KIND, (SERVICE_ROLE,), "US-SSF")
    path = tmp_path / "stray.key"
    write_key_file(path, key_file_for(stray.key, stray.principal_id, stray.printed_name, stray.kind, None))
    monkeypatch.setenv("COI_SERVICE_KEY", str(path))
    assert "is not registered" in registered.locker()[1]
    for _ in range(THRESHOLD):
        assert registered.submit(_overreach(cast)).code == "role_not_allowed"
    assert _key(registered, cast)[1] is False
