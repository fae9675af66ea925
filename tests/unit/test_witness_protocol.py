"""The tlog-witness add-checkpoint decisions, in the spec's order and with its status codes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit.witnessing import Witnessing, quorum_problem
from ledger.transparency import merkle
from ledger.transparency.checkpoint import Checkpoint, NoteSigner
from ledger.transparency.cosignature import Cosigner
from ledger.transparency.witness import (
    EMPTY_ROOT,
    SIZE_CONTENT_TYPE,
    LogState,
    RefusedError,
    decide,
    parse_request,
    request_body,
)

ORIGIN = "coi-ledger.test/log"
SIGNER = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
LOGS = {ORIGIN: [SIGNER.verifier]}
LEAVES = [merkle.leaf_hash(bytes([i])) for i in range(12)]


def _nodes(size: int) -> merkle.Nodes:
    tree = merkle.CompactRange()
    stored: dict[tuple[int, int], bytes] = {}
    for leaf in LEAVES[:size]:
        for level, idx, h in tree.append(leaf):
            stored[(level, idx)] = h
    return lambda keys: {k: stored[k] for k in keys}


def _note(size: int, signer: NoteSigner = SIGNER) -> str:
    return Checkpoint(ORIGIN, size, merkle.root(size, _nodes(size))).sign(signer)


def _status(body: bytes, state: LogState | None = None) -> int:
    with pytest.raises(RefusedError) as refused:
        decide(parse_request(body), LOGS, state)
    return refused.value.status


def _state(size: int) -> LogState:
    return LogState(size, merkle.root(size, _nodes(size)))


def test_a_first_checkpoint_and_a_consistent_next_are_cosigned() -> None:
    assert decide(parse_request(request_body(0, [], _note(5))), LOGS, None).size == 5
    proof = merkle.consistency_proof(5, 12, _nodes(12))
    assert decide(parse_request(request_body(5, proof, _note(12))), LOGS, _state(5)).size == 12
    assert decide(parse_request(request_body(12, [], _note(12))), LOGS, _state(12)).size == 12


def test_a_stale_old_size_gets_409_with_the_witness_size() -> None:
    with pytest.raises(RefusedError) as refused:
        decide(parse_request(request_body(0, [], _note(12))), LOGS, _state(5))
    assert (refused.value.status, refused.value.body, refused.value.content_type) == (
        409, "5\n", SIZE_CONTENT_TYPE,
    )  # fmt: skip


def test_a_fork_is_refused() -> None:
    forked = Checkpoint(ORIGIN, 12, bytes(32)).sign(SIGNER)
    proof = merkle.consistency_proof(5, 12, _nodes(12))
    assert _status(request_body(5, proof, forked), _state(5)) == 422
    other_root = Checkpoint(ORIGIN, 5, bytes(32)).sign(SIGNER)
    assert _status(request_body(5, [], other_root), _state(5)) == 422


def test_bad_proofs_get_422() -> None:
    assert _status(request_body(5, [bytes(32)], _note(12)), _state(5)) == 422
    assert _status(request_body(0, [bytes(32)], _note(12))) == 422
    empty_with_root = Checkpoint(ORIGIN, 0, bytes(32)).sign(SIGNER)
    assert _status(request_body(0, [], empty_with_root)) == 422
    assert decide(
        parse_request(request_body(0, [], Checkpoint(ORIGIN, 0, EMPTY_ROOT).sign(SIGNER))), LOGS, None
    )


def test_unknown_origins_get_404_and_untrusted_signatures_403() -> None:
    stranger = NoteSigner("elsewhere.test/log", Ed25519PrivateKey.generate())
    assert _status(request_body(0, [], Checkpoint("elsewhere.test/log", 1, bytes(32)).sign(stranger))) == 404
    impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    assert _status(request_body(0, [], _note(5, impostor))) == 403
    note = _note(5)
    text, _, line = note.partition("\n\n")
    tampered = text.replace("\n5\n", "\n6\n") + "\n\n" + line
    assert _status(request_body(0, [], tampered)) == 403


@pytest.mark.parametrize(
    "body",
    [b"old 05\n\n", b"old -1\n\n", b"new 0\n\n", b"old 0\nnot base64!\n\n", b"old 0\n", b"\xff\n\n",
     b"old 0\n\nnot a checkpoint\n"],
)  # fmt: skip
def test_malformed_requests_get_400(body: bytes) -> None:
    with pytest.raises(RefusedError) as refused:
        decide(parse_request(body + (_note(5).encode() if body.endswith(b"\n\n") else b"")), LOGS, None)
    assert refused.value.status == 400


def test_an_old_size_above_the_checkpoint_gets_400() -> None:
    assert _status(request_body(7, [], _note(5)), _state(7)) == 400
    assert _status(("old 0\n" + "AAAA\n" * 64 + "\n").encode() + _note(5).encode()) == 400


def test_a_missing_quorum_names_the_witness_keys_that_did_not_cosign() -> None:
    # Two keys of one witness name (say, before and after it rotated): only the key id tells them apart.
    w1, w1_other = Cosigner.generate("witness.test/w1"), Cosigner.generate("witness.test/w1")
    checkpoint = Checkpoint(ORIGIN, 3, merkle.root(3, _nodes(3)))
    cosigned = checkpoint.sign(SIGNER) + w1.line(checkpoint.text(), 1_700_000_000)
    problem = quorum_problem(3, [cosigned], Witnessing([w1.verifier, w1_other.verifier], 2))
    assert problem is not None and "1 of the 2" in problem
    assert f"none by witness.test/w1 (key {w1_other.verifier.key_id.hex()})" in problem
    assert w1.verifier.key_id.hex() not in problem
