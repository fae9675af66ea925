"""The C2SP tlog-witness `add-checkpoint` protocol, without HTTP or files: parsing a request,
and deciding it against the witness's configuration and its state for the log.

Request body: `old N\\n`, up to 63 base64 consistency-proof hash lines, an empty line, then the
checkpoint (a signed note). The checks run in the spec's order, each with its status: 400 a
malformed request, 404 an unknown origin, 403 no valid signature by a key trusted for it
(or one by such a key that fails), 400 an old size above the checkpoint's, 409 an old size
other than the size last cosigned (answered with that size, `text/x.tlog.size`), 422 a proof
that does not verify. Who calls `decide` holds the log's lock from reading its state until it
has stored the new one, so no two requests roll each other back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from ledger.transparency import merkle
from ledger.transparency.checkpoint import Checkpoint, NoteError, NoteVerifier, parse, verify

SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
EMPTY_ROOT = hashlib.sha256(b"").digest()


@dataclass(frozen=True)
class AddCheckpoint:
    old: int
    proof: list[bytes]
    note: str


@dataclass(frozen=True)
class LogState:
    """The latest checkpoint the witness cosigned for one log."""

    size: int
    root: bytes


class RefusedError(Exception):
    """A request the witness does not cosign: an HTTP status and a body saying why."""

    def __init__(self, status: int, message: str, content_type: str = "text/plain; charset=utf-8"):
        super().__init__(message)
        self.status = status
        self.body = message if message.endswith("\n") else message + "\n"
        self.content_type = content_type


def parse_request(body: bytes) -> AddCheckpoint:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise RefusedError(400, "the request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise RefusedError(400, "expected an old size line, proof lines, an empty line, then the checkpoint")
    first, *proof_lines = head.split("\n")
    number = first.removeprefix("old ")
    if first[:4] != "old " or not number.isascii() or not number.isdigit() or str(int(number)) != number:
        raise RefusedError(400, "the first line must be `old N` (a decimal size, no leading zeroes)")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise RefusedError(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in proof_lines:
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            h = b""
        if len(h) != 32:
            raise RefusedError(400, f"consistency proof line {line[:60]!r} is not a base64 SHA-256 hash")
        proof.append(h)
    return AddCheckpoint(int(number), proof, note)


def decide(request: AddCheckpoint, logs: dict[str, list[NoteVerifier]], state: LogState | None) -> Checkpoint:
    """The checkpoint to cosign; raises RefusedError with the spec's status otherwise. `state` is
    what the witness last cosigned for the checkpoint's origin (None: nothing yet)."""
    try:
        checkpoint, _, _ = parse(request.note)
    except NoteError as exc:
        raise RefusedError(400, f"malformed checkpoint: {exc}") from None
    trusted = logs.get(checkpoint.origin)
    if trusted is None:
        raise RefusedError(404, f"unknown log origin {checkpoint.origin!r}")
    try:
        verify(request.note, trusted)
    except NoteError as exc:
        raise RefusedError(403, f"{checkpoint.origin}: {exc}") from None
    if request.old > checkpoint.size:
        raise RefusedError(400, f"old size {request.old} is larger than the checkpoint's {checkpoint.size}")
    latest = state or LogState(0, EMPTY_ROOT)
    if request.old != latest.size:
        raise RefusedError(409, f"{latest.size}\n", SIZE_CONTENT_TYPE)
    if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
        raise RefusedError(422, "a checkpoint of size 0 must have the empty tree's root")
    if request.old == 0:
        if request.proof:
            raise RefusedError(422, "a consistency proof from size 0 must be empty")
    elif not merkle.verify_consistency(
        latest.size, checkpoint.size, latest.root, checkpoint.root, request.proof
    ):
        what = "root differs from" if latest.size == checkpoint.size else "is not consistent with"
        raise RefusedError(
            422, f"the checkpoint at size {checkpoint.size} {what} the one cosigned at size {latest.size}"
        )
    return checkpoint


def request_body(old: int, proof: list[bytes], note: str) -> bytes:
    """An add-checkpoint request, as a log sends it."""
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()
