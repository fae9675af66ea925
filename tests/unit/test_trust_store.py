"""The trust store (ledger/audit/trust.py) and the choice of roots (ledger/audit/roots.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit.roots import choose, first_use, learn
from ledger.audit.trust import TrustError, TrustStore, config_dir
from ledger.transparency.checkpoint import Checkpoint, NoteSigner

ORIGIN = "coi-ledger.test/a"


def _signer(name: str = ORIGIN) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def test_the_config_dir_follows_coi_config_dir_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert config_dir() == Path(str(tmp_path / "coi-config"))  # tests/conftest.py
    monkeypatch.delenv("COI_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "coi"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "coi"


def test_entries_are_added_once_kept_by_origin_and_removed_by_key_id_or_origin(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "known_logs")
    a, b, other = _signer().verifier, _signer().verifier, _signer("coi-ledger.test/b").verifier
    assert store.entries() == []
    assert store.add(ORIGIN, a) and not store.add(ORIGIN, a)
    store.add(ORIGIN, b)
    store.add(other.name, other)
    assert store.keys(ORIGIN) == [a, b] and store.keys(other.name) == [other]
    assert [e.verifier for e in store.remove(a.key_id.hex())] == [a]
    assert [e.verifier for e in store.remove(other.name)] == [other]
    assert store.keys(ORIGIN) == [b]
    assert (tmp_path / "known_logs").read_text().startswith("# ")


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "known_logs"
    path.write_text(f"# comment\n\n{ORIGIN} not-a-key\n")
    with pytest.raises(TrustError, match=r"known_logs, line 3: .*fix or delete that line"):
        TrustStore(path).entries()


def test_roots_come_from_files_then_the_environment_then_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TrustStore(tmp_path / "known_logs")
    stored, filed, listed = _signer().verifier, _signer().verifier, _signer().verifier
    store.add(ORIGIN, stored)
    (tmp_path / "f.vkey").write_text(filed.encode() + "\n")
    (tmp_path / "e.vkey").write_text(listed.encode() + "\n")
    monkeypatch.setenv("COI_TRUSTED_KEYS", str(tmp_path / "e.vkey"))
    assert choose([tmp_path / "f.vkey"], store, lambda: ORIGIN).keys == [filed]
    assert choose([], store, lambda: ORIGIN).keys == [listed]
    monkeypatch.delenv("COI_TRUSTED_KEYS")
    roots = choose([], store, lambda: ORIGIN)
    assert roots.keys == [stored] and roots.store is store
    assert choose([], store, lambda: "coi-ledger.test/other").keys == []


def test_a_key_is_learned_only_from_a_checkpoint_a_trusted_key_cosigns(tmp_path: Path) -> None:
    old, new, stranger = _signer(), _signer(), _signer()
    published = [k.verifier.encode() for k in (old, new, stranger)]
    notes = [
        (1, Checkpoint(ORIGIN, 1, b"\x01" * 32).sign(old)),
        (2, Checkpoint(ORIGIN, 2, b"\x02" * 32).sign(stranger)),  # no handover: not learned
        (3, Checkpoint(ORIGIN, 3, b"\x03" * 32).sign(new, old)),
        (4, Checkpoint(ORIGIN, 4, b"\x04" * 32).sign(new)),
    ]
    roots = choose([], TrustStore(tmp_path / "known_logs"), lambda: ORIGIN)
    roots.keys.append(old.verifier)
    learn(roots, notes, published)
    assert roots.keys == [old.verifier, new.verifier] and roots.learned == [(new.verifier, 3)]


def test_first_use_takes_the_published_keys_that_sign_the_first_checkpoint() -> None:
    first, other, foreign = _signer(), _signer(), _signer("coi-ledger.test/b")
    note = Checkpoint(ORIGIN, 1, b"\x01" * 32).sign(first, foreign)
    published = [k.verifier.encode() for k in (first, other, foreign)] + ["garbage"]
    assert first_use(ORIGIN, note, published) == [first.verifier]
