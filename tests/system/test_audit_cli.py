"""The auditors' commands as an inspector runs them on the demo ledger: `coi find`, `coi audit
trail|register|signatures|stages` and `coi principals history`, each as a table, JSON and
CSV, paged, and refusing bad input with exit 2 and the argument named; on SQLite and, for
find, trail and register, on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.demo.journeys import Journey, Step, compressed_run
from ledger.demo.run import load_cast
from ledger.store.migrations import SCHEMA_TABLE
from projections.store import TABLES
from tests.conftest import LEDGER_TABLES
from tests.stores import fresh_store
from tests.support import coi, tag_of

SHARED = "B-SHARED-7"  # a batch id two patients' batches carry


class _SharedBatch(Journey):
    """A journey whose batch takes an id another patient's batch has too: batch ids are
    unique only within one COI."""

    def _step(self, *args: Any, **fields: Any) -> Step:
        if fields.get("batch_id") == f"B-{self.coi}":
            fields["batch_id"] = SHARED
        return super()._step(*args, **fields)


class Demo:
    """`coi demo` run once, then the commands under test run against it as processes."""

    def __init__(self, folder: Path, **env: str) -> None:
        self.folder, self.env = folder, env
        done = self.run("demo", "--patients", "4")
        assert done.returncode == 0, done.stdout + done.stderr
        self.cois = [line.split()[1] for line in done.stdout.splitlines()[1:5]]

    def run(
        self, *args: str, stdin: str | None = None, passphrase: str = "correct horse"
    ) -> subprocess.CompletedProcess[str]:
        config = str(self.folder / "coi-config")  # the module's, not each test's
        return coi(self.folder, *args, stdin=stdin, passphrase=passphrase, COI_CONFIG_DIR=config, **self.env)

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--format", "json"))

    def csv(self, *args: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.ok(*args, "--format", "csv"))))

    def refused(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        return done.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """Four patients (a happy journey, a failed sterility test, an excursion, a bedside
    mismatch), two more whose batches share one id, and a key revoked with a reason."""
    ledger = Demo(tmp_path_factory.mktemp("audit-cli"))
    cast = load_cast(ledger.folder / "coi-data" / "demo-keys")
    run = compressed_run(datetime.now(UTC), patients=1000)
    envelopes = []
    for index in (0, 1):
        journey = _SharedBatch(cast, index, run.start(index), "happy", run.hour)
        for step in journey.steps():
            if tag_of(step) == "qc_result_recorded":
                break
            envelopes.append(step.envelope.decode())
    submitted = ledger.run("submit", "-", stdin="\n".join(envelopes) + "\n")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    admin = str(ledger.folder / "coi-data" / "demo-keys" / "admin.root.key")
    revoked = ledger.run(
        "principals", "revoke", "--admin-key", admin, "--site", "US-SSF", "--id", "witness.kas",
        "--reason", "left the hospital", passphrase="demo-passphrase",
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    return ledger


# ---------------------------------------------------------------------- find


def test_find_names_the_patient_and_records_of_any_identifier(demo: Demo) -> None:
    mismatch = demo.cois[3]
    [match] = demo.json("find", f"B-{mismatch}")["rows"]
    assert match["kind"] == "batch" and match["coi"] == mismatch and len(match["records"]) > 5
    table = demo.ok("find", f"B-{mismatch}").splitlines()
    assert table[0].split() == ["identifier", "kind", "coi", "records", "sequences"]
    assert table[1].split()[:4] == [f"B-{mismatch}", "batch", mismatch, str(len(match["records"]))]
    [row] = demo.csv("find", f"B-{mismatch}")
    assert row["coi"] == mismatch and row["records"] == str(len(match["records"]))


def test_find_lists_every_patient_an_identifier_is_known_under(demo: Demo) -> None:
    matches = demo.json("find", SHARED)["rows"]
    assert len({m["coi"] for m in matches}) == 2 and {m["kind"] for m in matches} == {"batch"}
    logger = demo.json("find", "LOG-77")["rows"]  # one temperature logger rides with every shipment
    assert len({m["coi"] for m in logger}) >= 3
    # A page is some patients, each whole; the next page goes on from the last patient shown.
    first = demo.json("find", "LOG-77", "--limit", "1")
    second = demo.json("find", "LOG-77", "--limit", "1", "--after", first["next"])
    assert [m["coi"] for m in first["rows"] + second["rows"]] == sorted({m["coi"] for m in logger})[:2]
    assert first["rows"] == [m for m in logger if m["coi"] == first["next"]]


def test_find_of_an_unknown_id_says_what_was_searched(demo: Demo) -> None:
    said = demo.refused("find", "B-NOWHERE")
    assert "no record names B-NOWHERE" in said and "DIN" in said and "batch" in said


# ---------------------------------------------------------------------- trail


def test_trail_shows_sequence_time_signers_and_a_mismatch_that_stands_out(demo: Demo) -> None:
    mismatch = demo.cois[3]
    table = demo.ok("audit", "trail", "--coi", mismatch, "--type", "bedside_identity_verified")
    header, row = table.splitlines()
    assert header.split() == ["sequence", "recorded_at", "coi", "type", "site", "signers", "outcome", "notes"]
    assert "MISMATCH !!" in row and "nurse.kas, witness.kas" in row

    [record] = demo.json("audit", "trail", "--coi", mismatch, "--type", "bedside_identity_verified")["rows"]
    assert record["outcome"] == "MISMATCH" and record["coi"] == mismatch
    assert [s["principal"] for s in record["signatures"]] == ["nurse.kas", "witness.kas"]
    assert record["signatures"][0]["keyid"].startswith("nurse.kas:") and record["envelope"]
    [line] = demo.csv("audit", "trail", "--coi", mismatch, "--type", "bedside_identity_verified")
    assert line["outcome"] == "MISMATCH" and line["sequence"] == str(record["sequence"])


def test_trail_shows_a_correction_with_what_it_corrects_and_why(demo: Demo) -> None:
    [row] = demo.csv("audit", "trail", "--coi", demo.cois[0], "--type", "record_corrected")
    [corrected] = demo.csv("audit", "trail", "--coi", demo.cois[0], "--type", "apheresis_collected")
    assert (
        row["notes"]
        == f"corrects {corrected['sequence']}; reason: volume transcribed wrongly from the apheresis log"
    )


def test_trail_filters_by_site_actor_and_time(demo: Demo) -> None:
    device = demo.json("audit", "trail", "--actor", "logger.wc", "--limit", "500")["rows"]
    assert device and all("logger.wc" in [s["principal"] for s in r["signatures"]] for r in device)
    assert {r["site"] for r in demo.json("audit", "trail", "--site", "NL-LEI", "--limit", "500")["rows"]} == {
        "NL-LEI"
    }
    everything = demo.json("audit", "trail", "--limit", "1000")["rows"]
    middle = _middle_time(everything)
    later = demo.json("audit", "trail", "--from", middle, "--limit", "1000")["rows"]
    earlier = demo.json("audit", "trail", "--to", middle, "--limit", "1000")["rows"]
    boundary = datetime.fromisoformat(middle)
    at_middle = [r for r in everything if _at(r) == boundary]  # both bounds include them
    assert later and earlier and len(later) + len(earlier) == len(everything) + len(at_middle)
    assert all(_at(r) >= boundary for r in later) and all(_at(e) <= boundary for e in earlier)


def _at(record: dict[str, str]) -> datetime:
    return datetime.fromisoformat(record["recorded_at"])


def _middle_time(records: list[dict[str, str]]) -> str:
    """A recorded time with records before it and at it (the demo records many at once)."""
    times = sorted({_at(r) for r in records})
    assert len(times) >= 2
    return times[len(times) // 2].isoformat()


def _pages(demo: Demo, *args: str) -> tuple[list[Any], list[Any]]:
    """Two pages of two rows, the second after the first's cursor; and the first four at once."""
    first = demo.json(*args, "--limit", "2")
    assert first["next"], first
    second = demo.json(*args, "--limit", "2", "--after", first["next"])
    return first["rows"] + second["rows"], demo.json(*args, "--limit", "4")["rows"]


@pytest.mark.parametrize(
    "command",
    [("audit", "trail"), ("audit", "register"), ("audit", "signatures", "--coi", "{coi}")],
    ids=lambda c: c[1],
)
def test_paging_gives_the_next_rows_without_overlap(demo: Demo, command: tuple[str, ...]) -> None:
    paged, at_once = _pages(demo, *(a.format(coi=demo.cois[0]) for a in command))
    assert len(paged) == 4 and paged == at_once


def test_the_last_page_says_there_is_no_next(demo: Demo) -> None:
    page = demo.json("audit", "register", "--kind", "hold", "--limit", "100")
    assert page["next"] is None and len(page["rows"]) == 1
    more = demo.run("audit", "register", "--limit", "1", "--format", "csv")
    assert more.returncode == 0 and "--after " in more.stderr  # the cursor, off the CSV


# ---------------------------------------------------------------------- registers


def test_register_lists_deviations_holds_and_dispositions_open_and_closed(demo: Demo) -> None:
    rows = demo.json("audit", "register", "--limit", "100")["rows"]
    kinds = {r["kind"] for r in rows}
    assert kinds >= {"deviation", "hold", "excursion", "correction", "disposition"}
    still_open = demo.json("audit", "register", "--open")["rows"]
    assert still_open and all(r["closed_sequence"] is None for r in still_open)
    rejected, mismatch = demo.cois[1], demo.cois[3]
    # the failed sterility test's, and the one the ledger itself opened for the bedside mismatch
    assert [(r["kind"], r["coi"]) for r in still_open] == [("deviation", rejected), ("deviation", mismatch)]
    opened = still_open[1]
    assert (opened["opened_by"], opened["severity"], opened["batch_id"]) == (
        "ledger.service", "critical", f"B-{mismatch}",
    )  # fmt: skip
    assert "did not match the patient enrolled" in opened["summary"]
    table = demo.ok("audit", "register", "--kind", "disposition", "--coi", rejected)
    assert "REJECTED !!" in table and f"B-{rejected}" in table
    assert "OPEN" in demo.ok("audit", "register", "--open")
    deviations = demo.csv("audit", "register", "--open")
    assert [(d["state"], d["coi"]) for d in deviations] == [("open", rejected), ("open", mismatch)]
    assert all(d["summary"] for d in deviations)


def test_signatures_of_a_patient_or_a_batch_with_names_and_meanings(demo: Demo) -> None:
    happy = demo.cois[0]
    rows = demo.json("audit", "signatures", "--coi", happy, "--limit", "1000")["rows"]
    assert {r["kind"] for r in rows} == {"person", "device"}
    people = [r for r in rows if r["kind"] == "person"]
    assert all(r["printed_name"] and r["meaning"] and r["signed_at"] for r in people)
    batch = demo.json("audit", "signatures", "--batch", f"B-{happy}", "--limit", "1000")["rows"]
    assert 0 < len(batch) < len(rows) and {r["sequence"] for r in batch} <= {r["sequence"] for r in rows}
    table = demo.ok("audit", "signatures", "--batch", f"B-{happy}").splitlines()
    assert table[0].split() == [
        "sequence",
        "type",
        "principal",
        "kind",
        "printed_name",
        "signed_at",
        "meaning",
        "keyid",
    ]
    assert len(demo.csv("audit", "signatures", "--coi", happy, "--limit", "1000")) == len(rows)


def test_a_batch_known_under_two_patients_needs_coi(demo: Demo) -> None:
    cois = sorted({m["coi"] for m in demo.json("find", SHARED)["rows"]})
    said = demo.refused("audit", "signatures", "--batch", SHARED)
    assert "--batch" in said and all(c in said for c in cois) and "--coi" in said
    narrowed = demo.json("audit", "signatures", "--batch", SHARED, "--coi", cois[0])["rows"]
    [patient] = demo.json("find", cois[0])["rows"]
    assert narrowed and {r["sequence"] for r in narrowed} <= set(patient["records"])


def test_stages_in_hours_or_minutes_with_p50_and_p90(demo: Demo) -> None:
    figures = demo.json("audit", "stages")
    assert {f["stage"] for f in figures} >= {"manufacturing", "vein to vein"}
    vein = next(f for f in figures if f["stage"] == "vein to vein")
    assert vein["count"] >= 1 and vein["p50_hours"] <= vein["p90_hours"] <= vein["max_hours"]
    table = demo.ok("audit", "stages", "--site", vein["site"]).splitlines()
    assert table[0].split() == ["stage", "site", "count", "p50", "p90", "max"]
    assert all(line.split()[-1] in {"h", "min", "s"} for line in table[1:])  # compressed: minutes
    sheet = demo.csv("audit", "stages")
    assert float(sheet[0]["p50_hours"]) == pytest.approx(figures[0]["p50_hours"], abs=1e-6)


def test_principals_history_says_who_changed_which_key_on_whose_authority(demo: Demo) -> None:
    history = demo.json("principals", "history", "witness.kas")
    assert [r["change"] for r in history] == ["registered", "revoked"]
    revoked = history[1]
    assert revoked["actor"] == "admin.root" and revoked["reason"] == "left the hospital"
    assert revoked["authority"] and revoked["authority"][0].startswith("admin.root:")
    table = demo.ok("principals", "history", "witness.kas").splitlines()
    assert table[0].split()[:4] == ["sequence", "recorded_at", "principal", "change"]
    assert "left the hospital" in table[2]
    assert len(demo.csv("principals", "history")) == len(demo.json("principals", "history"))
    # As of a time after the ledger began but before the revocation: registered only.
    before = demo.json("principals", "history", "witness.kas", "--as-of", history[0]["recorded_at"])
    assert [r["change"] for r in before] == ["registered"]


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("audit", "trail", "--from", "2026-01-31T09:00:00"), "--from"),  # no zone
        (("audit", "trail", "--to", "2000-01-01T00:00:00Z"), "--to"),
        (("audit", "trail", "--from", "2099-01-02T00:00:00Z", "--to", "2099-01-01T00:00:00Z"), "--from"),
        (("principals", "history", "--as-of", "2000-01-01T00:00:00Z"), "--as-of"),
        (("audit", "trail", "--format", "xml"), "--format"),
        (("audit", "trail", "--limit", "0"), "--limit"),
        (("audit", "trail", "--after", "not-a-cursor"), "--after"),
        (("audit", "register", "--after", "7"), "--after"),
        (("audit", "register", "--kind", "complaint"), "--kind"),
        (("audit", "trail", "--type", "custody_teleported"), "--type"),
        (("audit", "trail", "--site", "XX-NOPE"), "--site"),
        (("audit", "stages", "--site", "XX-NOPE"), "--site"),
        (("audit", "trail", "--actor", "nobody.here"), "--actor"),
        (("audit", "trail", "--coi", "CHX00000000000"), "--coi"),
        (("audit", "register", "--coi", "CHX00000000000"), "--coi"),
        (("audit", "signatures", "--batch", "B-NOWHERE"), "--batch"),
        (
            (
                "audit",
                "signatures",
            ),
            "--coi",
        ),
        (("principals", "history", "nobody.here"), "nobody.here"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_bad_input_exits_2_naming_the_argument(demo: Demo, args: tuple[str, ...], named: str) -> None:
    said = demo.refused(*args)
    assert named in said, said


# ---------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgres_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("audit-cli-postgres")
    for ledger in fresh_store("postgres", folder / "unused", "coi_audit_cli", LEDGER_TABLES):
        projections = [*TABLES, SCHEMA_TABLE]
        for read_models in fresh_store(
            "postgres", folder / "unused", "coi_audit_cli_projections", projections
        ):
            yield Demo(folder, COI_DATABASE_URL=ledger, COI_PROJECTIONS_URL=read_models)


def test_find_trail_and_register_on_postgresql(postgres_demo: Demo) -> None:
    demo = postgres_demo
    assert not (demo.folder / "coi-data" / "ledger.sqlite").exists()
    assert not (demo.folder / "coi-data" / "projections.sqlite").exists()
    mismatch = demo.cois[3]
    [match] = demo.json("find", f"B-{mismatch}")["rows"]
    assert match["coi"] == mismatch
    assert "no record names" in demo.refused("find", "B-NOWHERE")
    table = demo.ok("audit", "trail", "--coi", mismatch, "--type", "bedside_identity_verified")
    assert "MISMATCH !!" in table
    paged, at_once = _pages(demo, "audit", "trail")
    assert len(paged) == 4 and paged == at_once
    everything = demo.json("audit", "trail", "--limit", "1000")["rows"]
    later = demo.json("audit", "trail", "--from", _middle_time(everything), "--limit", "1000")["rows"]
    assert 0 < len(later) < len(everything)
    assert "--to" in demo.refused("audit", "trail", "--to", "2000-01-01T00:00:00Z")
    still_open = demo.json("audit", "register", "--open")["rows"]
    assert [(r["kind"], r["opened_by"]) for r in still_open][1:] == [("deviation", "ledger.service")]
    assert "REJECTED !!" in demo.ok("audit", "register", "--kind", "disposition")
    paged, at_once = _pages(demo, "audit", "register")
    assert paged == at_once


def test_a_time_as_the_tables_show_it_covers_its_second(demo: Demo) -> None:
    first = demo.json("audit", "trail", "--limit", "1")["rows"][0]
    second = datetime.fromisoformat(first["recorded_at"]).replace(microsecond=0).isoformat()
    # The ledger's first second is not "before the ledger began", and its records are in it.
    assert first["sequence"] in [r["sequence"] for r in demo.json("audit", "trail", "--to", second)["rows"]]


def test_as_of_shows_the_corrections_made_since_and_known_at_does_not(demo: Demo) -> None:
    records = demo.json("history", demo.cois[0])
    fix = next(r for r in records if r["corrects"] is not None)
    corrected = next(r for r in records if r["sequence"] == fix["corrects"])
    assert fix["occurred_at"] > corrected["occurred_at"]
    at = corrected["occurred_at"]  # what had happened by then, as the ledger knows it now
    shown = demo.json("audit", "timeline", demo.cois[0], "--as-of", at)["records"]
    assert fix["sequence"] not in [r["sequence"] for r in shown]  # it happened later
    [then] = [r for r in shown if r["sequence"] == corrected["sequence"]]
    assert [c["sequence"] for c in then["corrections"]] == [fix["sequence"]]
    before = datetime.fromisoformat(fix["recorded_at"]) - timedelta(microseconds=1)
    known = demo.json("audit", "timeline", demo.cois[0], "--as-of", at, "--known-at", before.isoformat())
    [then] = [r for r in known["records"] if r["sequence"] == corrected["sequence"]]
    assert then["corrections"] == []


def test_find_refuses_a_cursor_it_did_not_print(demo: Demo) -> None:
    assert "--after" in demo.refused("find", "LOG-77", "--after", "NOT-A-COI")
