"""`coi export genealogy --format json` as a regulator runs it on the demo ledger: every
patient exports, the document is valid against `coi schema --genealogy`, every value in it is
the value the signed record holds at the field it names, the journey's outcome is said plainly
(a rejected batch, a blocked infusion, a released hold, a correction), and bad input is refused
with exit 2 and no file left behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ledger.audit.exported import resolve
from ledger.demo.journeys import Journey, Step, compressed_run
from ledger.demo.run import load_cast
from tests.exports import ExportDemo, bundle_bodies, facts
from tests.support import FIXTURE_VKEY, copy_fixture_ledger
from tests.support import coi as run_coi

FIXTURE_PATIENT = "CHW0451260059EM"  # in the v0.1 fixture ledger

SHARED = "B-SHARED-9"  # a batch id two patients' batches carry


class _SharedBatch(Journey):
    def _step(self, *args: Any, **fields: Any) -> Step:
        if fields.get("batch_id") == f"B-{self.coi}":
            fields["batch_id"] = SHARED
        return super()._step(*args, **fields)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportDemo]:
    yield ExportDemo(tmp_path_factory.mktemp("genealogy"))


def _json(demo: ExportDemo, *pick: str, **env: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(demo.export("json", *pick, **env).read_text())
    return loaded


def test_every_patient_exports_valid_json_whose_every_value_is_the_signed_records(demo: ExportDemo) -> None:
    schema = json.loads(demo.run("schema", "--genealogy").stdout)
    for coi in demo.cois:
        out = demo.folder / f"{coi}.json"
        done = demo.run(
            "export", "genealogy", "--coi", coi, "--format", "json", "--out", str(out), "--with-bundle"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        document = json.loads(out.read_text())
        jsonschema.Draft202012Validator(schema).validate(document)
        assert document["patient"]["coi"]["value"] == coi
        assert document["verification"]["status"] == "verified"
        bodies = bundle_bodies(Path(f"{out}.bundle.zip"))
        cited = facts(document)
        assert len(cited) > 100
        for fact in cited:
            assert resolve(bodies[fact["sequence"]], fact["field"]) == fact["value"], fact
        assert {r["sequence"] for r in document["records"]} <= bodies.keys()


def test_a_rejected_batch_says_so_and_shows_the_failed_test_and_qa_signature(demo: ExportDemo) -> None:
    coi = demo.journey("rejected")
    document = _json(demo, "--batch", f"B-{coi}")
    assert document["asked"] == f"batch B-{coi}"
    assert document["outcome"]["stage"] == "rejected"
    assert "no product was shipped" in document["outcome"]["summary"]
    (batch,) = document["batches"]
    assert batch["status"] == "rejected"
    failed = [q for q in batch["qc"] if not q["passed"]["value"]]
    assert [q["test"]["value"] for q in failed] == ["sterility"]
    assert batch["disposition"]["decision"]["value"] == "rejected"
    (qa,) = batch["disposition"]["signatures"]
    assert qa["manifested"] and qa["meaning"] and qa["printed_name"] and qa["signed_at"].endswith("Z")
    assert any("REJECTED" in a for a in document["outcome"]["alarms"])
    assert not document["shipments"] and not document["infusions"]


def test_a_blocked_infusion_says_so(demo: ExportDemo) -> None:
    document = _json(demo, "--coi", demo.journey("mismatch"))
    assert "INFUSION BLOCKED" in document["outcome"]["summary"]
    assert [b["outcome"] for b in document["bedside"]] == ["MISMATCH"]
    assert document["infusions"] == []
    assert any("MISMATCH" in a for a in document["outcome"]["alarms"])


def test_an_excursion_hold_released_and_a_correction_are_in_the_register(demo: ExportDemo) -> None:
    document = _json(demo, "--coi", demo.journey("excursion"))
    kinds = {e["kind"]: e for e in document["register"]}
    assert {"hold", "excursion", "deviation", "disposition"} <= kinds.keys()
    assert kinds["hold"]["closed_sequence"] is not None
    readings = document["shipments"][0]["temperatures"]
    assert [r["excursion"] for r in readings].count(True) == 1
    assert document["outcome"]["stage"] == "infused"

    corrected = _json(demo, "--coi", demo.journey("corrected"))
    (collection,) = corrected["collections"]
    (correction,) = collection["corrections"]
    assert (correction["old_value"]["value"], correction["new_value"]["value"]) == ("180.0", "182.0")
    assert correction["reason"]["value"]
    assert correction["corrects"] == collection["volume_ml"]["sequence"]


def test_the_graph_runs_from_patient_to_infusion(demo: ExportDemo) -> None:
    document = _json(demo, "--coi", demo.journey("corrected"))
    nodes = {n["id"]: n for n in document["graph"]["nodes"]}
    kinds = {n["kind"] for n in nodes.values()}
    assert {"patient", "donation", "bag", "batch", "cartridge", "product", "sample", "shipment"} <= kinds
    relations = {
        (nodes[e["source"]]["kind"], e["relation"], nodes[e["target"]]["kind"])
        for e in document["graph"]["edges"]
    }
    assert ("product", "infused into", "patient") in relations
    assert all(uri.startswith("https://") for uri in nodes)


def test_ids_are_uris_under_the_configured_base(demo: ExportDemo) -> None:
    coi = demo.cois[0]
    document = _json(demo, "--coi", coi, COI_ID_BASE="https://id.example.org/ct/")
    assert document["patient"]["uri"] == f"https://id.example.org/ct/coi/{coi}"
    assert document["id_base"] == "https://id.example.org/ct"
    for base in (
        "urn:coi:", "http://id.example.org", "https://id.example.org/c oi", "https://user:pw@id.example.org",
        "HTTPS://ID.EXAMPLE.ORG",
    ):  # fmt: skip
        done = demo.run(
            "export", "genealogy", "--coi", coi, "--format", "json", "--out", str(demo.folder / "x.json"),
            COI_ID_BASE=base,
        )  # fmt: skip
        assert done.returncode == 2 and "COI_ID_BASE" in done.stderr, done.stderr
    assert not (demo.folder / "x.json").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--coi", "CHW045126ZZZZZZ"), "has no records"),
        (("--batch", "B-NOSUCH"), "no batch of that id"),
        (("--coi", "X", "--format", "pdf"), "invalid choice"),
        (("--coi", "X", "--format", "csv"), "--format csv writes a zip of CSV tables"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(demo: ExportDemo, args: tuple[str, ...], said: str) -> None:
    out = demo.folder / "refused.out"
    fmt = () if "--format" in args else ("--format", "json")
    message = demo.refused("export", "genealogy", *args, *fmt, "--out", str(out))
    assert said in message
    assert not out.exists()


def test_an_unwritable_path_is_refused_and_leaves_nothing(demo: ExportDemo, tmp_path: Path) -> None:
    coi = demo.cois[0]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker / "x.json", tmp_path / "no-such-folder" / "x.json", tmp_path, "-"):
        message = demo.refused("export", "genealogy", "--coi", coi, "--format", "json", "--out", str(out))
        assert "--out" in message
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_an_ambiguous_batch_lists_the_patients(tmp_path: Path) -> None:
    demo = ExportDemo(tmp_path, patients=1)
    cast = load_cast(tmp_path / "coi-data" / "demo-keys")
    run = compressed_run(datetime.now(UTC), patients=2)
    envelopes = [
        step.envelope.decode()
        for i in range(2)
        for step in _SharedBatch(cast, i + 10, run.start(i), hour=run.hour).steps()
        if step.expect is None
    ]
    (tmp_path / "shared.jsonl").write_text("\n".join(envelopes) + "\n")
    done = demo.run("submit", str(tmp_path / "shared.jsonl"))
    assert done.returncode == 0, done.stdout + done.stderr
    message = demo.refused(
        "export", "genealogy", "--batch", SHARED, "--format", "json", "--out", str(tmp_path / "s.json")
    )
    assert "choose one with --coi" in message and message.count("CH") >= 2
    assert not (tmp_path / "s.json").exists()


def test_a_ledger_written_by_v0_1_exports_and_verifies(tmp_path: Path) -> None:
    copy_fixture_ledger(tmp_path / "coi-data")
    out = tmp_path / "old.json"
    done = run_coi(
        tmp_path, "export", "genealogy", "--coi", FIXTURE_PATIENT, "--format", "json", "--out", str(out),
        "--trusted-key", str(FIXTURE_VKEY), "--with-bundle", COI_CONFIG_DIR=str(tmp_path / "cfg"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    assert document["verification"]["status"] == "verified"
    bodies = bundle_bodies(Path(f"{out}.bundle.zip"))
    for fact in facts(document):
        assert resolve(bodies[fact["sequence"]], fact["field"]) == fact["value"], fact


def test_a_failed_test_a_retest_passed_is_said_as_resolved_not_as_an_alarm(demo: ExportDemo) -> None:
    document = _json(demo, "--coi", demo.journey("retest"))
    (batch,) = document["batches"]
    endotoxin = [q for q in batch["qc"] if q["test"]["value"] == "endotoxin"]
    assert [(q["passed"]["value"], q["retest"]) for q in endotoxin] == [(False, False), (True, True)]
    (retest,) = batch["retests"]
    assert retest["deviation_id"]["value"].startswith("D-") and retest["reason"]["value"]
    assert document["outcome"]["stage"] == "infused" and document["outcome"]["alarms"] == []
    assert any("then passed on a retest" in n for n in document["outcome"]["notes"])
    assert any(n.startswith("deviation D-") and "closed by" in n for n in document["outcome"]["notes"])
    (deviation,) = [e for e in document["register"] if e["kind"] == "deviation"]
    assert deviation["closed_sequence"] is not None and deviation["outcome"]


def test_an_excursion_whose_hold_was_released_is_a_note(demo: ExportDemo) -> None:
    outcome = _json(demo, "--coi", demo.journey("excursion"))["outcome"]
    assert outcome["alarms"] == []
    assert any(n.startswith("excursion") and "closed by" in n for n in outcome["notes"])
    assert any(n.startswith("hold") and "released by" in n for n in outcome["notes"])


def test_the_cli_offers_every_format_there_is_a_writer_for() -> None:
    from ledger.cli.export import GENEALOGY_FORMATS
    from projections.export.formats import FORMATS

    assert GENEALOGY_FORMATS == FORMATS


def test_the_export_the_demo_suggests_runs_and_its_bundle_verifies(demo: ExportDemo) -> None:
    (line,) = [line for line in demo.printed.splitlines() if " export genealogy " in line]
    args = line.split(" export genealogy ", 1)[1].split()
    done = demo.run("export", "genealogy", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "REJECTED" in done.stdout and "!!" in done.stdout
    checked = demo.run("verify-bundle", "batch.html.bundle.zip")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "batch.html is exactly the HTML export these records make" in checked.stdout


def test_without_a_trusted_key_the_first_line_says_not_verified(demo: ExportDemo, tmp_path: Path) -> None:
    out = tmp_path / "unverified.json"
    done = demo.run(
        "export", "genealogy", "--coi", demo.cois[0], "--format", "json", "--out", str(out),
        COI_CONFIG_DIR=str(tmp_path / "empty"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert "NOT VERIFIED: no key is trusted" in first and "proved" not in first
    assert "coi trust add" in first
    assert json.loads(out.read_text())["verification"]["status"] == "not verified"


def test_verify_bundle_given_the_export_instead_of_its_bundle_says_what_to_pass(demo: ExportDemo) -> None:
    out = demo.export("json", "--coi", demo.cois[0], "--with-bundle", out="given.json")
    message = demo.refused("verify-bundle", str(out))
    assert "is not a bundle (a zip)" in message and "FILE.bundle.zip" in message
    tables = demo.export("csv", "--coi", demo.cois[0], out="given.zip")
    message = demo.refused("verify-bundle", str(tables))
    assert "is a CSV export, not its bundle" in message
