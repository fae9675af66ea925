"""Signing sessions as a user runs them (Part 11.200): `coi session start`, `coi sign` and `coi
session stop` as processes, the agent on a real socket, passphrases on a descriptor."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.wire.dsse import open_envelope, pae, verify
from tests.support import COI, coi, passphrase_fd

PASSPHRASE = "correct horse"


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A short XDG_RUNTIME_DIR: a socket's path must fit in 107 bytes, a test's tmp_path may not."""
    folder = Path(tempfile.mkdtemp(prefix="coi-run-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def person(tmp_path: Path) -> Path:
    done = coi(tmp_path, "keys", "new", "--principal", "qa.lee", "--name", "Lee QA", "--out", "lee.key")
    assert done.returncode == 0, done.stderr
    return tmp_path / "lee.key"


def _env(tmp_path: Path, runtime: Path, **more: str) -> dict[str, str]:
    env = {**os.environ, "COI_DATA_DIR": str(tmp_path / "coi-data"), "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("COI_KEY_PASSPHRASE", None)
    env.pop("COI_SIGNING_AGENT", None)
    return {**env, **more}


def _run(
    tmp_path: Path, env: dict[str, str], *args: str, passphrase: str | None = PASSPHRASE
) -> subprocess.CompletedProcess[str]:
    """`coi ARGS` with no terminal (a session of its own); `passphrase` on a descriptor."""
    with passphrase_fd(passphrase or "") as fd:
        extra = ["--passphrase-fd", str(fd)] if passphrase is not None else []
        return subprocess.run(
            [*COI, *args, *extra], capture_output=True, text=True, env=env, cwd=tmp_path, pass_fds=(fd,),
            stdin=subprocess.DEVNULL, start_new_session=True, timeout=120,
        )  # fmt: skip


def _agent_line(stdout: str) -> str:
    """The socket from `COI_SIGNING_AGENT=PATH; export COI_SIGNING_AGENT;`."""
    assignment, export = stdout.strip().split("; ")
    assert export == "export COI_SIGNING_AGENT;", stdout
    name, path = assignment.split("=", 1)
    assert name == "COI_SIGNING_AGENT"
    return path


def _pid(tmp_path: Path, env: dict[str, str]) -> int:
    status = _run(tmp_path, env, "session", "status", passphrase=None)
    assert status.returncode == 0, status.stderr
    return int(status.stdout.split("agent pid ")[1].split(";")[0])


def _gone(pid: int) -> bool:
    """The process has ended (a zombie left for a parent that does not reap counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _until_gone(pid: int) -> bool:
    deadline = time.monotonic() + 60  # a bound on waiting, not a measure of anything
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(pid)


def _body(tmp_path: Path) -> Path:
    body = {
        "type": "deviation_opened", "coi": "CHW04512600A0B1", "site": "US-SSF", "actor": "qa.lee",
        "deviation_id": "DEV-1", "description": "label smudged", "severity": "minor",
    }  # fmt: skip
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    return path


def test_a_session_asks_the_passphrase_for_each_signature_and_ends_at_stop(
    tmp_path: Path, runtime: Path, person: Path, config_dir: Path
) -> None:
    env = _env(tmp_path, runtime)
    started = _run(tmp_path, env, "session", "start", "--key", str(person))
    assert started.returncode == 0, started.stderr
    socket_path = Path(_agent_line(started.stdout))
    assert socket_path.parent == runtime / "coi"
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(socket_path.stat().st_mode) and stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    env["COI_SIGNING_AGENT"] = str(socket_path)
    pid = _pid(tmp_path, env)

    signed = _run(tmp_path, env, "sign", str(_body(tmp_path)))
    assert signed.returncode == 0, signed.stderr
    opened = open_envelope(signed.stdout.strip())
    [(keyid, signature)] = opened.signatures
    public = json.loads((tmp_path / "lee.key.pub").read_text())
    assert keyid == public["keyid"]
    assert verify(
        base64.b64decode(public["public_key"]), signature, pae(opened.envelope.payloadType, opened.body)
    )
    assert json.loads(opened.body)["manifestations"][0]["principal"] == "qa.lee"

    unasked = _run(tmp_path, env, "sign", str(_body(tmp_path)), passphrase=None)
    assert unasked.returncode == 2 and "--passphrase-fd" in unasked.stderr and unasked.stdout == ""
    wrong = _run(tmp_path, env, "sign", str(_body(tmp_path)), passphrase="correct horsf")
    assert wrong.returncode == 2 and "wrong passphrase for qa.lee" in wrong.stderr, wrong.stderr
    assert wrong.stdout == "" and "Traceback" not in wrong.stderr
    recorded = (config_dir / "failed-passphrases.jsonl").read_text().splitlines()
    assert [json.loads(line)["where"] for line in recorded] == ["signing session"]

    stopped = _run(tmp_path, env, "session", "stop", passphrase=None)
    assert stopped.returncode == 0 and stopped.stdout == "unset COI_SIGNING_AGENT;\n", stopped.stderr
    assert _until_gone(pid)
    assert not socket_path.exists()
    after = _run(tmp_path, env, "sign", str(_body(tmp_path)))
    assert after.returncode == 2 and "no signing session answers there" in after.stderr
    assert "coi session start" in after.stderr and "Traceback" not in after.stderr


def test_the_agent_ends_with_the_terminal_session_that_started_it(
    tmp_path: Path, runtime: Path, person: Path
) -> None:
    env = _env(tmp_path, runtime)
    with passphrase_fd(PASSPHRASE) as fd:
        # A shell leading its own session, as a terminal's does; it lives until its input ends.
        shell = subprocess.Popen(
            ["sh", "-c", f'"$0" "$@" --passphrase-fd {fd} && exec cat', *COI, "session", "start", "--key",
             str(person)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tmp_path, pass_fds=(fd,),
            start_new_session=True, text=True,
        )  # fmt: skip
    assert shell.stdout is not None and shell.stdin is not None
    socket_path = _agent_line(shell.stdout.readline())
    env["COI_SIGNING_AGENT"] = socket_path
    pid = _pid(tmp_path, env)
    assert not _gone(pid)
    shell.stdin.close()  # the session's leader ends, as when its terminal closes
    assert shell.wait(timeout=60) == 0
    assert _until_gone(pid)
    assert not Path(socket_path).exists()


def test_people_type_their_passphrase_devices_may_take_it_from_the_environment(
    tmp_path: Path, runtime: Path, person: Path
) -> None:
    env = _env(tmp_path, runtime, COI_KEY_PASSPHRASE=PASSPHRASE)
    signed = _run(tmp_path, env, "sign", "--key", str(person), str(_body(tmp_path)), passphrase=None)
    assert signed.returncode == 2 and signed.stdout == ""
    assert "COI_KEY_PASSPHRASE is for device and site-system keys only" in signed.stderr, signed.stderr
    started = _run(tmp_path, env, "session", "start", "--key", str(person), passphrase=None)
    assert started.returncode == 2 and "device and site-system keys only" in started.stderr
    assert not (runtime / "coi").exists()

    device = coi(
        tmp_path, "keys", "new", "--principal", "shuttle.one", "--name", "Shuttle", "--kind", "device",
        "--out", "shuttle.key", COI_KEY_PASSPHRASE=PASSPHRASE,
    )  # fmt: skip
    assert device.returncode == 0, device.stderr
    assert json.loads((tmp_path / "shuttle.key").read_text())["encrypted"] is True
    sessionless = _run(
        tmp_path, env, "session", "start", "--key", str(tmp_path / "shuttle.key"), passphrase=None
    )
    assert sessionless.returncode == 2 and "a signing session is for a person's key" in sessionless.stderr


def test_wrong_passphrases_at_sign_are_recorded_and_slow_the_next_tries(
    tmp_path: Path, runtime: Path, person: Path, config_dir: Path
) -> None:
    env = _env(tmp_path, runtime)
    said = []
    for _ in range(3):
        wrong = _run(
            tmp_path, env, "sign", "--key", str(person), str(_body(tmp_path)), passphrase="not it, no"
        )
        assert wrong.returncode == 2 and "check the passphrase" in wrong.stderr and wrong.stdout == ""
        said.append("waiting" in wrong.stderr)
    assert said == [False, False, True]  # two free failures, then a delay before the third check
    recorded = [
        json.loads(line) for line in (config_dir / "failed-passphrases.jsonl").read_text().splitlines()
    ]
    assert [(r["principal_id"], r["where"]) for r in recorded] == [("qa.lee", "coi sign")] * 3


def test_a_wrong_passphrase_at_session_start_starts_nothing_and_is_recorded(
    tmp_path: Path, runtime: Path, person: Path, config_dir: Path
) -> None:
    env = _env(tmp_path, runtime)
    started = _run(tmp_path, env, "session", "start", "--key", str(person), passphrase="correct horsf")
    assert started.returncode == 2 and "check the passphrase" in started.stderr and started.stdout == ""
    assert not (runtime / "coi").exists()
    [line] = (config_dir / "failed-passphrases.jsonl").read_text().splitlines()
    assert json.loads(line)["where"] == "coi session start"


def test_another_user_cannot_open_the_session(tmp_path: Path, runtime: Path, person: Path) -> None:
    other = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")  # one nobody may run
    if os.geteuid() != 0 or shutil.which("setpriv") is None or python is None:
        pytest.skip("connects as nobody: needs root, setpriv and a system python3")
    runtime.chmod(0o755)  # what stops nobody is then the agent's own folder and socket
    env = _env(tmp_path, runtime)
    started = _run(tmp_path, env, "session", "start", "--key", str(person))
    assert started.returncode == 0, started.stderr
    env["COI_SIGNING_AGENT"] = socket_path = _agent_line(started.stdout)
    try:
        connect = f"import socket; socket.socket(socket.AF_UNIX).connect({socket_path!r})"
        refused = subprocess.run([*other, python, "-c", connect], capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused.stderr
        assert _run(tmp_path, env, "session", "status", passphrase=None).returncode == 0  # its user still can
    finally:
        _run(tmp_path, env, "session", "stop", passphrase=None)


def _on_a_terminal(command: list[str], env: dict[str, str], cwd: Path, answers: list[str]) -> tuple[int, str]:
    """Run `command` on a new pseudo-terminal, typing each answer when a prompt ending in ': '
    appears; returns its exit status and all it wrote to the terminal."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling one, /dev/tty included
        os.chdir(cwd)
        os.execve(command[0], command, env)
    seen, pending = b"", list(answers)
    deadline = time.monotonic() + 120  # a bound on waiting, not a measure of anything
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if pending and seen.rstrip(b"\r\n").endswith(b": "):
            os.write(terminal, pending.pop(0).encode() + b"\n")
    os.close(terminal)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_on_a_terminal_each_signature_in_the_session_asks_the_passphrase(
    tmp_path: Path, runtime: Path, person: Path
) -> None:
    env = _env(tmp_path, runtime)
    started = _run(tmp_path, env, "session", "start", "--key", str(person))
    assert started.returncode == 0, started.stderr
    env["COI_SIGNING_AGENT"] = _agent_line(started.stdout)
    try:
        for _ in range(2):
            code, shown = _on_a_terminal([*COI, "sign", str(_body(tmp_path))], env, tmp_path, [PASSPHRASE])
            assert code == 0, shown
            assert "Passphrase for qa.lee (signing session): " in shown and '"signatures"' in shown
            assert PASSPHRASE not in shown  # not echoed
    finally:
        _run(tmp_path, env, "session", "stop", passphrase=None)
