"""The `coi` command as a user runs it: real processes, a real SQLite file, real keys."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast, Journey
from ledger.demo.kit import ManualClock, register_cast
from ledger.demo.run import OUTCOMES
from ledger.site.signing import manifestations
from ledger.transparency import merkle
from ledger.wire.dsse import sign
from ledger.wire.keys import load_key
from tests.support import COI, DEEP, advance, coi, coi_here, passphrase_fd


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """A ledger with an administrator and one registered nurse (key files in coi-data/keys),
    made in-process: what the tests below run as processes is what they test."""
    done = coi_here(tmp_path, "init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF")
    assert done.returncode == 0, done.stderr
    assert (
        coi_here(tmp_path, "keys", "new", "--principal", "nurse.kim", "--name", "Kim Nurse").returncode == 0
    )
    keys = tmp_path / "coi-data" / "keys"
    site = coi_here(
        tmp_path, "sites", "add", "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF",
        "--code", "US-BDW", "--name", "Bridgewater NJ", "--country", "US", "--time-zone", "America/New_York",
        "--kind", "treatment",
    )  # fmt: skip
    assert site.returncode == 0, site.stdout + site.stderr
    added = coi_here(
        tmp_path, "principals", "add", "--admin-key", str(keys / "admin.jane.key"),
        "--public-key", str(keys / "nurse.kim.key.pub"), "--role", "enrolment", "--site", "US-SSF",
        "--bind-site", "US-BDW",
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    return tmp_path


def _enrolment(tmp: Path) -> Path:
    body = {
        "type": "enrolled", "coi": "CHW04512600A0B1", "site": "US-BDW", "actor": "nurse.kim",
        "patient_key": base64.b64encode(bytes(32)).decode(), "order_id": "ORD-1",
        "product": "anti-CD19 CAR-T", "treatment_site": "US-BDW",
    }  # fmt: skip
    path = tmp / "body.json"
    path.write_text(json.dumps(body))
    return path


def test_init_writes_an_encrypted_private_key_only_its_owner_can_read(ledger: Path) -> None:
    key = ledger / "coi-data" / "keys" / "admin.jane.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    data = json.loads(key.read_text())
    assert data["encrypted"] is True and data["sealed"]["kdf"] == "scrypt"
    again = coi(ledger, "init", "--admin", "admin.other", "--name", "Other", "--site", "US-SSF")
    assert again.returncode == 2 and "already initialised" in again.stderr


def test_sign_then_submit_then_history(ledger: Path) -> None:
    key = ledger / "coi-data" / "keys" / "nurse.kim.key"
    signed = coi(ledger, "sign", "--key", str(key), str(_enrolment(ledger)))
    assert signed.returncode == 0, signed.stderr
    envelope = json.loads(signed.stdout)
    assert envelope["payloadType"] == "application/vnd.coi-ledger.event+json"
    first = coi(ledger, "submit", "-", stdin=signed.stdout)
    assert first.returncode == 0 and "accepted" in first.stdout, first.stdout + first.stderr
    second = coi(ledger, "submit", "-", stdin=signed.stdout)
    assert second.returncode == 0 and "duplicate" in second.stdout
    shown = coi(ledger, "history", "CHW04512600A0B1")
    assert shown.returncode == 0 and "Kim Nurse (nurse.kim, person) performed" in shown.stdout


def test_submit_reports_each_line_and_exits_2_on_rejections(ledger: Path) -> None:
    key = ledger / "coi-data" / "keys" / "nurse.kim.key"
    good = coi(ledger, "sign", "--key", str(key), str(_enrolment(ledger))).stdout
    done = coi(ledger, "submit", "-", stdin="{broken\n" + good)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert lines[0].startswith("1: rejected  malformed_json")
    assert lines[1].startswith("2: accepted")


def test_submit_json_output_is_machine_readable(ledger: Path) -> None:
    done = coi(
        ledger, "submit", "--json", "-", stdin='{"payloadType": "x", "payload": "", "signatures": []}\n'
    )
    outcome = json.loads(done.stdout)
    assert outcome == {
        "status": "rejected",
        "code": "wrong_payload_type",
        "message": outcome["message"],
        "field": "payloadType",
    }


def test_sign_checks_the_body_before_signing(ledger: Path) -> None:
    key = ledger / "coi-data" / "keys" / "nurse.kim.key"
    body = json.loads(_enrolment(ledger).read_text())
    body["volume"] = 3
    (ledger / "bad.json").write_text(json.dumps(body))
    done = coi(ledger, "sign", "--key", str(key), str(ledger / "bad.json"))
    assert done.returncode == 2 and "unknown_field" in done.stderr and "volume" in done.stderr
    assert done.stdout == ""


def test_phi_in_free_text_is_refused_at_signing_and_at_submission(ledger: Path) -> None:
    """`coi sign` refuses it; an envelope a site system signed itself is refused by `coi
    submit`, exit 2, naming the field, and the same body without it is accepted."""
    key = ledger / "coi-data" / "keys" / "nurse.kim.key"
    body = json.loads(_enrolment(ledger).read_text())
    body["product"] = "anti-CD19 CAR-T, MRN: 00123456"
    (ledger / "phi.json").write_text(json.dumps(body))
    done = coi(ledger, "sign", "--key", str(key), str(ledger / "phi.json"))
    assert done.returncode == 2 and "phi_suspected" in done.stderr and "product" in done.stderr, done.stderr
    assert done.stdout == "" and "00123456" not in done.stderr

    nurse = load_key(key, b"correct horse")
    now = datetime.now(UTC)
    body.update(event_id=str(uuid.uuid4()), occurred_at=now.isoformat())
    body["manifestations"] = msgspec.to_builtins(manifestations([nurse], "enrolled", now))

    def submitted(body: dict[str, object]) -> subprocess.CompletedProcess[str]:
        envelope = sign(json.dumps(body).encode(), [nurse.signer]).decode()
        return coi(ledger, "submit", "--json", "-", stdin=envelope + "\n")

    refused = submitted(body)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert json.loads(refused.stdout) | {"message": ""} == {
        "status": "rejected", "code": "phi_suspected", "message": "", "field": "product",
    }  # fmt: skip
    assert "00123456" not in refused.stdout + refused.stderr
    body["product"] = "anti-CD19 CAR-T"
    accepted = submitted(body)
    assert accepted.returncode == 0 and json.loads(accepted.stdout)["status"] == "accepted", accepted.stdout


def test_a_wrong_passphrase_says_so(ledger: Path) -> None:
    key = ledger / "coi-data" / "keys" / "nurse.kim.key"
    done = coi(ledger, "sign", "--key", str(key), str(_enrolment(ledger)), passphrase="wrong one")
    assert done.returncode == 2 and "check the passphrase" in done.stderr


def test_people_get_encrypted_keys(tmp_path: Path) -> None:
    done = coi(tmp_path, "keys", "new", "--principal", "qa.x", "--name", "Q", "--no-passphrase")
    assert done.returncode == 2 and "Part 11" in done.stderr
    device = coi(
        tmp_path,
        "keys",
        "new",
        "--principal",
        "shuttle.x",
        "--name",
        "Shuttle",
        "--kind",
        "device",
        "--no-passphrase",
    )
    assert device.returncode == 0
    key = json.loads((tmp_path / "coi-data" / "keys" / "shuttle.x.key").read_text())
    assert key["encrypted"] is False


def test_schema_is_a_json_schema_of_every_event_type(tmp_path: Path) -> None:
    done = coi(tmp_path, "schema")
    schema = json.loads(done.stdout)
    text = json.dumps(schema)
    for tag in ("enrolled", "apheresis_collected", "infused", "record_corrected", "principal_revoked"):
        assert f'"{tag}"' in text
    assert "$defs" in schema


def test_demo_runs_and_says_what_to_do_next(tmp_path: Path) -> None:
    done = coi(tmp_path, "demo")  # eight patients by default, cycling through the variants
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("\n\n")[0].splitlines()[1:]
    assert [line.split("  ")[-1] for line in table] == [
        OUTCOMES[v] for v in ("happy", "qc_failure", "excursion", "identity_mismatch", "retest",
                              "happy", "qc_failure", "excursion")
    ]  # fmt: skip
    assert "\n8 patients, " in done.stdout and "Next:" in done.stdout
    again = coi(tmp_path, "demo", "--patients", "2")  # a second run reuses the demo's principals
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_demo_refuses_a_ledger_it_did_not_set_up(ledger: Path) -> None:
    done = coi(ledger, "demo")
    assert done.returncode == 2 and "COI_DATA_DIR" in done.stderr


def test_a_bad_database_url_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "COI_DATABASE_URL": "mysql://nobody"}
    done = subprocess.run([*COI, "history", "X"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and "sqlite or postgresql" in done.stderr


def test_checkpoint_prove_and_verify_from_the_command_line(tmp_path: Path) -> None:
    assert coi(tmp_path, "demo", "--patients", "4").returncode == 0
    note = coi(tmp_path, "checkpoint").stdout
    origin, size, root_b64 = note.splitlines()[:3]
    assert origin.startswith("coi-ledger.local/") and origin != "coi-ledger.local/log"  # its own
    assert note.splitlines()[3] == "" and note.splitlines()[4].startswith(f"\u2014 {origin} ")
    proof = json.loads(coi(tmp_path, "prove", "30").stdout)
    assert proof["tree_size"] == int(size) and proof["root_hash"] == root_b64
    assert merkle.verify_inclusion(
        proof["leaf_index"], proof["tree_size"], base64.b64decode(proof["leaf_hash"]),
        [base64.b64decode(h) for h in proof["inclusion_path"]], base64.b64decode(proof["root_hash"]),
    )  # fmt: skip
    ok = coi(tmp_path, "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("OK:"), ok.stdout + ok.stderr
    # A second demo run, a new checkpoint, and a consistency proof between the two.
    assert coi(tmp_path, "demo", "--patients", "2").returncode == 0
    new_size = int(coi(tmp_path, "checkpoint", "--sign").stdout.splitlines()[1])
    consistency = json.loads(coi(tmp_path, "prove", "--consistency", size, str(new_size)).stdout)
    assert merkle.verify_consistency(
        int(size), new_size, base64.b64decode(consistency["first_root_hash"]),
        base64.b64decode(consistency["second_root_hash"]),
        [base64.b64decode(h) for h in consistency["consistency_path"]],
    )  # fmt: skip
    assert coi(tmp_path, "verify", "--incremental").returncode == 0
    again = coi(tmp_path, "verify", "--incremental")
    assert again.returncode == 0 and "resumed after" in again.stdout
    # Edit one stored row by hand: verification fails, names the record, exits 1.
    with sqlite3.connect(tmp_path / "coi-data" / "ledger.sqlite") as db:
        db.execute(
            "UPDATE stored_events SET state = substr(state, 1, 299) || 'Q' || substr(state, 301) "
            "WHERE rowid = 12"
        )
    bad = coi(tmp_path, "verify")
    assert bad.returncode == 1 and bad.stdout.startswith("FAILED at sequence 12"), bad.stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing file", "cannot read"),
        ("deep JSON", "nested too deeply"),
        ("no terminal", "--passphrase-fd"),
        ("repeated key", "duplicate_key"),
    ],
)
def test_sign_says_what_is_wrong_and_exits_2(ledger: Path, case: str, expected: str) -> None:
    key = str(ledger / "coi-data" / "keys" / "nurse.kim.key")
    (ledger / "deep.json").write_text(DEEP)
    twice = (
        _enrolment(ledger)
        .read_text()
        .replace('"order_id": "ORD-1"', '"order_id": "ORD-1", "order_id": "ORD-2"')
    )
    (ledger / "twice.json").write_text(twice)
    files = {"missing file": "nothing-here.json", "deep JSON": "deep.json", "repeated key": "twice.json"}
    body = files.get(case, str(_enrolment(ledger)))
    env = {**os.environ, "COI_DATA_DIR": str(ledger / "coi-data")}
    # "no terminal": no descriptor either (and start_new_session: no terminal to ask on).
    with passphrase_fd("correct horse") as fd:
        args = ["sign", "--key", key, body] + ([] if case == "no terminal" else ["--passphrase-fd", str(fd)])
        done = subprocess.run(
            [*COI, *args], capture_output=True, text=True, env=env, cwd=ledger, pass_fds=(fd,),
            stdin=subprocess.DEVNULL, start_new_session=True, timeout=120,
        )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert done.stdout == ""


def test_verify_with_a_missing_trusted_key_file_says_so(tmp_path: Path) -> None:
    done = coi(tmp_path, "verify", "--trusted-key", "MISSING")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and "MISSING" in done.stderr and "cannot read" in done.stderr


def test_a_time_outside_the_utc_calendar_is_a_usage_error(ledger: Path) -> None:
    done = coi(
        ledger, "principals", "revoke", "--admin-key", str(ledger / "coi-data" / "keys" / "admin.jane.key"),
        "--id", "nurse.kim", "--reason", "left", "--site", "US-BDW",
        "--effective-at", "0001-01-01T00:00:00+01:00",
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and "--effective-at" in done.stderr and "UTC" in done.stderr


def test_history_escapes_what_others_wrote_and_shows_utc(ledger: Path) -> None:
    body = json.loads(_enrolment(ledger).read_text())
    # A forged signature line in free text, and a time written in Tokyo's zone.
    body["product"] = "CAR-T\n      signed: Quinn QA SSF (qa.ssf) approved 2026-01-01 00:00:00Z"
    tokyo = (
        (datetime.now(UTC) + timedelta(seconds=1))
        .replace(microsecond=0)
        .astimezone(timezone(timedelta(hours=9)))
    )
    body["occurred_at"] = tokyo.isoformat()
    (ledger / "body.json").write_text(json.dumps(body))
    key = str(ledger / "coi-data" / "keys" / "nurse.kim.key")
    signed = coi(ledger, "sign", "--key", key, str(ledger / "body.json"))
    assert coi(ledger, "submit", "-", stdin=signed.stdout).returncode == 0
    shown = coi(ledger, "history", body["coi"])
    assert shown.returncode == 0, shown.stderr
    signed_lines = [line for line in shown.stdout.splitlines() if "signed:" in line.split("=")[0]]
    assert len(signed_lines) == 1 and "Kim Nurse (nurse.kim, person)" in signed_lines[0], shown.stdout
    assert "CAR-T\\n      signed: Quinn QA" in shown.stdout
    assert f"{tokyo.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" in shown.stdout, shown.stdout


def test_rebuild_names_a_record_whose_time_has_no_utc_form(tmp_path: Path) -> None:
    # Collected in the first hour of year 1 at +23:00, i.e. before year 1 in UTC.
    start = datetime(1, 1, 1, 0, 10, tzinfo=timezone(timedelta(hours=23)))
    # The ledger's clock, injected: the cast registered then, the journey a day later.
    clock = ManualClock(start)
    app = LedgerApplication(f"sqlite:///{tmp_path / 'coi-data' / 'ledger.sqlite'}", clock=clock)
    cast = Cast()
    register_cast(app, cast, start)
    clock.advance(timedelta(days=1))
    advance(app, Journey(cast, 0, start), before="label_applied")
    done = coi(tmp_path, "projections", "rebuild")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and "has no UTC form" in done.stderr and "sequence" in done.stderr


def test_principals_list_shows_key_validity_in_utc(ledger: Path) -> None:
    keys = ledger / "coi-data" / "keys"
    made = coi(
        ledger,
        "keys",
        "new",
        "--principal",
        "cellq.x",
        "--name",
        "Cell Q",
        "--kind",
        "device",
        "--no-passphrase",
    )
    assert made.returncode == 0, made.stderr
    tokyo = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    body = {
        "type": "principal_registered", "site": "US-SSF", "actor": "admin.jane", "principal_id": "cellq.x",
        "kind": "device", "printed_name": "Cell Q", "roles": ["qc"],
        "public_key": json.loads((keys / "cellq.x.key.pub").read_text())["public_key"],
        "valid_from": tokyo.astimezone(timezone(timedelta(hours=9))).isoformat(),
    }  # fmt: skip
    (ledger / "reg.json").write_text(json.dumps(body))
    signed = coi(ledger, "sign", "--key", str(keys / "admin.jane.key"), str(ledger / "reg.json"))
    assert coi(ledger, "submit", "-", stdin=signed.stdout).returncode == 0
    listed = coi(ledger, "principals", "list").stdout
    assert f"from {tokyo:%Y-%m-%d %H:%M}Z" in listed.split("cellq.x ", 1)[1], listed


def test_keys_new_never_overwrites_a_key_file(ledger: Path) -> None:
    admin_key = ledger / "coi-data" / "keys" / "admin.jane.key"
    before = admin_key.read_bytes()
    done = coi(ledger, "keys", "new", "--principal", "admin.jane", "--name", "Jane Admin")
    assert done.returncode == 2 and "never overwritten" in done.stderr, done.stderr
    assert admin_key.read_bytes() == before


def test_submit_reports_stored_work_as_stored_when_no_checkpoint_can_be_signed(
    ledger: Path, config_dir: Path
) -> None:
    signed = coi(
        ledger, "sign", "--key", str(ledger / "coi-data" / "keys" / "nurse.kim.key"), str(_enrolment(ledger))
    )
    assert coi(ledger, "checkpoint", "--sign").returncode == 0
    (ledger_key,) = (config_dir / "signer").glob("*.key")  # made by coi init
    ledger_key.chmod(0o644)  # and now refused by the signer
    done = coi(ledger, "submit", "-", stdin=signed.stdout, COI_CHECKPOINT_EVERY="1")
    assert "accepted" in done.stdout and "no checkpoint was signed" in done.stderr, done.stderr
    assert done.returncode == 0


def test_keys_new_refuses_a_principal_id_the_registry_would_refuse(tmp_path: Path) -> None:
    done = coi(
        tmp_path,
        "keys",
        "new",
        "--principal",
        "Bad Id",
        "--name",
        "Bad",
        "--kind",
        "device",
        "--no-passphrase",
    )
    assert done.returncode == 2 and "--principal" in done.stderr, done.stderr
    assert not (tmp_path / "coi-data" / "keys").exists()


def test_submit_of_nothing_is_a_usage_error_not_a_success(ledger: Path) -> None:
    done = coi(ledger, "submit", "-", stdin="")
    assert done.returncode == 2 and "one JSON envelope per line" in done.stderr, done.stderr


def test_init_asks_where_the_administrator_acts_and_leaves_a_ledger_a_verifier_can_check_at_once(
    tmp_path: Path, config_dir: Path
) -> None:
    nowhere = coi_here(tmp_path, "init", "--admin", "admin.jane", "--name", "Jane Admin")
    assert nowhere.returncode == 2 and "--site" in nowhere.stderr, nowhere.stderr
    done = coi_here(tmp_path, "init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF")
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(coi(tmp_path, "trust", "list", "--format", "json").stdout)  # what init trusts
    vkey = tmp_path / "ledger.vkey"
    vkey.write_text(entry["verifier_key"] + "\n")
    verified = coi(tmp_path, "verify", "--trusted-key", str(vkey))
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr
    assert f"--trusted-key: {vkey}" in verified.stderr  # the roots it used
    (ledger_key,) = (config_dir / "signer").glob("*.key")
    wrong = coi(tmp_path, "verify", "--trusted-key", str(ledger_key))
    assert wrong.returncode == 2 and "private signing key" in wrong.stderr, wrong.stderr
    assert "PRIVATE" not in wrong.stderr


def test_sites_are_added_listed_and_bound_from_the_command_line(ledger: Path) -> None:
    admin = str(ledger / "coi-data" / "keys" / "admin.jane.key")
    listed = coi(ledger, "sites", "list", "--format", "csv")
    assert listed.returncode == 0 and listed.stdout.splitlines()[0] == (
        "code,name,country,time_zone,kind,registered_at"
    ), listed.stdout
    # init's own site, then the one the fixture added
    assert [line.split(",")[:5] for line in listed.stdout.splitlines()[1:]] == [
        ["US-BDW", "Bridgewater NJ", "US", "America/New_York", "treatment"],
        ["US-SSF", "US-SSF", "US", "UTC", "administration"],
    ]
    add = ("sites", "add", "--admin-key", admin, "--site", "US-SSF", "--country", "JP", "--kind", "treatment")
    bad_zone = coi(ledger, *add, "--code", "JP-KAS", "--name", "Kashiwa", "--time-zone", "Asia/Nowhere")
    assert (
        bad_zone.returncode == 2 and "invalid_value" in bad_zone.stdout and "[time_zone]" in bad_zone.stdout
    )
    kashiwa = coi(ledger, *add, "--code", "JP-KAS", "--name", "Kashiwa", "--time-zone", "Asia/Tokyo")
    assert kashiwa.returncode == 0 and "site_registered" in kashiwa.stdout, kashiwa.stdout + kashiwa.stderr
    again = coi(ledger, *add, "--code", "JP-KAS", "--name", "Kashiwa", "--time-zone", "Asia/Tokyo")
    assert again.returncode == 2 and "site_exists" in again.stdout
    shown = json.loads(coi(ledger, "sites", "list", "--format", "json").stdout)
    assert [s["code"] for s in shown] == ["JP-KAS", "US-BDW", "US-SSF"]

    bind = ("principals", "bind", "--admin-key", admin, "--site", "US-SSF", "--id", "nurse.kim")
    unknown = coi(ledger, *bind, "--bind-site", "XX-NOWHERE")
    assert unknown.returncode == 2 and "unknown_site" in unknown.stdout, unknown.stdout
    bound = coi(ledger, *bind, "--bind-site", "JP-KAS")
    assert bound.returncode == 0 and "principal_sites_bound" in bound.stdout, bound.stdout + bound.stderr
    people = {
        p["principal_id"]: p["sites"]
        for p in json.loads(coi(ledger, "principals", "list", "--format", "json").stdout)
    }
    assert people == {
        "admin.jane": ["US-SSF"],
        "ledger.service": ["US-SSF"],
        "nurse.kim": ["JP-KAS", "US-BDW"],
    }
    assert "JP-KAS,US-BDW" in coi(ledger, "principals", "list").stdout

    # the nurse enrols at her site; at the administrator's she is not bound
    body = json.loads(_enrolment(ledger).read_text()) | {"site": "US-SSF"}
    (ledger / "elsewhere.json").write_text(json.dumps(body))
    key = str(ledger / "coi-data" / "keys" / "nurse.kim.key")
    elsewhere = coi(ledger, "sign", "--key", key, str(ledger / "elsewhere.json"))
    refused = coi(ledger, "submit", "-", stdin=elsewhere.stdout)
    assert refused.returncode == 2 and "site_not_bound" in refused.stdout and "[actor]" in refused.stdout
    signed = coi(ledger, "sign", "--key", key, str(_enrolment(ledger)))
    assert coi(ledger, "submit", "-", stdin=signed.stdout).returncode == 0
    assert coi(ledger, "checkpoint", "--sign").returncode == 0
    verified = coi(ledger, "verify")
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr
