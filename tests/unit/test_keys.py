"""Key protection: how key files are encrypted, which passphrases are taken, who may read
the files the ledger creates, and that no message shows a secret."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.wire.keys import KeyFileError, key_file_for, load_key, write_key_file
from tests.support import FIXTURE_LEDGER

OLD_KEYS = FIXTURE_LEDGER / "demo-keys"


def test_new_key_files_seal_the_seed_with_scrypt(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "qa.key"
    write_key_file(path, key_file_for(key, "qa.x", "Quinn", "person", b"correct horse battery"))
    data = json.loads(path.read_text())
    assert data["version"] == 2 and "private_key_pem" not in data
    sealed = data["sealed"]
    assert sealed["kdf"] == "scrypt" and sealed["n"] >= 2**15 and sealed["aead"] == "chacha20-poly1305"
    loaded = load_key(path, b"correct horse battery")
    assert loaded.signer.keyid == data["keyid"]
    with pytest.raises(KeyFileError, match="check the passphrase"):
        load_key(path, b"correct horse batterz")


def test_key_files_written_before_scrypt_still_load(tmp_path: Path) -> None:
    old = tmp_path / "nurse.bdw.key"
    shutil.copy(OLD_KEYS / "nurse.bdw.key", old)
    old.chmod(0o600)
    assert load_key(old, b"demo-passphrase").signer.keyid == json.loads(old.read_text())["keyid"]


def test_a_key_file_that_asks_for_absurd_scrypt_work_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "qa.key"
    write_key_file(
        path, key_file_for(Ed25519PrivateKey.generate(), "qa.x", "Q", "person", b"correct horse b")
    )
    data = json.loads(path.read_text())
    data["sealed"]["n"] = 2**40
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match=r"sealed\.n"):
        load_key(path, b"correct horse b")
