"""Signing sessions and passphrases (Part 11.200), apart from processes: the agent's idle
timeout on an injected clock, the delay after wrong passphrases without sleeping, the local
record of them, and the refusal of COI_KEY_PASSPHRASE for a person's key."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.cli.publish import report_failed_passphrases
from ledger.site.agent import WRONG_IN_A_ROW, AgentRequest, Session
from ledger.site.attempts import (
    FailedPassphrase,
    clear_passphrase_failures,
    delay_after,
    pending_passphrase_failures,
    record_failure,
    wait_before_check,
)
from ledger.wire.dsse import Signer
from ledger.wire.keys import (
    PASSPHRASE_ENV,
    KeyFileError,
    LoadedKey,
    key_file_for,
    load_key,
    read_passphrase_fd,
    write_key_file,
)

PASSPHRASE = b"correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _session(tmp_path: Path, clock: Clock, slept: list[float], idle: float = 60.0) -> Session:
    key = Ed25519PrivateKey.generate()
    loaded = LoadedKey("qa.lee", "Lee QA", "person", Signer("qa.lee:0123456789abcdef", key))
    return Session(loaded, PASSPHRASE, idle, tmp_path / "config", clock=clock, sleep=slept.append)


def test_the_idle_timeout_counts_from_the_last_signature(tmp_path: Path) -> None:
    clock, slept = Clock(), list[float]()
    session = _session(tmp_path, clock, slept)
    clock.now += 50
    signed = session.handle(AgentRequest("sign", PASSPHRASE, b"first"))
    assert signed.ok, signed.error
    session.key.signer.key.public_key().verify(signed.signature, b"first")  # raises if not
    clock.now += 59  # 109 s after the start, 59 after the last signature
    assert session.handle(AgentRequest("identify")).ok
    assert session.handle(AgentRequest("sign", PASSPHRASE, b"second")).ok
    clock.now += 30
    assert session.handle(AgentRequest("identify")).idle_left == pytest.approx(30)
    clock.now += 30  # asking who holds the session is not a use of it
    ended = session.handle(AgentRequest("sign", PASSPHRASE, b"third"))
    assert not ended.ok and "ended after 1 minutes without a signature" in ended.error
    assert session.ended and not session.handle(AgentRequest("identify")).ok
    assert slept == []


def test_stop_ends_the_session(tmp_path: Path) -> None:
    session = _session(tmp_path, Clock(), [])
    assert session.handle(AgentRequest("stop")).ok
    refused = session.handle(AgentRequest("sign", PASSPHRASE, b"x"))
    assert not refused.ok and "stopped" in refused.error and refused.signature == b""


def test_wrong_passphrases_are_recorded_slowed_down_and_end_the_session(tmp_path: Path) -> None:
    clock, slept = Clock(), list[float]()
    session = _session(tmp_path, clock, slept)
    for _ in range(WRONG_IN_A_ROW):
        wrong = session.handle(AgentRequest("sign", b"correct horse batterz", b"x"))
        assert not wrong.ok and wrong.wrong_passphrase and wrong.signature == b""
    assert "5 wrong passphrases in a row" in wrong.error and session.ended
    assert slept == [delay_after(n) for n in range(2, WRONG_IN_A_ROW)] == [1.0, 2.0, 4.0]
    recorded = pending_passphrase_failures(tmp_path / "config")
    assert [(f.principal_id, f.where) for f in recorded] == [("qa.lee", "signing session")] * WRONG_IN_A_ROW
    assert not session.handle(AgentRequest("sign", PASSPHRASE, b"x")).ok  # the right one is too late


def test_a_right_passphrase_resets_the_count_in_a_row(tmp_path: Path) -> None:
    session = _session(tmp_path, Clock(), [])
    for _ in range(WRONG_IN_A_ROW - 1):
        session.handle(AgentRequest("sign", b"not it at all", b"x"))
    assert session.handle(AgentRequest("sign", PASSPHRASE, b"x")).ok
    assert session.wrong_in_a_row == 0 and not session.ended


def test_the_delay_grows_after_two_free_failures_up_to_half_a_minute() -> None:
    assert [delay_after(n) for n in range(10)] == [0, 0, 1, 2, 4, 8, 16, 30, 30, 30]


def test_only_recent_failures_of_the_same_key_slow_it_down(tmp_path: Path) -> None:
    now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    for minutes in (1, 2, 3, 20):  # three recent ones, one long ago
        record_failure(
            tmp_path, FailedPassphrase("qa.lee", "qa.lee:k1", now - timedelta(minutes=minutes), "coi sign")
        )
    record_failure(tmp_path, FailedPassphrase("nurse.kim", "nurse.kim:k2", now, "coi sign"))
    slept: list[float] = []
    assert wait_before_check(tmp_path, "qa.lee:k1", now, slept.append) == delay_after(3) == 2
    assert wait_before_check(tmp_path, "nurse.kim:k2", now, slept.append) == 0
    assert slept == [2]


def test_pending_failures_are_cleared_once_reported_and_later_ones_stay(tmp_path: Path) -> None:
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    first = FailedPassphrase("qa.lee", "qa.lee:k1", at, "coi sign")
    record_failure(tmp_path, first)
    reported = pending_passphrase_failures(tmp_path)
    later = FailedPassphrase("qa.lee", "qa.lee:k1", at + timedelta(seconds=1), "coi session start")
    record_failure(tmp_path, later)
    clear_passphrase_failures(tmp_path, reported)
    assert pending_passphrase_failures(tmp_path) == [later]
    assert os.stat(tmp_path / "failed-passphrases.jsonl").st_mode & 0o777 == 0o600


def test_publish_reports_the_pending_failures_on_stderr_and_clears_them(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    record_failure(config_dir, FailedPassphrase("qa.lee", "qa.lee:k1", at, "coi sign"))
    report_failed_passphrases()
    err = capsys.readouterr().err
    assert "wrong passphrase for qa.lee (key qa.lee:k1) at 2026-12-03T09:00:00+00:00 in coi sign" in err
    assert "1 wrong passphrase(s)" in err
    assert pending_passphrase_failures(config_dir) == []
    report_failed_passphrases()
    assert capsys.readouterr().err == ""


def _key(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.key"
    write_key_file(path, key_file_for(Ed25519PrivateKey.generate(), f"{kind}.one", "One", kind, PASSPHRASE))
    return path


def test_the_environment_passphrase_is_refused_for_a_person_and_taken_for_a_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE.decode())
    with pytest.raises(KeyFileError, match=r"device and site-system keys only.*--passphrase-fd"):
        load_key(_key(tmp_path, "person"))
    assert load_key(_key(tmp_path, "device")).principal_id == "device.one"
    assert load_key(_key(tmp_path, "site_system")).kind == "site_system"


def test_a_descriptor_gives_one_passphrase_per_line(tmp_path: Path) -> None:
    person = _key(tmp_path, "person")
    read, write = os.pipe()
    os.write(write, PASSPHRASE + b"\r\nsecond line\n")
    os.close(write)
    try:
        assert load_key(person, fd=read).kind == "person"
        assert read_passphrase_fd(read) == b"second line"
        with pytest.raises(KeyFileError, match=f"--passphrase-fd {read}: no passphrase"):
            read_passphrase_fd(read)
    finally:
        os.close(read)
    with pytest.raises(KeyFileError, match="cannot read it"):
        read_passphrase_fd(read)  # closed now
