import base64

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit.signatures import AheadVerifier
from ledger.wire.dsse import PAYLOAD_TYPE, Signer, open_envelope, pae, sign, verify
from ledger.wire.keys import public_raw
from ledger.wire.rejection import Rejected


def test_pae_matches_the_dsse_specification_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_signatures_cover_pae_of_the_decoded_body() -> None:
    key = Ed25519PrivateKey.generate()
    raw = sign(b'{"a":1}', [Signer("k", key)])
    opened = open_envelope(raw)
    assert opened.body == b'{"a":1}'
    ((keyid, sig),) = opened.signatures
    assert keyid == "k"
    assert verify(public_raw(key), sig, pae(PAYLOAD_TYPE, b'{"a":1}'))
    assert not verify(public_raw(key), sig, pae(PAYLOAD_TYPE, b'{"a":2}'))
    assert not verify(public_raw(key), sig, b'{"a":1}')  # over the body alone: not DSSE


def test_url_safe_base64_is_accepted_as_dsse_allows() -> None:
    body = b"\xfb\xff" * 4
    env = {"payloadType": PAYLOAD_TYPE, "payload": base64.urlsafe_b64encode(body).decode(),
           "signatures": [{"keyid": "k", "sig": "AA=="}]}  # fmt: skip
    assert open_envelope(msgspec.json.encode(env)).body == body


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_json"),
        (b'{"payloadType": "x", "payload": "", "signatures": []}', "wrong_payload_type"),
        (b'{"payload": ""}', "malformed_envelope"),
    ],
)
def test_envelope_errors(raw: bytes, code: str) -> None:
    with pytest.raises(Rejected) as err:
        open_envelope(raw)
    assert err.value.code == code


@pytest.mark.parametrize("count", [3, 200])  # checked by the caller / by worker processes
def test_ahead_verifier_gives_every_verdict_in_order(count: int) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    jobs = [(public, key.sign(b"m%d" % i), b"m%d" % i) for i in range(count)]
    bad = {1, count // 2, count - 1}
    for i in bad:
        jobs[i] = (public, jobs[i][1], b"tampered")
    verifier = AheadVerifier(2)
    try:
        pending = verifier.submit(jobs)
        assert pending() == [i not in bad for i in range(count)]
    finally:
        verifier.close()
