"""`coi export genealogy --format csv` on the demo ledger: a zip of CSV tables a spreadsheet
opens (UTF-8 with BOM, RFC 4180, no formula runs), every row with the sequence of its record,
every cell read from a record cited and equal to what the signed record holds, each journey's
outcome in its tables (a rejected batch, a blocked infusion, an excursion's hold released, a
correction), and the same bytes for the same document."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from ledger.audit.exported import resolve
from projections.export import csv_zip
from projections.export.document import Fact, Genealogy
from tests.exports import ExportDemo, bundle_bodies

TABLES = {
    "patient", "collections", "labels", "batches", "steps", "qc", "retests", "units", "custody", "shipments",
    "temperatures", "bedside", "infusions", "corrections", "signatures", "register", "records",
}  # fmt: skip

Tables = dict[str, list[dict[str, str]]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportDemo]:
    yield ExportDemo(tmp_path_factory.mktemp("genealogy-csv"))


def _tables(path: Path) -> Tables:
    return _tables_of(path.read_bytes())


def _tables_of(data: bytes) -> Tables:
    """Each CSV of the zip by table name, its rows by column name."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {
            n.removesuffix(".csv"): list(
                csv.DictReader(io.StringIO(z.read(n).decode("utf-8-sig"), newline=""))
            )
            for n in z.namelist()
            if n.endswith(".csv")
        }


def _csv(demo: ExportDemo, journey: str) -> Tables:
    return _tables(demo.export("csv", "--coi", demo.journey(journey), out=f"{journey}.zip"))


def test_every_patient_exports_tables_whose_every_cited_cell_is_the_signed_records(demo: ExportDemo) -> None:
    for coi in demo.cois:
        out = demo.export("csv", "--coi", coi, "--with-bundle", out=f"{coi}.zip")
        document = json.loads(demo.export("json", "--coi", coi, out=f"{coi}.json").read_text())
        tables = _tables(out)
        assert tables.keys() == TABLES | {"columns", "cells"}
        bodies = bundle_bodies(Path(f"{out}.bundle.zip"))
        for name in TABLES:
            for row in tables[name]:
                assert int(row["sequence"]) in bodies, (name, row)
        assert tables["patient"][0]["coi"] == coi
        assert len(tables["steps"]) == sum(len(b["steps"]) for b in document["batches"])
        assert len(tables["qc"]) == sum(len(b["qc"]) for b in document["batches"])
        assert len(tables["custody"]) == len(document["custody"])
        assert len(tables["signatures"]) == len(document["signatures"]) > 0
        assert [u["unit_id"] for u in tables["units"]] == [
            p["unit_id"]["value"] for p in document["products"]
        ]
        assert [r["sequence"] for r in tables["records"]] == [str(r["sequence"]) for r in document["records"]]

        # Each cited cell holds what the record holds; each record column's cell is cited.
        cited: dict[tuple[str, int, str], list[object]] = {}
        for c in tables["cells"]:
            value = resolve(bodies[int(c["sequence"])], c["field"])
            cited.setdefault((c["table"].removesuffix(".csv"), int(c["row"]), c["column"]), []).append(value)
        for (table, number, column), values in cited.items():
            cell = tables[table][number - 1][column]
            text = "; ".join(v if isinstance(v, str) else json.dumps(v) for v in values)
            assert cell in (text, f"'{text}"), (table, number, column)
        for c in tables["columns"]:
            if c["source"] == "record":
                table = c["table"].removesuffix(".csv")
                for number, row in enumerate(tables[table], start=1):
                    assert not row[c["column"]] or (table, number, c["column"]) in cited, (table, number, c)

        done = demo.run("verify-bundle", f"{out}.bundle.zip")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{out.name} is exactly the CSV export these records make" in done.stdout


def test_a_rejected_batch_shows_its_failed_test_and_qa_signature(demo: ExportDemo) -> None:
    tables = _csv(demo, "rejected")
    (batch,) = tables["batches"]
    assert (batch["status"], batch["disposition"]) == ("rejected", "rejected")
    assert [q["test"] for q in tables["qc"] if q["passed"] == "false"] == ["sterility"]
    assert all(q["batch_id"] == batch["batch_id"] for q in tables["qc"])
    assert [u["status"] for u in tables["units"]] == ["rejected"]
    assert not tables["shipments"] and not tables["infusions"]
    disposition = next(r for r in tables["register"] if r["kind"] == "disposition")
    (signed,) = [s for s in tables["signatures"] if s["sequence"] == disposition["closed_sequence"]]
    assert signed["printed_name"] and signed["meaning"] and signed["signed_at"].endswith("Z"), signed
    assert signed["manifested"] == "true"
    # RFC 4180: a summary with commas and quotes comes back whole.
    deviation = next(r for r in tables["register"] if r["kind"] == "deviation")
    assert "," in deviation["summary"] and "'" in deviation["summary"] and "sterility" in deviation["summary"]


def test_a_blocked_infusion_and_an_excursion_released_are_in_their_tables(demo: ExportDemo) -> None:
    blocked = _csv(demo, "mismatch")
    assert [b["outcome"] for b in blocked["bedside"]] == ["MISMATCH"]
    assert blocked["infusions"] == []
    assert [u["bedside"] for u in blocked["units"]] == ["MISMATCH"]

    excursion = _csv(demo, "excursion")
    hot = [r for r in excursion["temperatures"] if r["excursion"] == "true"]
    assert len(hot) == 1 and float(hot[0]["celsius"]) > float(hot[0]["limit_celsius"])
    hold = next(r for r in excursion["register"] if r["kind"] == "hold")
    assert hold["closed_sequence"] and hold["outcome"]
    assert [u["status"] for u in excursion["units"]] == ["infused"]
    (infusion,) = excursion["infusions"]
    assert infusion["unit_id"] == excursion["units"][0]["unit_id"]
    (shipment,) = excursion["shipments"]
    assert shipment["units"] == infusion["unit_id"]


def test_a_correction_keeps_the_old_value_and_names_the_record_it_corrects(demo: ExportDemo) -> None:
    tables = _csv(demo, "corrected")
    (correction,) = tables["corrections"]
    assert (correction["field"], correction["old_value"], correction["new_value"]) == (
        "volume_ml",
        "180.0",
        "182.0",
    )
    assert correction["reason"]
    (collection,) = tables["collections"]
    volume = next(
        c for c in tables["cells"] if c["table"] == "collections.csv" and c["column"] == "volume_ml"
    )
    assert correction["corrects"] == volume["sequence"]
    # The manufacturing run: the bag is the batch's input, each step's lots are there.
    (batch,) = tables["batches"]
    assert batch["inputs"] == collection["bag"]
    assert all(s["batch_id"] == batch["batch_id"] and s["material_lots"] for s in tables["steps"])


def test_the_zip_opens_in_a_spreadsheet_and_runs_no_formula(demo: ExportDemo) -> None:
    coi = demo.journey("excursion")
    out = demo.export("csv", "--coi", coi, out="excel.zip")
    with zipfile.ZipFile(out) as z:
        for info in z.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            if info.filename.endswith(".csv"):
                data = z.read(info)
                assert data.startswith(b"\xef\xbb\xbf") and data.endswith(b"\r\n"), info.filename
                assert b"\n" not in data.replace(b"\r\n", b""), info.filename
        assert "formula" in z.read("README.txt").decode()
    # A negative temperature is a number, not a text guarded as a formula.
    assert all(not r["celsius"].startswith("'") for r in _tables(out)["temperatures"])

    document = msgspec.json.decode(
        demo.export("json", "--coi", coi, out="excel.json").read_bytes(), type=Genealogy
    )
    site = document.patient.treatment_site
    evil = msgspec.structs.replace(
        document,
        patient=msgspec.structs.replace(
            document.patient, treatment_site=Fact('=HYPERLINK("http://x","y")', site.sequence, site.field)
        ),
        register=[msgspec.structs.replace(document.register[0], summary="@SUM(A1:A9)")],
    )
    written = csv_zip.render(evil)
    again = _tables_of(written)
    assert again["patient"][0]["treatment_site"] == '\'=HYPERLINK("http://x","y")'
    assert again["register"][0]["summary"] == "'@SUM(A1:A9)"
    # The same document makes the same bytes.
    assert csv_zip.render(evil) == written
    assert csv_zip.render(document) == csv_zip.render(document)
