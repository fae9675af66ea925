"""cosignature/v1 (C2SP tlog-cosignature, Ed25519): keys and timestamps against the vectors of
an independent implementation (transparency-dev/formats, tests/fixtures/cosignature), and
signing and verifying cosignature lines on a checkpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.transparency.checkpoint import Checkpoint, NoteError, NoteSigner, NoteVerifier, verify
from ledger.transparency.cosignature import (
    CosignatureVerifier,
    Cosigner,
    cosignature_time,
    cosignatures,
    signed_message,
    with_lines,
)

VECTORS = json.loads((Path(__file__).parents[1] / "fixtures" / "cosignature" / "vectors.json").read_text())


@pytest.mark.parametrize("case", VECTORS["verifier_keys"], ids=lambda c: c["name"])
def test_verifier_keys_as_the_go_note_package_reads_them(case: dict[str, object]) -> None:
    vkey = str(case["vkey"])
    if not case["valid"]:
        with pytest.raises(NoteError):
            CosignatureVerifier.decode(vkey)
        return
    if base64.b64decode(vkey.split("+", 2)[2])[0] == 1:
        # Go converts a plain note key; here those are ledgers' keys, refused by type.
        with pytest.raises(NoteError, match=r"checkpoint-signing key \(type 0x01\)"):
            CosignatureVerifier.decode(vkey)
        return
    verifier = CosignatureVerifier.decode(vkey)
    name, _, b64 = vkey.split("+", 2)
    assert (verifier.name, verifier.public) == (name, base64.b64decode(b64)[1:])
    # The key ID of a cosignature is always computed with the type byte 0x04.
    assert verifier.key_id == hashlib.sha256(name.encode() + b"\n\x04" + verifier.public).digest()[:4]
    if base64.b64decode(b64)[0] == 4:  # a native cosignature vkey re-encodes to itself
        assert verifier.encode() == vkey


@pytest.mark.parametrize("case", VECTORS["timestamps"], ids=lambda c: c["name"])
def test_timestamps_as_the_go_note_package_reads_them(case: dict[str, object]) -> None:
    if case["time"] is None:
        with pytest.raises(NoteError):
            cosignature_time(str(case["signature"]))
    else:
        assert cosignature_time(str(case["signature"])) == case["time"]


def test_the_signed_message_is_the_specs() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert signed_message(1679315147, text) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def _ledger_note() -> tuple[str, NoteSigner]:
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    return Checkpoint("coi-ledger.test/log", 5, bytes(range(32))).sign(signer), signer


def test_a_cosignature_line_verifies_and_carries_its_time() -> None:
    note, ledger = _ledger_note()
    witness = Cosigner.generate("witness.test/w1")
    text = note.partition("\n\n")[0] + "\n"
    line = witness.line(text, 1_700_000_000)
    raw = base64.b64decode(line.rsplit(" ", 1)[1])
    assert raw[:4] == witness.verifier.key_id and struct.unpack(">Q", raw[4:12]) == (1_700_000_000,)
    # Per the spec, the signature is Ed25519 over the signed message.
    witness.key.public_key().verify(raw[12:], signed_message(1_700_000_000, text))
    cosigned = with_lines(note, [line])
    [found] = cosignatures(cosigned, [witness.verifier])
    assert (found.name, found.timestamp) == ("witness.test/w1", 1_700_000_000)
    # The ledger's verifier ignores the witness's line, and a witness key never passes as the ledger's.
    assert verify(cosigned, [ledger.verifier])[1] == ["coi-ledger.test/log"]
    assert cosignatures(cosigned, [Cosigner.generate("witness.test/w1").verifier]) == []


def test_a_cosignature_on_another_checkpoint_fails() -> None:
    note, _ = _ledger_note()
    witness = Cosigner.generate("witness.test/w1")
    other = Checkpoint("coi-ledger.test/log", 6, bytes(32)).text()
    forged = with_lines(note, [witness.line(other, 1_700_000_000)])
    with pytest.raises(NoteError, match="does not verify"):
        cosignatures(forged, [witness.verifier])


def test_signer_keys_round_trip_and_a_ledger_key_is_named_by_its_type() -> None:
    witness = Cosigner.generate("witness.test/w1")
    assert Cosigner.decode(witness.encode()).verifier == witness.verifier
    with pytest.raises(NoteError, match="private key"):
        CosignatureVerifier.decode(witness.encode())
    with pytest.raises(NoteError, match=r"public verifier key"):
        Cosigner.decode(witness.verifier.encode())
    # A ledger's note key is not a witness's, nor the other way round: each says which it is.
    ledger = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    for decode, key in (
        (Cosigner.decode, ledger.encode()),
        (CosignatureVerifier.decode, ledger.verifier.encode()),
    ):
        with pytest.raises(NoteError, match=r"ledger's checkpoint-signing key \(type 0x01\), not a witness"):
            decode(key)
    with pytest.raises(NoteError, match=r"witness's cosignature key \(type 0x04\), not a ledger's"):
        NoteVerifier.decode(witness.verifier.encode())
    # A .vkey as coi trust export writes it, with comment lines, still reads.
    commented = f"# witness.test/w1\n\n{witness.verifier.encode()}\n"
    assert CosignatureVerifier.decode(commented) == witness.verifier


def test_zero_and_bad_names_are_refused() -> None:
    with pytest.raises(NoteError):
        Cosigner.generate("two words")
    with pytest.raises(NoteError, match="positive"):
        Cosigner.generate("w").line("a\n1\nAAAA\n", 0)
