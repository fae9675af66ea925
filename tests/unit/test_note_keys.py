"""Key files of checkpoint notes: a private key given where a verifier key is expected is
named for what it is, and none of it is echoed (an error message ends up in logs)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.transparency.checkpoint import NoteError, NoteSigner, NoteVerifier


def test_a_signer_key_given_as_a_verifier_key_is_named_and_not_echoed() -> None:
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    secret = signer.encode()
    with pytest.raises(NoteError, match="private signing key") as caught:
        NoteVerifier.decode(secret)
    seed = secret.split("+", 4)[4]  # base64 may hold "+" itself: split at the format's four
    assert seed[:8] not in str(caught.value)


def test_anything_else_is_refused_without_echoing_it() -> None:
    with pytest.raises(NoteError, match="NAME\\+KEYID\\+BASE64") as caught:
        NoteVerifier.decode("some secret text")
    assert "secret" not in str(caught.value)


def test_a_verifier_key_round_trips() -> None:
    verifier = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate()).verifier
    assert NoteVerifier.decode(verifier.encode()).encode() == verifier.encode()
