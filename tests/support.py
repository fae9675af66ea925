"""Building blocks for the tests: journeys advanced to a given step, hand-made envelopes, the
fixture ledger, and `coi` run as a user runs it."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregates.base import body_of
from ledger import cli
from ledger.app.application import LedgerApplication, Outcome
from ledger.app.log import MerkleLog
from ledger.demo.journeys import Cast, Journey, Step, compressed_run
from ledger.demo.kit import register_cast
from ledger.site.signing import Member
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire.dsse import sign


def tag_of(step: Step) -> str:
    return str(type(body_of(step.envelope.decode())).__struct_config__.tag)


def submit_all(app: LedgerApplication, raws: Iterable[bytes]) -> list[Outcome]:
    return list(app.submit_many(raws))


def advance(app: LedgerApplication, journey: Journey | list[Step], before: str | None = None) -> list[Step]:
    """Submit the journey's steps (or these steps of a journey) up to (not including) the
    first of type `before`; every step must have the outcome it expects. Returns the steps
    not yet submitted."""
    steps = list(journey.steps()) if isinstance(journey, Journey) else journey
    for i, step in enumerate(steps):
        if tag_of(step) == before:
            return steps[i:]
        outcome = app.submit(step.envelope)
        expected = "accepted" if step.expect is None else step.expect
        got = "accepted" if outcome.status == "accepted" else outcome.code
        assert got == expected, (tag_of(step), outcome)
    assert before is None, f"the journey has no {before} step"
    return []


def new_journey(cast: Cast, variant: str = "happy", index: int = 0) -> Journey:
    """A journey compressed into the last two minutes, after the `registered` fixture's cast;
    starts staggered for indices up to 1000."""
    run = compressed_run(datetime.now(UTC), patients=1000)
    return Journey(cast, index, run.start(index), variant, run.hour)


def body_dict(step_or_raw: Step | bytes) -> dict[str, Any]:
    raw = step_or_raw.envelope if isinstance(step_or_raw, Step) else step_or_raw
    return msgspec.to_builtins(body_of(raw.decode()))


def signed(body: dict[str, Any] | bytes, *signers: Member) -> bytes:
    """An envelope over exactly these body bytes (for bodies the Structs would refuse)."""
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return sign(raw, [m.signer for m in signers])


FIXTURE_LEDGER = Path(__file__).parent / "fixtures" / "ledger-v0.1"
# Its ledger's verifier key as its operator would hand it over: read from the fixture, never
# from a copy of its data folder.
FIXTURE_VKEY = FIXTURE_LEDGER / "ledger-keys" / "ca87303d.vkey"


def copy_fixture_ledger(data: Path) -> Path:
    """The ledger written by v0.1 (tests/fixtures/ledger-v0.1) copied to `data`, its private
    keys made 0600 again (git keeps only 0644, and the ledger refuses keys others can read)."""
    shutil.copytree(FIXTURE_LEDGER, data, ignore=shutil.ignore_patterns("README.md"))
    for key in [data / "ledger-key", *(data / "demo-keys").glob("*.key")]:
        key.chmod(0o600)
    return data


_SCRIPT = Path(sys.executable).parent / "coi"
COI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ledger.cli"]


def _coi_env(tmp: Path, more: dict[str, str]) -> dict[str, str]:
    # The test's own trust store and signer folder (tests/conftest.py), else one beside its data.
    config = os.environ.get("COI_CONFIG_DIR") or str(tmp / "coi-config")
    env = {**os.environ, "COI_DATA_DIR": str(tmp / "coi-data")}
    env.pop("COI_DATABASE_URL", None)  # the ledger in tmp/coi-data, unless `more` names one
    return {**env, "COI_CONFIG_DIR": config, **more}


@functools.cache
def _asking() -> frozenset[tuple[str, ...]]:
    """The commands that take --passphrase-fd (e.g. ("principals", "add")), from the parser."""
    found = set()

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        if "--passphrase-fd" in parser._option_string_actions:
            found.add(words)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))

    walk(cli.parser(), ())
    return frozenset(found)


@contextlib.contextmanager
def passphrase_fd(passphrase: str, lines: int = 8) -> Iterator[int]:
    """A pipe's read end holding `passphrase` on each of `lines` lines, closed after."""
    read, write = os.pipe()
    os.write(write, (passphrase + "\n").encode() * lines)
    os.close(write)
    try:
        yield read
    finally:
        os.close(read)


def with_passphrase(args: tuple[str, ...], fd: int) -> list[str]:
    """`args` with `--passphrase-fd FD` when their command asks for passphrases (as a person's
    passphrase never comes from the environment)."""
    asks = any(tuple(args[: len(words)]) == words for words in _asking())
    return [*args, "--passphrase-fd", str(fd)] if asks else list(args)


def coi(
    tmp: Path, *args: str, stdin: str | None = None, passphrase: str = "correct horse", **more: str
) -> subprocess.CompletedProcess[str]:
    """`coi ARGS` as a process, in `tmp` with its data in tmp/coi-data; `passphrase` on a
    descriptor, one line per key asked for."""
    with passphrase_fd(passphrase) as fd:
        return subprocess.run(
            [*COI, *with_passphrase(args, fd)], input=stdin, capture_output=True, text=True,
            env=_coi_env(tmp, more), cwd=tmp, timeout=120, pass_fds=(fd,),
        )  # fmt: skip


def coi_here(
    tmp: Path, *args: str, stdin: str | None = None, passphrase: str = "correct horse", **more: str
) -> subprocess.CompletedProcess[str]:
    """`coi ARGS` as `coi` runs it (same environment, folder and streams) inside this process:
    for the steps a test needs done rather than tested, without a process start each."""
    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(_coi_env(tmp, more))
        os.chdir(tmp)
        sys.stdin = io.TextIOWrapper(io.BytesIO((stdin or "").encode()))
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            passphrase_fd(passphrase) as fd,
        ):
            code = cli.main(with_passphrase(args, fd))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["coi", *args], code, out.getvalue(), err.getvalue())


# Nesting far beyond any parser's recursion limit.
DEEP = "[" * 100_000 + "]" * 100_000


def sealed_ledger(url: str, patients: int = 2) -> tuple[NoteSigner, int]:
    """A new ledger at `url`: the demo cast registered, the first policy boundary and
    `patients` journeys under a signed checkpoint. Returns the checkpoint's signer and its tree size."""
    app = LedgerApplication(url)
    cast = Cast()
    register_cast(app, cast, compressed_run(datetime.now(UTC)).registered_at)
    for i in range(patients):
        advance(app, new_journey(cast, index=i))
    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    size = MerkleLog(app).checkpoint(signer, signer.name, memory=None).size
    app.close()
    return signer, size
