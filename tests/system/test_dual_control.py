"""Dual control from the command line (issue 14, item 3): two administrators from `coi init`,
a grant or a lost key's replacement prepared by one (`--cosigner ID --out draft.json`), signed
by the other (`coi cosign`) and submitted; each refusal by its code. Real processes, a real
SQLite file, real encrypted key files."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from ledger.wire.dsse import sign
from ledger.wire.keys import load_key
from tests.support import coi, coi_here


def _here(tmp: Path, *args: str) -> str:
    done = coi_here(tmp, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """`coi init` with two administrators, and the public key of a QA person to register."""
    said = _here(
        tmp_path, "init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF",
        "--second-admin", "admin.omar", "--second-name", "Omar Admin",
    )  # fmt: skip
    assert "second admin key:" in said and "dual control:" not in said
    _here(tmp_path, "keys", "new", "--principal", "qa.lee", "--name", "Lee QA")
    return tmp_path


def _keys(tmp: Path) -> Path:
    return tmp / "coi-data" / "keys"


def _code(done: object) -> str:
    """The reason code of the one rejected line `coi` printed."""
    text = getattr(done, "stdout", "") + getattr(done, "stderr", "")
    return text.split("rejected", 1)[1].split(":", 1)[0].strip()


def test_a_qa_grant_needs_two_administrators_prepared_cosigned_and_submitted(ledger: Path) -> None:
    keys = _keys(ledger)
    add = ["principals", "add", "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF",
           "--public-key", str(keys / "qa.lee.key.pub"), "--role", "qa", "--bind-site", "US-SSF"]  # fmt: skip
    alone = coi(ledger, *add)
    assert alone.returncode == 2 and _code(alone) == "second_administrator_required", alone.stdout
    assert "--cosigner" in alone.stdout  # what to do instead

    drafted = coi(ledger, *add, "--cosigner", "admin.omar", "--out", "draft.json")
    assert drafted.returncode == 0, drafted.stderr
    assert "coi cosign" in drafted.stderr
    # A draft is one signature short: the ledger refuses it as it is.
    early = coi(ledger, "submit", "draft.json")
    assert early.returncode == 2 and _code(early) == "manifestation_mismatch"
    assert "waits for coi cosign" in early.stdout
    # The manifestation names the registered printed name, read from the ledger.
    body = json.loads(base64.b64decode(json.loads((ledger / "draft.json").read_text())["payload"]))
    assert [(m["principal"], m["printed_name"]) for m in body["manifestations"]] == [
        ("admin.jane", "Jane Admin"),
        ("admin.omar", "Omar Admin"),
    ]

    wrong = coi(ledger, "cosign", "--key", str(keys / "qa.lee.key"), "draft.json")
    assert wrong.returncode == 2 and "rejected missing_manifestation" in wrong.stderr
    cosigned = coi(
        ledger, "cosign", "--key", str(keys / "admin.omar.key"), "draft.json", "--out", "both.json"
    )
    assert cosigned.returncode == 0, cosigned.stderr
    assert "admin.omar signs principal_registered" in cosigned.stderr
    again = coi(ledger, "cosign", "--key", str(keys / "admin.omar.key"), "both.json")
    assert again.returncode == 2 and "signed this envelope already" in again.stderr
    submitted = coi(ledger, "submit", "both.json")
    assert submitted.returncode == 0 and "accepted" in submitted.stdout, submitted.stdout + submitted.stderr

    listed = coi(ledger, "principals", "list")
    assert any(
        line.split()[:5] == ["qa.lee", "person", "qa", "US-SSF", "Lee"] for line in listed.stdout.splitlines()
    ), listed.stdout


def test_cosign_refuses_a_manifestation_signed_further_from_now_than_the_skew(ledger: Path) -> None:
    """The draft says when the second administrator signs: that time is now, within the skew."""
    keys = _keys(ledger)
    jane = load_key(keys / "admin.jane.key", b"correct horse")
    signed_at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    pub = json.loads((keys / "qa.lee.key.pub").read_text())
    body = {
        "type": "principal_registered", "event_id": str(uuid.uuid4()), "occurred_at": signed_at,
        "site": "US-SSF", "actor": "admin.jane", "principal_id": "qa.lee", "kind": "person",
        "printed_name": "Lee QA", "roles": ["qa"], "public_key": pub["public_key"], "valid_from": signed_at,
        "manifestations": [
            {"principal": p, "printed_name": n, "signed_at": signed_at, "meaning": "performed"}
            for p, n in (("admin.jane", "Jane Admin"), ("admin.omar", "Omar Admin"))
        ],
    }  # fmt: skip
    (ledger / "stale.json").write_bytes(sign(msgspec.json.encode(body), [jane.signer]))
    stale = coi(ledger, "cosign", "--key", str(keys / "admin.omar.key"), "stale.json")
    assert stale.returncode == 2 and "rejected signed_at_out_of_range" in stale.stderr, stale.stderr
    assert "10.0 minutes from now" in stale.stderr and stale.stdout == ""


def test_a_lost_key_is_replaced_by_two_and_its_holder_is_told(ledger: Path) -> None:
    keys = _keys(ledger)
    grant = ["--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF", "--cosigner", "admin.omar"]
    _here(ledger, "principals", "add", *grant, "--public-key", str(keys / "qa.lee.key.pub"), "--role", "qa",
          "--out", "grant.json")  # fmt: skip
    _here(ledger, "cosign", "--key", str(keys / "admin.omar.key"), "grant.json", "--out", "grant2.json")
    _here(ledger, "submit", "grant2.json")
    _here(ledger, "keys", "new", "--principal", "qa.lee", "--name", "Lee QA", "--out", str(keys / "lee2.key"))
    rotate = ["principals", "rotate", "--public-key", str(keys / "lee2.key.pub")]

    alone = coi(ledger, *rotate, "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF")
    assert alone.returncode == 2 and _code(alone) == "second_administrator_required"
    routine = coi(
        ledger, *rotate, "--routine", "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF"
    )
    assert routine.returncode == 2 and _code(routine) == "missing_cosignature"
    assert "--old-key" in routine.stdout

    drafted = coi(ledger, *rotate, *grant, "--out", "loss.json")
    assert drafted.returncode == 0, drafted.stderr
    cosigned = coi(ledger, "cosign", "--key", str(keys / "admin.omar.key"), "loss.json")
    submitted = coi(ledger, "submit", "-", stdin=cosigned.stdout)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    # Lee's next use of the old key says who replaced it.
    (ledger / "body.json").write_text(json.dumps({
        "type": "deviation_opened", "coi": "CHW04512600A0B1", "site": "US-SSF", "actor": "qa.lee",
        "deviation_id": "DV-1", "description": "found", "severity": "minor",
    }))  # fmt: skip
    told = coi(ledger, "sign", "--key", str(keys / "qa.lee.key"), "body.json")
    assert told.returncode == 0, told.stderr
    assert "NOTE qa.lee: your key qa.lee:" in told.stderr and "by admin.jane, admin.omar" in told.stderr
    # The new key is Lee's own: nothing to tell.
    assert "NOTE" not in coi(ledger, "sign", "--key", str(keys / "lee2.key"), "body.json").stderr


def test_no_revocation_leaves_fewer_than_two_administrators(ledger: Path) -> None:
    keys = _keys(ledger)
    revoke = coi(ledger, "principals", "revoke", "--admin-key", str(keys / "admin.jane.key"),
                 "--site", "US-SSF", "--id", "admin.omar", "--reason", "left")  # fmt: skip
    assert revoke.returncode == 2 and _code(revoke) == "last_administrator"
    assert "dual control needs two" in revoke.stdout


def test_coi_sign_prepares_a_draft_where_the_ledger_is_not_reachable(ledger: Path) -> None:
    """A signing station without the database: the cosigner's printed name is given by hand;
    the draft, cosigned there too, is submitted where the ledger is."""
    keys = _keys(ledger)
    pub = json.loads((keys / "qa.lee.key.pub").read_text())
    (ledger / "body.json").write_text(json.dumps({
        "type": "principal_registered", "site": "US-SSF", "actor": "admin.jane", "principal_id": "qa.lee",
        "kind": "person", "printed_name": "Lee QA", "roles": ["qa"], "public_key": pub["public_key"],
        "valid_from": datetime.now(UTC).isoformat(),
    }))  # fmt: skip
    elsewhere = {"COI_DATABASE_URL": f"sqlite:///{ledger / 'nowhere.sqlite'}"}
    draft = ["sign", "--key", str(keys / "admin.jane.key"), "--cosigner", "admin.omar", "--out", "d.json"]
    unnamed = coi(ledger, *draft, "body.json", **elsewhere)
    assert unnamed.returncode == 2 and "--cosigner-name" in unnamed.stderr
    named = coi(ledger, *draft, "--cosigner-name", "Omar Admin", "body.json", **elsewhere)
    assert named.returncode == 0, named.stderr
    assert not (ledger / "nowhere.sqlite").exists()  # finding out created nothing
    omar = ["cosign", "--key", str(keys / "admin.omar.key"), "d.json", "--out", "e.json"]
    cosigned = coi(ledger, *omar, **elsewhere)
    assert cosigned.returncode == 0, cosigned.stderr
    envelope = json.loads((ledger / "e.json").read_text())
    assert [s["keyid"].split(":")[0] for s in envelope["signatures"]] == ["admin.jane", "admin.omar"]
    submitted = coi(ledger, "submit", "e.json")
    assert submitted.returncode == 0 and "accepted" in submitted.stdout, submitted.stdout + submitted.stderr


def test_init_with_one_administrator_says_when_dual_control_starts(tmp_path: Path) -> None:
    said = _here(tmp_path, "init", "--admin", "admin.solo", "--name", "Solo Admin", "--site", "US-SSF")
    assert "dual control:      starts when a second administrator is registered" in said
    (tmp_path / "x").mkdir()
    half = coi_here(tmp_path / "x", "init", "--admin", "a.b", "--name", "A", "--site", "US-SSF",
                    "--second-admin", "c.d")  # fmt: skip
    assert half.returncode == 2 and "--second-name" in half.stderr


def test_a_duplicate_printed_name_is_registered_with_a_warning(ledger: Path) -> None:
    keys = _keys(ledger)
    _here(ledger, "keys", "new", "--principal", "nurse.jane", "--name", "Jane Admin")
    added = coi(ledger, "principals", "add", "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF",
                "--public-key", str(keys / "nurse.jane.key.pub"), "--role", "enrolment")  # fmt: skip
    assert added.returncode == 0 and "accepted" in added.stdout
    assert "WARNING the printed name 'Jane Admin' is already registered for admin.jane" in added.stderr
