"""A C2SP tlog-witness over real HTTP on loopback: `coi run witness` answers add-checkpoint
with the spec's status codes, keeps its state across a restart, and the relay gets two
witnesses' cosignatures on its checkpoints through the real broker."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.broker import ensure_topics
from consumers.witness import Witness, serve
from consumers.witnessing import Witnesses, configured, timeout
from ledger.app.config import ConfigError
from ledger.demo.harness import Services, wait_until
from ledger.demo.journeys import Cast
from ledger.site.kafka import consumer
from ledger.transparency import merkle
from ledger.transparency.checkpoint import Checkpoint, NoteSigner
from ledger.transparency.cosignature import Cosigner, cosignatures, with_lines
from ledger.transparency.witness import SIZE_CONTENT_TYPE, request_body
from ledger.wire.kafka_topics import Topics
from ledger.wire.messages import SignedCheckpoint, decode
from tests.support import COI, coi

ORIGIN = "coi-ledger.test/log"
LEDGER = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
LEAVES = [merkle.leaf_hash(bytes([i])) for i in range(20)]


def _nodes(size: int) -> merkle.Nodes:
    tree, stored = merkle.CompactRange(), {}
    for leaf in LEAVES[:size]:
        stored.update({(level, idx): h for level, idx, h in tree.append(leaf)})
    return lambda keys: {k: stored[k] for k in keys}


def _note(size: int, root: bytes | None = None) -> str:
    return Checkpoint(ORIGIN, size, root or merkle.root(size, _nodes(size))).sign(LEDGER)


def _post(port: int, body: bytes, path: str = "/add-checkpoint") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[tuple[Cosigner, int]]:
    cosigner = Cosigner.generate("witness.test/w1")
    server = serve(Witness(cosigner, {ORIGIN: [LEDGER.verifier]}, tmp_path / "state"), "127.0.0.1", 0)
    yield cosigner, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_status_codes_as_the_spec_says(witness: tuple[Cosigner, int]) -> None:
    cosigner, port = witness
    status, _, body = _post(port, request_body(0, [], _note(5)))
    assert status == 200
    assert [
        c.name
        for c in cosignatures(with_lines(_note(5), body.splitlines(keepends=True)), [cosigner.verifier])
    ] == ["witness.test/w1"]
    # A stale old size: 409 with the witness's size, in its content type.
    assert _post(port, request_body(0, [], _note(12))) == (409, SIZE_CONTENT_TYPE, "5\n")
    # A fork: a tree of 12 whose root is not consistent with the 5 cosigned.
    proof = merkle.consistency_proof(5, 12, _nodes(12))
    assert _post(port, request_body(5, proof, _note(12, bytes(32))))[0] == 422
    assert _post(port, request_body(5, [bytes(32)] * len(proof), _note(12)))[0] == 422  # a bad proof
    stranger = NoteSigner("elsewhere.test/log", Ed25519PrivateKey.generate())
    assert (
        _post(port, request_body(0, [], Checkpoint("elsewhere.test/log", 1, bytes(32)).sign(stranger)))[0]
        == 404
    )
    impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    assert _post(port, request_body(5, proof, Checkpoint(ORIGIN, 12, bytes(32)).sign(impostor)))[0] == 403
    assert _post(port, b"old five\n\n" + _note(12).encode())[0] == 400
    assert _post(port, request_body(13, [], _note(12)))[0] == 400
    assert _post(port, request_body(5, proof, _note(12)), path="/elsewhere")[0] == 404
    # The refusals changed nothing: the consistent checkpoint is cosigned.
    assert _post(port, request_body(5, proof, _note(12)))[0] == 200
    # Monitors read what it cosigned last, by the origin's hash.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint")
    latest = conn.getresponse()
    note = latest.read().decode()
    assert latest.status == 200 and note.startswith(_note(12).partition("\n\n")[0])
    assert [c.name for c in cosignatures(note, [cosigner.verifier])] == ["witness.test/w1"]
    conn.request("GET", f"/{hashlib.sha256(b'elsewhere.test/log').hexdigest()}/checkpoint")
    assert conn.getresponse().status == 404
    conn.close()


def test_the_relays_client_retries_a_409_from_the_witness_size(
    witness: tuple[Cosigner, int], tmp_path: Path
) -> None:
    cosigner, port = witness
    assert _post(port, request_body(0, [], _note(5)))[0] == 200  # someone else got 5 cosigned
    (tmp_path / "w1.vkey").write_text(cosigner.verifier.encode())
    client = Witnesses(configured(f"http://127.0.0.1:{port}={tmp_path / 'w1.vkey'}"), 5)
    try:
        note, count = client.cosign(
            _note(12), lambda old, new: merkle.consistency_proof(old, new, _nodes(new))
        )
        assert count == 1 and client.witnesses[0].size == 12
        assert cosignatures(note, [cosigner.verifier])
    finally:
        client.close()


def test_witness_configuration_errors_name_the_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="URL=VKEY_FILE"):
        configured("witness.example:7380")
    with pytest.raises(ConfigError, match=r"nope\.vkey"):
        configured(f"http://127.0.0.1:1={tmp_path / 'nope.vkey'}")
    for text in ("5", "0", "soon"):
        monkeypatch.setenv("COI_WITNESS_TIMEOUT", text)
        with pytest.raises(ConfigError, match="COI_WITNESS_TIMEOUT"):
            timeout()


def _start_witness(tmp: Path, key: Path, vkey: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [*COI, "run", "witness", "--key", str(key), "--listen", "127.0.0.1:0", "--state", str(tmp / "state"),
         "--log", f"{ORIGIN}={vkey}"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "COI_DATA_DIR": str(tmp / "coi-data")},
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert " on http://127.0.0.1:" in first, first + proc.stderr.read()
    return proc, int(first.rsplit(":", 1)[1].split("/")[0])


def test_coi_run_witness_keeps_its_state_across_a_restart(tmp_path: Path) -> None:
    made = coi(tmp_path, "witness", "keygen", "--name", "witness.test/w1", "--out", str(tmp_path / "w1.key"))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "w1.key").stat().st_mode & 0o777 == 0o600
    assert made.stdout.strip() == (tmp_path / "w1.vkey").read_text().strip()
    (tmp_path / "log.vkey").write_text(LEDGER.verifier.encode())
    proc, port = _start_witness(tmp_path, tmp_path / "w1.key", tmp_path / "log.vkey")
    try:
        assert _post(port, request_body(0, [], _note(5)))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    proc, port = _start_witness(tmp_path, tmp_path / "w1.key", tmp_path / "log.vkey")
    try:
        assert _post(port, request_body(0, [], _note(12)))[:3:2] == (409, "5\n")
        proof = merkle.consistency_proof(5, 12, _nodes(12))
        assert _post(port, request_body(5, proof, _note(12, bytes(32))))[0] == 422
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_coi_run_witness_says_what_it_needs(tmp_path: Path) -> None:
    done = coi(tmp_path, "run", "witness", "--listen", "127.0.0.1:0")
    assert done.returncode == 2 and "--key FILE" in done.stderr
    (tmp_path / "w.key").write_text("nonsense")
    (tmp_path / "w.key").chmod(0o600)
    done = coi(tmp_path, "run", "witness", "--key", "w.key", "--listen", "127.0.0.1:0", "--state", "s",
               "--log", "x")  # fmt: skip
    assert done.returncode == 2 and "w.key" in done.stderr and "Traceback" not in done.stderr
    done = coi(tmp_path, "run", "relay", "--key", "w.key")
    assert done.returncode == 2 and "options of coi run witness" in done.stderr


def test_the_relay_publishes_checkpoints_cosigned_by_two_witnesses(
    tmp_path: Path, bootstrap: str, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two witnesses up and a third down: the relay publishes each checkpoint cosigned by
    the two, stores it, and `coi verify --quorum 2` passes on it while 3 fails."""
    ledger = NoteSigner(f"coi-ledger.test/{uuid.uuid4().hex[:8]}", Ed25519PrivateKey.generate())
    key = tmp_path / "ledger.key"
    key.write_text(ledger.encode())
    key.chmod(0o600)
    (tmp_path / "ledger.vkey").write_text(ledger.verifier.encode())
    witnesses, servers = [], []
    for n in (1, 2, 3):
        cosigner = Cosigner.generate(f"witness.test/w{n}")
        (tmp_path / f"w{n}.vkey").write_text(cosigner.verifier.encode())
        witnesses.append(cosigner)
        state = tmp_path / f"w{n}-state"
        servers.append(serve(Witness(cosigner, {ledger.name: [ledger.verifier]}, state), "127.0.0.1", 0))
    urls = [
        f"http://127.0.0.1:{s.server_address[1]}={tmp_path / f'w{n}.vkey'}" for n, s in enumerate(servers, 1)
    ]
    servers[2].shutdown()
    servers[2].server_close()  # the third witness is down
    stack = Services(
        tmp_path, bootstrap, Topics(f"w{uuid.uuid4().hex[:8]}."), COI_CHECKPOINT_SECONDS="1",
        COI_LEDGER_KEY=str(key), COI_LOG_ORIGIN=ledger.name, COI_WITNESSES=",".join(urls),
    )  # fmt: skip
    ensure_topics(bootstrap, stack.topics)
    monkeypatch.setenv("COI_LOG_ORIGIN", ledger.name)  # the ledger made here takes the witnesses' origin
    seen = consumer(bootstrap, stack.topics.checkpoints)
    try:
        stack.register(cast, datetime.now(UTC))
        stack.start("relay")
        heads: list[SignedCheckpoint] = []

        def cosigned_head() -> bool:
            for batch in seen.poll(timeout_ms=500).values():
                heads.extend(decode(m.value, SignedCheckpoint) for m in batch)
            return any(h.cosigned for h in heads)

        wait_until(cosigned_head, 60, "a cosigned checkpoint on coi.checkpoints", stack)
        head = next(h for h in heads if h.cosigned)
        assert head.cosigned is not None and head.cosigned.startswith(head.note)
        found = cosignatures(head.cosigned, [w.verifier for w in witnesses])
        assert sorted(c.name for c in found) == ["witness.test/w1", "witness.test/w2"]
        assert "witness.test/w3" not in head.cosigned
        down = urls[2].rsplit("=", 1)[0]
        assert f"witness {down}: [Errno 111] Connection refused" in (tmp_path / "relay.log").read_text()
    finally:
        seen.close()
        stack.stop()
        for server in servers[:2]:
            server.shutdown()
            server.server_close()
    env = {"COI_DATABASE_URL": stack.ledger_url}
    keys = ["--trusted-key", str(tmp_path / "ledger.vkey"), "--witness-key", str(tmp_path / "w1.vkey"),
            "--witness-key", str(tmp_path / "w2.vkey")]  # fmt: skip
    ok = coi(tmp_path, "verify", *keys, "--quorum", "2", **env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "cosigned by witness.test/w1 at " in ok.stdout and ", witness.test/w2 at " in ok.stdout
    three = coi(tmp_path, "verify", *keys, "--witness-key", str(tmp_path / "w3.vkey"), "--quorum", "3", **env)
    assert three.returncode == 1, three.stdout + three.stderr
    assert "2 of the 3" in three.stdout and "witness.test/w3" in three.stdout
    # An offline bundle carries the cosigned checkpoint, and verify-bundle counts its witnesses.
    bundle = str(tmp_path / "b.zip")
    made = coi(tmp_path, "export", "bundle", "--out", bundle, "--from-seq", "1", "--to-seq", "5", **env)
    assert made.returncode == 0, made.stdout + made.stderr
    ok = coi(tmp_path, "verify-bundle", bundle, *keys, "--quorum", "2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "cosigned by witness.test/w1 at " in ok.stdout and "no witness cosignature" not in ok.stdout
    three = coi(
        tmp_path, "verify-bundle", bundle, *keys, "--witness-key", str(tmp_path / "w3.vkey"), "--quorum", "3"
    )
    assert three.returncode == 1 and "2 of the 3" in three.stdout, three.stdout + three.stderr


def _raw(port: int, request: bytes) -> tuple[int, str]:
    """(status, the whole response as text) for bytes sent as they are, the connection closed."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    text = response.decode()
    return int(text.split(" ", 2)[1]), text


def test_the_witness_answers_http_as_http_says(
    witness: tuple[Cosigner, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cosigner, port = witness
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/add-checkpoint")
    wrong = conn.getresponse()
    assert (wrong.status, wrong.getheader("Allow")) == (405, "POST")
    wrong.read()
    conn.close()
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    status, response = _raw(
        port, f"POST /{origin_hash}/checkpoint HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert status == 405 and "Allow: GET" in response
    assert _post(port, b"x" * (70 * 1024))[0] == 413
    head = b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n"
    assert _raw(port, head + b"Connection: close\r\n\r\n" + request_body(0, [], _note(5)))[0] == 411
    # A chunked body within the limit is read whole and cosigned.
    body = request_body(0, [], _note(5))
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    status, response = _raw(port, head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert status == 200 and cosigner.name in response
    big = b"".join(b"%x\r\n%s\r\n" % (8192, b"x" * 8192) for _ in range(9)) + b"0\r\n\r\n"
    assert _raw(port, head + b"Transfer-Encoding: chunked\r\n\r\n" + big)[0] == 413
    # A 403 names who signed, so an operator sees a ledger that rotated its key.
    rotated = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    with caplog.at_level("WARNING", logger="coi.witness"):
        assert _post(port, request_body(5, [], Checkpoint(ORIGIN, 5, bytes(32)).sign(rotated)))[0] == 403
        proof = merkle.consistency_proof(5, 12, _nodes(12))
        forked = request_body(5, proof, _note(12, bytes(32)))
        assert _post(port, forked)[0] == 422
    assert f"signed by {ORIGIN} key {rotated.verifier.key_id.hex()}" in caplog.text
    # The 422's request is kept as evidence, and the log says where.
    kept = list((tmp_path / "state" / "evidence").iterdir())
    assert [p.read_bytes() for p in kept] == [forked] and str(kept[0]) in caplog.text
    assert _post(port, forked)[0] == 422
    assert len(list((tmp_path / "state" / "evidence").iterdir())) == 2  # appended, none overwritten
    # Evidence that cannot be kept still gets its 422, and the log says it went unkept.
    shutil.rmtree(tmp_path / "state" / "evidence")
    (tmp_path / "state" / "evidence").write_text("not a directory")
    with caplog.at_level("WARNING", logger="coi.witness"):
        assert _post(port, forked)[0] == 422
    assert "the request could not be kept" in caplog.text


def test_coi_run_witness_refuses_keys_of_the_wrong_kind(tmp_path: Path) -> None:
    import socket

    ledger_key, witness_key = tmp_path / "ledger.key", tmp_path / "w1.key"
    ledger_key.write_text(LEDGER.encode())
    ledger_key.chmod(0o600)
    (tmp_path / "ledger.vkey").write_text(f"# {ORIGIN}\n{LEDGER.verifier.encode()}\n")
    (tmp_path / "ledger.vkey").chmod(0o644)
    made = coi(tmp_path, "witness", "keygen", "--name", "witness.test/w1", "--out", str(witness_key))
    assert made.returncode == 0, made.stderr

    def run(key: Path, log: str, listen: str = "127.0.0.1:0") -> subprocess.CompletedProcess[str]:
        return coi(
            tmp_path, "run", "witness", "--key", str(key), "--listen", listen, "--state", "s", "--log", log
        )

    ledger_log = f"{ORIGIN}={tmp_path / 'ledger.vkey'}"
    for done, says in (
        # The ledger's own signing key: a witness signs with its own.
        (run(ledger_key, ledger_log), "checkpoint-signing key (type 0x01), not a witness"),
        # A public key file: named as one, not as a private key others can read.
        (run(tmp_path / "ledger.vkey", ledger_log), "not a witness signer key"),
        (run(tmp_path / "w1.vkey", ledger_log), "public verifier key"),
        # A witness key where the ledger's belongs.
        (
            run(witness_key, f"witness.test/w1={tmp_path / 'w1.vkey'}"),
            "cosignature key (type 0x04), not a ledger",
        ),
        # A ledger key named after another origin.
        (
            run(witness_key, f"other.test/log={tmp_path / 'ledger.vkey'}"),
            f"named {ORIGIN}, not other.test/log",
        ),
    ):
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "chmod" not in done.stderr
    (tmp_path / "s").write_text("a file where the state directory belongs")
    done = run(witness_key, ledger_log)
    assert done.returncode == 2 and "--state s:" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "s").unlink()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(witness_key, ledger_log, f"127.0.0.1:{port}")
    assert done.returncode == 2 and f"--listen 127.0.0.1:{port}: address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_coi_run_witness_refuses_a_key_whose_public_part_is_the_logs(tmp_path: Path) -> None:
    """A witness key made from the ledger's seed (its type byte changed) is still the ledger's key."""
    same = Cosigner("witness.test/w1", LEDGER.key)
    key = tmp_path / "w.key"
    key.write_text(same.encode())
    key.chmod(0o600)
    (tmp_path / "ledger.vkey").write_text(LEDGER.verifier.encode())
    done = coi(tmp_path, "run", "witness", "--key", str(key), "--listen", "127.0.0.1:0", "--state", "s",
               "--log", f"{ORIGIN}={tmp_path / 'ledger.vkey'}")  # fmt: skip
    assert done.returncode == 2 and f"the one --log {ORIGIN} trusts" in done.stderr, done.stderr


def test_witness_keygen_help_and_quorum_wording(tmp_path: Path) -> None:
    assert "w1.key: w1.vkey" in " ".join(coi(tmp_path, "witness", "keygen", "--help").stdout.split())
    (tmp_path / "w1.vkey").write_text(Cosigner.generate("witness.test/w1").verifier.encode())
    done = coi(tmp_path, "verify", "--witness-key", "w1.vkey", "--quorum", "0")
    assert done.returncode == 2 and "give a number from 1 to 1" in done.stderr, done.stderr
    # A ledger's key given as a witness's says so, in COI_WITNESSES as in --witness-key.
    (tmp_path / "ledger.vkey").write_text(f"# {ORIGIN}\n{LEDGER.verifier.encode()}\n")
    done = coi(tmp_path, "verify", "--witness-key", "ledger.vkey")
    assert done.returncode == 2 and "checkpoint-signing key (type 0x01)" in done.stderr, done.stderr
    with pytest.raises(ConfigError, match=r"checkpoint-signing key \(type 0x01\)"):
        configured(f"http://127.0.0.1:1={tmp_path / 'ledger.vkey'}")
