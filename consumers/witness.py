"""`coi run witness`: a C2SP tlog-witness serving `POST /add-checkpoint` over HTTP, and
`GET /<origin hash>/checkpoint` (the latest checkpoint it cosigned for a log, for monitors).

The protocol's checks are ledger/transparency/witness.py; here are the HTTP server (stdlib,
a thread per connection, keep-alive) and the witness's state: per log origin, one JSON file
in the state directory with the latest cosigned size, root and note. A request reads the
state, decides, and writes the new state (tmp file, fsync, rename, fsync of the directory)
before answering, all holding that origin's lock (a thread lock, and an flock on a lock file
in case two witness processes share the directory): concurrent requests serialise, and a
cosignature is never returned for a state that was not stored.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec

from ledger.transparency.checkpoint import NoteError, NoteVerifier, parse
from ledger.transparency.cosignature import Cosigner
from ledger.transparency.witness import LogState, RefusedError, decide, parse_request
from ledger.wire.files import write_atomic, write_new

log = logging.getLogger("coi.witness")
MAX_BODY = 64 * 1024  # a checkpoint, 63 proof lines and a few signatures fit many times over


class _Stored(msgspec.Struct):
    origin: str
    size: int
    root: str  # base64
    note: str  # the checkpoint as cosigned, with the witness's cosignature


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    allow: str | None = None  # the methods a 405 offers


class _TooLargeError(Exception):
    """A request body over MAX_BODY."""


def _signers(note: str) -> str:
    """Who signed a note, by name and key id, for the operator's log (say, after a rotation)."""
    try:
        signatures = parse(note)[2]
    except NoteError:
        return "no readable signature"
    return ", ".join(f"{name} key {kid.hex()}" for name, kid, _ in signatures) or "no signature"


class Witness:
    def __init__(self, cosigner: Cosigner, logs: dict[str, list[NoteVerifier]], state_dir: Path) -> None:
        self.cosigner = cosigner
        self.logs = logs
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._locks = {origin: threading.Lock() for origin in logs}

    def _path(self, origin: str, suffix: str) -> Path:
        return self.state_dir / f"{hashlib.sha256(origin.encode()).hexdigest()}{suffix}"

    def state(self, origin: str) -> LogState | None:
        path = self._path(origin, ".json")
        if not path.exists():
            return None
        stored = msgspec.json.decode(path.read_bytes(), type=_Stored)
        return LogState(stored.size, base64.b64decode(stored.root))

    @contextmanager
    def _locked(self, origin: str) -> Iterator[None]:
        with self._locks[origin], self._path(origin, ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def checkpoint(self, origin_hash: str) -> Answer:
        """The latest checkpoint cosigned for the log whose origin hashes (SHA-256, hex) to
        `origin_hash`, with the log's signatures and this witness's cosignature."""
        origin = next((o for o in self.logs if hashlib.sha256(o.encode()).hexdigest() == origin_hash), None)
        path = self._path(origin, ".json") if origin is not None else None
        if path is None or not path.exists():
            return Answer(404, "no checkpoint cosigned for that log\n")
        return Answer(200, msgspec.json.decode(path.read_bytes(), type=_Stored).note)

    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            request = parse_request(body)
            origin = request.note.split("\n", 1)[0]
            if origin not in self.logs:
                decide(request, self.logs, None)  # says why: 400 malformed, else 404
            with self._locked(origin):
                checkpoint = decide(request, self.logs, self.state(origin))
                line = self.cosigner.line(checkpoint.text(), int(time.time()))
                note = request.note + line
                self._store(
                    _Stored(origin, checkpoint.size, base64.b64encode(checkpoint.root).decode(), note)
                )
        except RefusedError as refused:
            if refused.status == 403:
                log.warning("witness: 403 %s (signed by %s)", refused.body.strip(), _signers(request.note))
            elif refused.status == 409:
                log.warning("witness: 409 %s", refused.body.strip())
            elif refused.status == 422:
                try:
                    kept = f"the request is kept in {self._evidence(body)}"
                except OSError as exc:  # the answer stands; the operator learns it went unkept
                    kept = f"the request could not be kept: {exc}"
                log.warning("witness: 422 %s; %s", refused.body.strip(), kept)
            return Answer(refused.status, refused.body, refused.content_type)
        return Answer(200, line)

    def _evidence(self, body: bytes) -> Path:
        """Keeps a refused request (a log showing two histories) in STATE/evidence/, a new file
        each, never overwritten: what an operator shows others."""
        directory = self.state_dir / "evidence"
        directory.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for n in range(1, 1_000_000):
            path = directory / f"{stamp}-{n}.txt"
            if write_new(path, body):
                return path
        raise FileExistsError(f"no free evidence file name in {directory}")

    def _store(self, stored: _Stored) -> None:
        write_atomic(self._path(stored.origin, ".json"), msgspec.json.encode(stored))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends
    # The headers and the body go out as two writes: with Nagle's algorithm the second waits
    # for the client's delayed ACK, 40 ms on Linux, most of a request's time.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        if _is_checkpoint_path(self.path):
            self._refuse_body(Answer(405, "GET /<sha256 of the origin, hex>/checkpoint\n", allow="GET"))
        elif self.path.rstrip("/") != "/add-checkpoint":
            self._refuse_body(Answer(404, "only POST /add-checkpoint is served here\n"))
        else:
            try:
                body = self._body()
            except _TooLargeError:
                self._refuse_body(Answer(413, f"a request body of at most {MAX_BODY} bytes\n"))
            except ValueError as exc:
                self._refuse_body(Answer(400, f"{exc}\n"))
            else:
                if body is None:
                    self._refuse_body(Answer(411, "give the body's Content-Length, or send it chunked\n"))
                else:
                    self._answer(self.server.witness.add_checkpoint(body))

    def _body(self) -> bytes | None:
        """The request body (None: its length is not said); _TooLargeError past MAX_BODY, read
        no further; ValueError for framing that is not HTTP/1.1's."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        if not length.strip().isdigit():
            raise ValueError(f"Content-Length {length!r} is not a number")
        if int(length) > MAX_BODY:
            raise _TooLargeError
        return self.rfile.read(int(length))

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError(f"chunk size {size_line[:20]!r} is not hexadecimal") from None
            if len(body) + size > MAX_BODY:
                raise _TooLargeError
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields, unused
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline(1024)  # the CRLF after the chunk

    def _refuse_body(self, answer: Answer) -> None:
        """Answers without reading the body; the connection then closes, as its bytes are unread."""
        self.close_connection = True
        self._answer(answer)
        self._linger()

    def _linger(self) -> None:
        """Closing with request bytes unread makes the kernel reset the connection, which can
        destroy the answer before the client reads it: end our side, then drain what the client
        still sends, for at most a second and a few bodies' worth, before closing."""
        deadline, drained = time.monotonic() + 1, 0
        with suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            while drained < 4 * MAX_BODY and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                drained += len(chunk)

    def _answer(self, answer: Answer) -> None:
        body = answer.body.encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(body)))
        if answer.allow:
            self.send_header("Allow", answer.allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if _is_checkpoint_path(self.path):
            self._answer(self.server.witness.checkpoint(self.path.strip("/").split("/")[0]))
        elif self.path.rstrip("/") == "/add-checkpoint":
            self._answer(Answer(405, "POST /add-checkpoint\n", allow="POST"))
        else:
            self._answer(Answer(404, "GET /<sha256 of the origin, hex>/checkpoint only\n"))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("witness: " + format, *args)


def _is_checkpoint_path(path: str) -> bool:
    parts = path.strip("/").split("/")
    return len(parts) == 2 and parts[1] == "checkpoint"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness) -> None:
        super().__init__(address, _Handler)
        self.witness = witness


def serve(witness: Witness, host: str, port: int) -> _Server:
    """A started server (port 0: any free one; see server_address), serving on a thread."""
    server = _Server((host, port), witness)
    threading.Thread(target=server.serve_forever, name="witness", daemon=True).start()
    return server
