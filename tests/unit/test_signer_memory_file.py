"""The signer's memory file: private, replaced whole, per origin, and never silently forgotten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ledger.app.signermemory import SignedHead, SignerMemory, SignerMemoryError

ORIGIN = "coi-ledger.test/log"
HEAD = SignedHead(
    ORIGIN, 7, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "note\n", "2026-12-02T15:00:00+00:00"
)


def test_a_new_memory_is_empty_then_holds_what_was_remembered_and_is_its_owners_alone(tmp_path: Path) -> None:
    memory = SignerMemory(tmp_path / "signer", ORIGIN)
    with memory.holding() as last:
        assert last is None
        memory.remember(HEAD)
    with memory.holding() as last:
        assert last == HEAD and last.root_hash == bytes(32)
    assert memory.path.name == "coi-ledger.test%2Flog.signed.json"
    assert stat.S_IMODE(memory.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in memory.path.parent.iterdir()) == [memory.lock_path.name, memory.path.name]


def test_each_origin_has_its_own_memory(tmp_path: Path) -> None:
    with SignerMemory(tmp_path, ORIGIN).holding():
        SignerMemory(tmp_path, ORIGIN).remember(HEAD)
    with SignerMemory(tmp_path, "coi-ledger.test/other").holding() as last:
        assert last is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is damaged"),
        ('{"origin": "coi-ledger.test/log", "size": 7}', "is damaged"),
        (
            '{"origin": "coi-ledger.test/log", "size": 7, "root": "!!", "note": "", "signed_at": ""}',
            "is damaged",
        ),
    ],
)
def test_a_damaged_memory_is_refused_with_what_to_do(tmp_path: Path, text: str, says: str) -> None:
    memory = SignerMemory(tmp_path, ORIGIN)
    memory.path.write_text(text)
    with pytest.raises(SignerMemoryError, match=says) as refused, memory.holding():
        pass
    assert str(memory.path) in str(refused.value) and "restore it from a backup" in str(refused.value)


def test_another_logs_memory_put_in_its_place_is_refused(tmp_path: Path) -> None:
    elsewhere = SignerMemory(tmp_path / "a", "coi-ledger.test/other")
    with elsewhere.holding():
        elsewhere.remember(SignedHead("coi-ledger.test/other", 1, HEAD.root, "", HEAD.signed_at))
    memory = SignerMemory(tmp_path / "b", ORIGIN)
    memory.path.parent.mkdir()
    elsewhere.path.rename(memory.path)
    with pytest.raises(SignerMemoryError, match=r"is for the log 'coi-ledger\.test/other'"), memory.holding():
        pass
