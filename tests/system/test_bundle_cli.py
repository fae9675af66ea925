"""`coi export bundle` and `coi verify-bundle` as a user runs them; verify-bundle in a process
where no database driver, event store or Kafka client can be imported."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import zipfile
from contextlib import closing
from pathlib import Path

import pytest

from ledger.transparency.cosignature import Cosigner
from ledger.transparency.records import header_of, row_record
from tests.support import coi, copy_fixture_ledger, sealed_ledger
from tests.system.test_fixture_ledger_cli import PATIENT
from tests.system.test_standalone_verifier import BLOCKED, BLOCKER, ROOT

# Run in the child, after BLOCKER: `coi verify-bundle` itself, then what it loaded.
CHILD = (
    BLOCKER
    + r"""
import io

from ledger.cli import main

out = io.StringIO()
code = main(["verify-bundle", *ARGUMENTS], out=out)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": loaded}))
"""
)


class Ledger:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "coi-data").mkdir()
        path = folder / "coi-data" / "ledger.sqlite"  # coi's default
        signer, _ = sealed_ledger(f"sqlite:///{path}")
        self.key = folder / "ledger.vkey"
        self.key.write_text(signer.verifier.encode() + "\n")
        with closing(sqlite3.connect(path)) as db:
            rows = db.execute("SELECT rowid, originator_id, originator_version, state FROM stored_events")
            self.coi = next(c for row in rows if (c := header_of(row_record(row).envelope).coi) is not None)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return coi(self.folder, *args)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return Ledger(tmp_path_factory.mktemp("bundle-cli"))


def _verify_alone(bundle: Path, key: Path) -> dict[str, object]:
    arguments = json.dumps([BLOCKED, [], str(bundle), "--trusted-key", str(key)])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, arguments], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_bundle_is_exported_and_verified_with_no_database(ledger: Ledger) -> None:
    done = ledger.run("export", "bundle", "--coi", ledger.coi, "--out", "patient.zip")
    assert done.returncode == 0, done.stderr
    assert "wrote patient.zip" in done.stdout and "proved against the checkpoint at tree size" in done.stdout
    result = _verify_alone(ledger.folder / "patient.zip", ledger.key)
    assert result["code"] == 0, result["out"]
    out = str(result["out"])
    assert f"the chain of COI {ledger.coi} is unbroken from its first record" in out
    assert "the domain rules hold over these records" in out and "were not replayed" not in out
    assert out.startswith("OK: patient.zip\n"), out  # the roots line goes to stderr, as coi verify's
    assert "Cannot prove from this bundle:" in out and "anything after the checkpoint" in out
    assert result["loaded"] == [], result["loaded"]


def test_a_tampered_bundle_fails_with_exit_1_naming_the_file(ledger: Ledger) -> None:
    assert ledger.run("export", "bundle", "--batch", f"B-{ledger.coi}", "--out", "batch.zip").returncode == 0
    with zipfile.ZipFile(ledger.folder / "batch.zip") as z:
        files = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(ledger.folder / "tampered.zip", "w") as z:
        for name, data in files.items():
            z.writestr(name, data.replace(b"coi-ledger.test/log", b"coi-ledger.test/LOG"))
    done = ledger.run("verify-bundle", "tampered.zip", "--trusted-key", str(ledger.key))
    assert done.returncode == 1 and "FAILED: checkpoint.note: changed" in done.stdout, done.stdout


def test_witness_keys_without_a_quorum_require_one_cosignature(ledger: Ledger) -> None:
    """`--witness-key` alone means quorum 1: a checkpoint no witness cosigned does not pass."""
    assert (
        ledger.run("export", "bundle", "--from-seq", "1", "--to-seq", "3", "--out", "w.zip").returncode == 0
    )
    (ledger.folder / "w1.vkey").write_text(Cosigner.generate("witness.test/w1").verifier.encode() + "\n")
    done = ledger.run("verify-bundle", "w.zip", "--trusted-key", str(ledger.key), "--witness-key", "w1.vkey")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: checkpoint.note: the bundle's checkpoint (tree size" in done.stdout, done.stdout
    alone = ledger.run("verify-bundle", "w.zip", "--trusted-key", str(ledger.key), "--quorum", "1")
    assert alone.returncode == 2 and "give their --witness-key files" in alone.stderr, alone.stderr
    assert "trusted roots" not in alone.stderr  # the usage error comes before anything is printed


def test_without_a_trusted_key_nothing_is_proved(ledger: Ledger) -> None:
    assert (
        ledger.run("export", "bundle", "--from-seq", "1", "--to-seq", "3", "--out", "range.zip").returncode
        == 0
    )
    done = ledger.run("verify-bundle", "range.zip")
    assert done.returncode == 1 and "no trusted key for the log" in done.stdout, done.stdout
    assert "Proved" not in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["export", "bundle", "--coi", "X", "--to-seq", "3", "--out", "x.zip"],
            "--to-seq goes with --from-seq",
        ),
        (
            ["export", "bundle", "--from-seq", "9", "--to-seq", "3", "--out", "x.zip"],
            "--to-seq 3 is before --from-seq 9",
        ),
        (["export", "bundle", "--from-seq", "-5", "--to-seq", "3", "--out", "x.zip"], "--from-seq -5: a"),
        (["export", "bundle", "--from-seq", "1", "--to-seq", "-3", "--out", "x.zip"], "--to-seq -3: a"),
        (["export", "bundle", "--batch", "B-NONE", "--out", "x.zip"], "no record names batch B-NONE"),
        (
            ["export", "bundle", "--from-seq", "1", "--to-seq", "3", "--out", "coi-data"],
            "--out coi-data: cannot",
        ),
        (["verify-bundle", "nowhere.zip"], "no bundle at nowhere.zip"),
        (["verify-bundle", "x.zip", "--trusted-key", "nowhere.vkey"], "cannot read the verifier key file"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(ledger: Ledger, args: list[str], message: str) -> None:
    (ledger.folder / "x.zip").unlink(missing_ok=True)
    if args[0] == "verify-bundle" and args[1] == "x.zip":
        (ledger.folder / "x.zip").write_bytes(b"")
    done = ledger.run(*args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    if args[0] == "export":
        assert not (ledger.folder / "x.zip").exists()


def test_a_ledger_written_by_v0_1_exports_a_bundle_that_verifies(tmp_path: Path) -> None:
    data = copy_fixture_ledger(tmp_path / "coi-data")
    (key,) = (data / "ledger-keys").glob("*.vkey")
    done = coi(tmp_path, "export", "bundle", "--coi", PATIENT, "--out", "old.zip")
    assert done.returncode == 0, done.stderr
    done = coi(tmp_path, "verify-bundle", "old.zip", "--trusted-key", str(key))
    assert done.returncode == 0, done.stdout
    assert f"the chain of COI {PATIENT} is unbroken from its first record" in done.stdout


def test_checkpoints_kept_outside_the_ledger_are_checked(ledger: Ledger) -> None:
    assert ledger.run("export", "bundle", "--coi", ledger.coi, "--out", "kept.zip").returncode == 0
    with zipfile.ZipFile(ledger.folder / "kept.zip") as z:
        note = z.read("checkpoint.note")
    kept, empty = ledger.folder / "kept", ledger.folder / "empty"
    kept.mkdir()
    empty.mkdir()
    (kept / "log.note").write_bytes(note)
    done = ledger.run("verify-bundle", "kept.zip", "--trusted-key", str(ledger.key), "--checkpoints", "kept")
    assert done.returncode == 0 and "the checkpoint is the one saved outside the ledger" in done.stdout, (
        done.stdout
    )
    done = ledger.run("verify-bundle", "kept.zip", "--trusted-key", str(ledger.key), "--checkpoints", "empty")
    assert done.returncode == 2 and "no checkpoint notes" in done.stderr, done.stderr


def test_the_roots_go_to_stderr_and_a_non_zip_is_said_before_them(ledger: Ledger) -> None:
    assert ledger.run("export", "bundle", "--coi", ledger.coi, "--out", "roots.zip").returncode == 0
    done = ledger.run("verify-bundle", "roots.zip", "--trusted-key", str(ledger.key))
    assert done.returncode == 0, done.stdout
    assert f"coi verify-bundle: trusted roots: --trusted-key: {ledger.key}" in done.stderr
    assert "trusted roots" not in done.stdout
    (ledger.folder / "plain.zip").write_bytes(b"not a zip")
    done = ledger.run("verify-bundle", "plain.zip")
    assert done.returncode == 1 and done.stdout.startswith("FAILED: plain.zip: not a readable zip"), (
        done.stdout
    )
    assert "trusted roots" not in done.stdout + done.stderr


def test_a_changed_origin_in_the_manifest_is_named_before_any_key(ledger: Ledger) -> None:
    assert ledger.run("export", "bundle", "--coi", ledger.coi, "--out", "origin.zip").returncode == 0
    with zipfile.ZipFile(ledger.folder / "origin.zip") as z:
        files = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(files["manifest.json"])
    manifest["origin"] = "x/y"
    files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(ledger.folder / "moved.zip", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    for keys in ([], ["--trusted-key", str(ledger.key)]):
        done = ledger.run("verify-bundle", "moved.zip", *keys)
        assert done.returncode == 1 and done.stdout.startswith("FAILED: manifest.json: says origin 'x/y'"), (
            done.stdout
        )
