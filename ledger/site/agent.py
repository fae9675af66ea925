"""A signing session (Part 11.200(a)(1)): a person's key, decrypted once with both components
(key file and passphrase), held by a local agent process that signs for them, each signature
after the passphrase again (one component per later signing).

The agent listens on a Unix socket only its user can open (0600, in a 0700 folder) and answers
only that user (SO_PEERCRED). It keeps the key and a scrypt verifier of the passphrase, never
the passphrase itself. It ends at `coi session stop`, after its idle timeout (no signature in
that time), after too many wrong passphrases in a row, and when the terminal session that
started it ends (its leader's process, watched through a pidfd).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ledger.site.attempts import FailedPassphrase, record_failure, wait_before_check
from ledger.wire.dsse import Signer
from ledger.wire.keys import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    KeyFileError,
    LoadedKey,
    WrongPassphraseError,
    ask_passphrase,
)

AGENT_ENV = "COI_SIGNING_AGENT"
IDLE_TIMEOUT_MINUTES = 15  # the default; `coi session start --idle-timeout` sets another
WRONG_IN_A_ROW = 5  # then the session ends: a new one needs the key file and the passphrase
_LARGEST_REQUEST = 1 << 20  # a body to sign is far smaller; a client cannot make the agent hoard


class AgentRequest(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["identify", "sign", "stop"]
    passphrase: bytes = b""
    message: bytes = b""  # the DSSE pre-authentication encoding to sign


class AgentReply(msgspec.Struct, forbid_unknown_fields=True):
    ok: bool
    error: str = ""
    wrong_passphrase: bool = False
    signature: bytes = b""
    principal_id: str = ""
    printed_name: str = ""
    kind: str = ""
    keyid: str = ""
    public_key: str = ""  # base64 of the raw Ed25519 public key
    pid: int = 0
    idle_left: float = 0.0  # seconds until the idle timeout ends the session


class Session:
    """The agent's state and its answers, apart from the socket: the clock and the sleep are
    given, so the idle timeout and the delays are tested without waiting."""

    def __init__(
        self,
        key: LoadedKey,
        passphrase: bytes,
        idle_timeout: float,
        attempts: Path,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.key = key
        self.idle_timeout = idle_timeout
        self._attempts, self._clock, self._sleep = attempts, clock, sleep
        self._salt = os.urandom(16)
        self._verifier = _derive(passphrase, self._salt)
        self._last_used = clock()
        self.wrong_in_a_row = 0
        self.ended = ""  # why the session ended; empty while it runs

    def time_left(self) -> float:
        """Seconds until the idle timeout, counted from the start or the last signature."""
        return self.idle_timeout - (self._clock() - self._last_used)

    def handle(self, request: AgentRequest) -> AgentReply:
        if self.time_left() <= 0:
            self.ended = (
                f"the signing session ended after {self.idle_timeout / 60:g} minutes without a signature"
            )
        if self.ended:
            return AgentReply(False, f"{self.ended}; start another with coi session start --key FILE")
        if request.op == "stop":
            self.ended = "the signing session was stopped"
            return AgentReply(True)
        if request.op == "identify":
            return self._identity()
        return self._sign(request)

    def _identity(self) -> AgentReply:
        raw = self.key.signer.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        k = self.key
        return AgentReply(
            True, principal_id=k.principal_id, printed_name=k.printed_name, kind=k.kind,
            keyid=k.signer.keyid, public_key=base64.b64encode(raw).decode(), pid=os.getpid(),
            idle_left=self.time_left(),
        )  # fmt: skip

    def _sign(self, request: AgentRequest) -> AgentReply:
        wait_before_check(self._attempts, self.key.signer.keyid, datetime.now(UTC), self._sleep)
        if not hmac.compare_digest(_derive(request.passphrase, self._salt), self._verifier):
            self.wrong_in_a_row += 1
            failure = FailedPassphrase(
                self.key.principal_id, self.key.signer.keyid, datetime.now(UTC), "signing session"
            )
            message = f"wrong passphrase for {self.key.principal_id}; nothing was signed"
            try:
                record_failure(self._attempts, failure)
            except OSError as exc:  # said, and still counted in a row below
                message += f" (not recorded in {self._attempts}: {exc.strerror})"
            if self.wrong_in_a_row >= WRONG_IN_A_ROW:
                self.ended = f"the signing session ended after {WRONG_IN_A_ROW} wrong passphrases in a row"
                message += f"; {self.ended}"
            return AgentReply(False, message, wrong_passphrase=True)
        self.wrong_in_a_row = 0
        self._last_used = self._clock()
        return AgentReply(True, signature=self.key.signer.key.sign(request.message))


def _derive(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)


def agent_folder(config: Path) -> Path:
    """Where sockets go: $XDG_RUNTIME_DIR/coi (the user's own, gone at logout), else the coi
    config folder's `agent`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "coi" if runtime else config / "agent"


def start_agent(session: Session, folder: Path) -> tuple[Path, int]:
    """Fork the agent for `session`, listening in `folder`; returns its socket and its pid.
    The agent ends with the terminal session this process runs in."""
    path = folder / f"agent.{os.getpid()}.sock"
    if len(os.fsencode(path)) > 107:  # sun_path's size, with its terminating zero
        raise KeyFileError(f"{path} is too long for a socket; set XDG_RUNTIME_DIR to a shorter folder")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _private_folder(folder)
        path.unlink(missing_ok=True)  # a socket left by an agent whose process id this one now has
        umask = os.umask(0o177)  # the socket is born 0600: no moment when others could connect
        try:
            listener.bind(str(path))
        finally:
            os.umask(umask)
        listener.listen(8)
        watched = os.pidfd_open(_session_leader())
    except OSError as exc:
        listener.close()
        raise KeyFileError(
            f"cannot start a signing session at {path} ({exc.strerror}); "
            "set XDG_RUNTIME_DIR to a folder of yours"
        ) from None
    pid = os.fork()
    if pid == 0:  # the agent
        try:
            os.setsid()  # no terminal signals; the pidfd says when the session ends
            _detach()
            serve(session, listener, watched)
        finally:
            path.unlink(missing_ok=True)
            os._exit(0)
    listener.close()
    os.close(watched)
    return path, pid


def serve(session: Session, listener: socket.socket, watched: int) -> None:
    """Answer requests until the session ends: stopped, idle, too many wrong passphrases, or
    the process behind the pidfd `watched` gone."""
    while not session.ended:
        left = session.time_left()
        if left <= 0:
            return
        ready, _, _ = select.select([listener.fileno(), watched], [], [], left)
        if watched in ready:
            return
        if listener.fileno() in ready:
            connection, _ = listener.accept()
            with connection:
                _answer(session, connection)


def _answer(session: Session, connection: socket.socket) -> None:
    uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    if uid != os.getuid():  # the mode already says so; a second lock costs nothing
        return
    connection.settimeout(10)  # a client that connects and says nothing does not hold the agent
    try:
        data = _received(connection)
        request = msgspec.json.decode(data, type=AgentRequest)
    except (OSError, ValueError) as exc:  # msgspec's errors are ValueErrors
        reply = AgentReply(False, f"not a signing-session request ({exc})")
    else:
        reply = session.handle(request)
    with contextlib.suppress(OSError):  # the client went away; its command already failed
        connection.sendall(msgspec.json.encode(reply))


def _received(connection: socket.socket) -> bytes:
    chunks, size = [], 0
    while chunk := connection.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > _LARGEST_REQUEST:
            raise ValueError("request too large")
    return b"".join(chunks)


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise KeyFileError(f"{folder} is not a folder of yours; remove it or set XDG_RUNTIME_DIR")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)


def _session_leader() -> int:
    """The process whose end ends the agent: the leader of this terminal session (the login
    shell), or this process's parent when this process leads its own session."""
    leader = os.getsid(0)
    return os.getppid() if leader in (os.getpid(), 0, 1) else leader


def _detach() -> None:
    """Standard streams to /dev/null: `eval "$(coi session start ...)"` waits until every
    writer of the output has closed it."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def ask_agent(path: str, request: AgentRequest) -> AgentReply:
    """Send one request to the agent at `path` and return its reply."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise KeyFileError(_no_agent(path, exc.strerror or str(exc))) from None
    if info.st_uid != os.getuid():  # the passphrase goes only to one's own agent
        raise KeyFileError(f"{AGENT_ENV}={path}: that socket is not yours; unset {AGENT_ENV}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(120)  # scrypt, and the delay after wrong passphrases
        try:
            connection.connect(path)
            connection.sendall(msgspec.json.encode(request))
            connection.shutdown(socket.SHUT_WR)
            data = _received(connection)
        except OSError as exc:
            raise KeyFileError(_no_agent(path, exc.strerror or str(exc))) from None
    try:
        return msgspec.json.decode(data, type=AgentReply)
    except msgspec.DecodeError:
        raise KeyFileError(_no_agent(path, "it ended before answering")) from None


def answered(path: str, request: AgentRequest) -> AgentReply:
    """The agent's reply to `request`, which must be a yes (else KeyFileError, saying why)."""
    reply = ask_agent(path, request)
    if not reply.ok:
        raise KeyFileError(reply.error)
    return reply


def _no_agent(path: str, why: str) -> str:
    return (
        f"{AGENT_ENV}={path}: no signing session answers there ({why}); start one with "
        f"coi session start --key FILE, or unset {AGENT_ENV}"
    )


def session_key(path: str, fd: int | None = None) -> LoadedKey:
    """The key of the signing session at `path`, for one signature: its passphrase asked now
    (read from descriptor `fd` when given), checked by the agent when it signs."""
    who = answered(path, AgentRequest("identify"))
    passphrase = ask_passphrase(f"Passphrase for {who.principal_id} (signing session): ", who.kind, fd)
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(who.public_key))
    return LoadedKey(
        who.principal_id, who.printed_name, who.kind, Signer(who.keyid, AgentKey(path, passphrase, public))
    )


class AgentKey(Ed25519PrivateKey):
    """A private key that stays in the agent: signing sends the message and the passphrase."""

    def __init__(self, path: str, passphrase: bytes, public: Ed25519PublicKey) -> None:
        self._path, self._passphrase, self._public = path, passphrase, public

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        reply = ask_agent(self._path, AgentRequest("sign", self._passphrase, bytes(data)))
        if reply.wrong_passphrase:
            raise WrongPassphraseError(reply.error)
        if not reply.ok:
            raise KeyFileError(reply.error)
        return reply.signature

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise KeyFileError("the private key stays in the signing session's agent")

    def private_bytes_raw(self) -> bytes:
        raise KeyFileError("the private key stays in the signing session's agent")

    def __copy__(self) -> AgentKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> AgentKey:
        return self
