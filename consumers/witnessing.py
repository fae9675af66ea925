"""Asking witnesses to cosign the ledger's checkpoints (C2SP tlog-witness, as its client).

COI_WITNESSES lists the witnesses: comma-separated `URL=VKEY_FILE` items, URL the witness's
submission prefix (http:// or https://; requests go to URL/add-checkpoint) and VKEY_FILE its
cosignature verifier key (`coi witness keygen` writes one). Each witness is asked in parallel,
each with a timeout (COI_WITNESS_TIMEOUT seconds, default 2), over a keep-alive connection.
The client starts from old size 0 and, on a 409, asks again from the size the witness
answers; after that it remembers the size each witness last cosigned. A cosignature is kept
only if it verifies under that witness's key. A witness that is down, slow or refusing is
logged and left out: the checkpoint is still published, with the cosignatures there are.
"""

from __future__ import annotations

import http.client
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ledger.app.config import ConfigError
from ledger.transparency.checkpoint import DASH, NoteError, parse
from ledger.transparency.cosignature import CosignatureVerifier, cosignatures, with_lines
from ledger.transparency.witness import SIZE_CONTENT_TYPE, request_body

log = logging.getLogger("coi.witnesses")

MAX_TIMEOUT = 2.0
Proof = Callable[[int, int], list[bytes]]  # (old size, new size) -> consistency proof


@dataclass
class Witness:
    url: str
    key: CosignatureVerifier
    size: int = 0  # what it last cosigned, as far as this client knows
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)


def configured(text: str | None = None, timeout: float | None = None) -> list[Witness]:
    """The witnesses of COI_WITNESSES (or `text`); ConfigError names a bad item."""
    text = os.environ.get("COI_WITNESSES", "") if text is None else text
    witnesses = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        url, sep, file = item.rpartition("=")
        parts = urlsplit(url)
        if not sep or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"COI_WITNESSES item {item!r}: give URL=VKEY_FILE, e.g. "
                "http://witness.example:7380=/etc/coi/w1.vkey (items separated by commas)"
            )
        try:
            key = CosignatureVerifier.decode(Path(file).read_text())
        except (OSError, NoteError, UnicodeDecodeError) as exc:
            raise ConfigError(f"COI_WITNESSES item {item!r}: {file}: {exc}") from None
        witnesses.append(Witness(url.rstrip("/"), key))
    return witnesses


def timeout() -> float:
    text = os.environ.get("COI_WITNESS_TIMEOUT", "2")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    # Two requests (a 409, then the retry) must end within verify's clock tolerance (5 s) of
    # the checkpoint's signing: a witness's time dates the records the checkpoint leaves out.
    if not 0 < seconds <= MAX_TIMEOUT:
        raise ConfigError(
            f"COI_WITNESS_TIMEOUT {text!r}: give the seconds to wait for a witness, more than 0 and "
            f"at most {MAX_TIMEOUT:g}"
        )
    return seconds


class Witnesses:
    def __init__(self, witnesses: list[Witness], seconds: float) -> None:
        self.witnesses = witnesses
        self.seconds = seconds
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(witnesses)), thread_name_prefix="witness")

    def cosign(self, note: str, proof: Proof) -> tuple[str, int]:
        """The note with every cosignature the witnesses gave, and how many gave one."""
        results = list(self._pool.map(lambda w: self._ask(w, note, proof), self.witnesses))
        lines = [line for result in results if result for line in result]
        return with_lines(note, lines), sum(1 for result in results if result)

    def _ask(self, witness: Witness, note: str, proof: Proof) -> list[str]:
        checkpoint, _, _ = parse(note)
        try:
            for _ in range(2):  # a 409 says the witness's size: ask once more from it
                if witness.size > checkpoint.size:
                    log.warning(
                        "witness %s has cosigned size %d, beyond this checkpoint's %d: not asked",
                        witness.url, witness.size, checkpoint.size,
                    )  # fmt: skip
                    return []
                old = witness.size
                path = proof(old, checkpoint.size) if 0 < old < checkpoint.size else []
                status, content_type, body = self._post(witness, request_body(old, path, note))
                if status == 409 and content_type.startswith(SIZE_CONTENT_TYPE) and body.strip().isdigit():
                    witness.size = int(body)
                    continue
                if status != 200:
                    log.warning("witness %s refused tree size %d: %d %s", witness.url, checkpoint.size,
                                status, body.strip()[:200])  # fmt: skip
                    return []
                return self._verified(witness, note, body, checkpoint.size)
        except (OSError, http.client.HTTPException) as exc:
            self._close(witness)
            log.warning("witness %s: %s (the checkpoint goes out without its cosignature)", witness.url, exc)
        return []

    @staticmethod
    def _verified(witness: Witness, note: str, body: str, size: int) -> list[str]:
        lines = [line + "\n" for line in body.splitlines()]
        try:
            found = cosignatures(with_lines(note, lines), [witness.key])
        except NoteError as exc:
            log.warning("witness %s: %s: cosignature not kept", witness.url, exc)
            return []
        if not found:
            log.warning(
                "witness %s answered without a cosignature by its key %s", witness.url, witness.key.encode()
            )
            return []
        witness.size = size
        return [line for line in lines if line.startswith(f"{DASH} {witness.key.name} ")]

    def _post(self, witness: Witness, body: bytes) -> tuple[int, str, str]:
        for attempt in range(2):  # a kept-alive connection the witness closed: reconnect once
            conn = witness._conn or self._connect(witness)
            try:
                conn.request("POST", urlsplit(witness.url).path + "/add-checkpoint", body)
                response = conn.getresponse()
                text = response.read().decode(errors="replace")
                return response.status, response.getheader("Content-Type", ""), text
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._close(witness)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _connect(self, witness: Witness) -> http.client.HTTPConnection:
        parts = urlsplit(witness.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        witness._conn = kind(parts.netloc, timeout=self.seconds)
        return witness._conn

    @staticmethod
    def _close(witness: Witness) -> None:
        if witness._conn is not None:
            witness._conn.close()
            witness._conn = None

    def close(self) -> None:
        for witness in self.witnesses:
            self._close(witness)
        self._pool.shutdown(wait=False)
