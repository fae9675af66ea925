"""`coi export genealogy --with-bundle` binds the export to its bundle, and `coi verify-bundle`
checks the pair: the export's digest against the manifest, then the export rendered again from
the bundle's records as the manifest says it was made, byte for byte, in every format. Where
the manifest does not say how (or another rendering version made it), every value a JSON or
CSV export cites is checked against the signed records, and EPCIS, FHIR and HTML only by
digest. The manifest is not signed, so the tests also play the forger who changes the export
AND its digest in the manifest. A bundle written before the manifest could name an export
still reads and verifies."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.audit.bundle import BundleReport, verify_bundle
from ledger.audit.bundle_format import MANIFEST
from ledger.audit.exported import bound_export
from ledger.audit.trust import read_keys
from ledger.wire.files import fixed_zip
from projections.export.formats import RENDERING
from tests.exports import ExportDemo, facts
from tests.support import FIXTURE_VKEY, copy_fixture_ledger
from tests.support import coi as run_coi

OLD_BUNDLE = Path(__file__).parents[1] / "fixtures" / "bundle-v1" / "CHW0451260059EM.bundle.zip"
OLD_PATIENT = "CHW0451260059EM"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportDemo]:
    yield ExportDemo(tmp_path_factory.mktemp("binding"))


def _bound(demo: ExportDemo, fmt: str, name: str, journey: str = "rejected") -> tuple[Path, Path]:
    """An export of `journey` written with its bundle: (export, bundle)."""
    out = demo.export(fmt, "--coi", demo.journey(journey), "--with-bundle", out=name)
    return out, Path(f"{out}.bundle.zip")


def _files(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _manifest(bundle: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_files(bundle)[MANIFEST])
    return loaded


def _rebind(bundle: Path, export: Path, **changes: object) -> None:
    """What a forger does: the manifest's export entry made to fit `export` as it is now (the
    manifest is not signed, and is not among the files it lists)."""
    files = _files(bundle)
    manifest = json.loads(files[MANIFEST])
    data = export.read_bytes()
    manifest["export"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data), **changes)
    files[MANIFEST] = json.dumps(manifest).encode()
    bundle.write_bytes(fixed_zip([(MANIFEST, files.pop(MANIFEST)), *sorted(files.items())]))


def _verify(demo: ExportDemo, bundle: Path, *args: str) -> tuple[int, str]:
    done = demo.run("verify-bundle", str(bundle), *args)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout + done.stderr


def _alone(demo: ExportDemo, bundle: Path) -> BundleReport:
    """The verifier package alone (ledger/audit, without the exporters) on the bundle and the
    export beside it: it checks each value a JSON or CSV export cites."""
    vkey = demo.folder / "ledger.vkey"
    if not vkey.exists():
        assert demo.run("trust", "export", "--out", str(vkey)).returncode == 0
    return verify_bundle(bundle, read_keys(vkey), [bound_export(bundle.parent, None)])


def test_the_bundle_names_the_export_and_every_json_value_is_checked(demo: ExportDemo) -> None:
    out, bundle = _bound(demo, "json", "intact.json")
    data = out.read_bytes()
    manifest = _manifest(bundle)
    made = manifest["export"].pop("made")
    assert manifest["export"] == {
        "path": "intact.json",
        "format": "json",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    document = json.loads(data)
    assert made["asked"] == document["asked"] and made["exported_at"] == document["exported_at"]
    assert made["verified"] is True and made["rendering"] == RENDERING
    # The records are those `coi export bundle` gives for the patient: only the manifest differs.
    plain = demo.folder / "plain.bundle.zip"
    done = demo.run("export", "bundle", "--coi", demo.journey("rejected"), "--out", str(plain))
    assert done.returncode == 0, done.stderr
    bound, unbound = _files(bundle), _files(plain)
    assert {n: d for n, d in bound.items() if n != MANIFEST} == {
        n: d for n, d in unbound.items() if n != MANIFEST
    }
    assert {k: v for k, v in manifest.items() if k != "export"} == json.loads(unbound[MANIFEST])

    code, said = _verify(demo, bundle)
    assert code == 0, said
    assert "intact.json is exactly the JSON export these records make" in said
    assert "only that the two files travel together" in said

    alone = _alone(demo, bundle)
    assert alone.failure is None, alone.failure
    cited = facts(document)
    assert len(cited) > 100
    assert f"checked {len(cited)} values of the JSON export against the signed records" in " ".join(
        alone.proved
    )

    # A manifest that no longer says how the export was made is not a reason to check less.
    _rebind(bundle, out, made=None)
    code, said = _verify(demo, bundle)
    assert code == 1 and "cannot be rendered again from the records to check it" in said, said


def test_a_changed_json_value_fails_naming_its_record_and_field(demo: ExportDemo) -> None:
    out, bundle = _bound(demo, "json", "tampered.json")
    document = json.loads(out.read_text())
    sterility = next(q for q in document["batches"][0]["qc"] if q["test"]["value"] == "sterility")
    assert sterility["passed"]["value"] is False
    sterility["passed"]["value"] = True  # the failed test made to pass
    out.write_text(json.dumps(document))

    code, said = _verify(demo, bundle)
    assert code == 1 and "FAILED" in said, said
    assert "the export was changed after the bundle was made" in said

    _rebind(bundle, out)  # the forger updates the digest too
    code, said = _verify(demo, bundle)
    assert code == 1 and "FAILED: tampered.json: is not what the bundle's records make" in said, said
    assert "/passed/value: True where the records make False" in said

    failure = str(_alone(demo, bundle).failure)  # the cited value, without the exporters
    fact = sterility["passed"]
    assert failure.startswith("tampered.json") and f"record {fact['sequence']} at {fact['field']}" in failure
    assert "holds False" in failure


def test_what_a_forger_changes_without_breaking_a_citation_fails_too(demo: ExportDemo) -> None:
    """A citation pointed at another record that holds the forged value, a citation replaced
    by a bare value, an alarm removed: only rendering the export again catches them."""
    out, bundle = _bound(demo, "json", "forged.json")
    original = out.read_text()

    def qc(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        tests = document["batches"][0]["qc"]
        sterility = next(q for q in tests if q["test"]["value"] == "sterility")
        return sterility, next(q for q in tests if q["passed"]["value"] is True)

    def repointed(document: dict[str, Any]) -> None:
        sterility, passing = qc(document)
        sterility.update(result=passing["result"], passed=passing["passed"])

    def uncited(document: dict[str, Any]) -> None:
        qc(document)[0].update(passed=True)

    def unalarmed(document: dict[str, Any]) -> None:
        document["outcome"].update(alarms=[], summary="released")

    def overclaimed(document: dict[str, Any]) -> None:
        document["verification"]["proved"].append("two independent witnesses cosigned the checkpoint")

    for forge in (repointed, uncited, unalarmed, overclaimed):
        document = json.loads(original)
        forge(document)
        out.write_text(json.dumps(document))
        _rebind(bundle, out)
        code, said = _verify(demo, bundle)
        assert code == 1 and "FAILED: forged.json: is not what the bundle's records make" in said, said


def test_a_changed_csv_cell_fails_and_so_does_an_uncited_one(demo: ExportDemo) -> None:
    out, bundle = _bound(demo, "csv", "tampered.zip")
    code, said = _verify(demo, bundle)
    assert code == 0 and "tampered.zip is exactly the CSV export these records make" in said, said
    # From here the verifier package alone, which checks each cited cell.
    original = _files(out)
    cells = original["cells.csv"].decode("utf-8-sig").splitlines()
    alone = _alone(demo, bundle)
    assert alone.failure is None, alone.failure
    assert f"checked {len(cells) - 1} values of the CSV export against the signed records" in " ".join(
        alone.proved
    )

    qc = original["qc.csv"].decode("utf-8-sig")
    assert ",sterility," in qc and ",false," in qc
    changed = {**original, "qc.csv": qc.replace(",false,", ",true,", 1).encode("utf-8-sig")}
    out.write_bytes(fixed_zip(sorted(changed.items())))
    _rebind(bundle, out)
    code, said = _verify(demo, bundle)
    assert code == 1 and "FAILED: tampered.zip: is not what the bundle's records make: qc.csv" in said, said
    said = str(_alone(demo, bundle).failure)
    assert said.startswith("tampered.zip")
    (line,) = [c for c in cells if c.startswith("qc.csv,1,passed,")]
    sequence, field = line.split(",")[4:6]
    assert (
        "qc.csv row 1, column passed: says 'true'" in said and f"record {sequence}" in said and field in said
    )

    # The cell's citation dropped as well: a cell of a column read from records must cite one.
    dropped = "\r\n".join(c for c in cells if c != line) + "\r\n"
    changed["cells.csv"] = dropped.encode("utf-8-sig")
    out.write_bytes(fixed_zip(sorted(changed.items())))
    _rebind(bundle, out)
    said = str(_alone(demo, bundle).failure)
    assert "qc.csv row 1, column passed: a value read from a record that cites none" in said

    # A row said to come from a record the bundle does not hold.
    units = original["units.csv"].decode("utf-8-sig").split("\r\n")
    units[1] = "999999" + units[1][units[1].index(",") :]
    changed = {**original, "units.csv": "\r\n".join(units).encode("utf-8-sig")}
    out.write_bytes(fixed_zip(sorted(changed.items())))
    _rebind(bundle, out)
    said = str(_alone(demo, bundle).failure)
    assert "units.csv row 1, column sequence: '999999' is not a record the bundle holds" in said


@pytest.mark.parametrize("fmt", ["epcis", "fhir", "html"])
def test_formats_that_cite_no_fields_are_rendered_again(demo: ExportDemo, fmt: str) -> None:
    name = f"bound.{fmt}"
    out, bundle = _bound(demo, fmt, name)
    code, said = _verify(demo, bundle)
    assert code == 0, said
    label = fmt.upper()
    assert f"{name} is exactly the {label} export these records make" in said

    out.write_bytes(out.read_bytes().replace(b"growth detected day 5", b"conforms"))
    code, said = _verify(demo, bundle)
    assert code == 1 and f"FAILED: {name}" in said and "changed after the bundle was made" in said, said
    _rebind(bundle, out)
    code, said = _verify(demo, bundle)
    assert code == 1 and f"FAILED: {name}: is not what the bundle's records make" in said, said
    assert "growth detected day 5" in said

    # A manifest that says another rendering version, or another format, is no reason to check
    # less: it fails.
    made = _manifest(bundle)["export"]["made"]
    for change in ({"made": {**made, "rendering": 0}}, {"format": "pdf"}):
        _rebind(bundle, out, **change)
        code, said = _verify(demo, bundle)
        assert code == 1 and "cannot be rendered again from the records to check it" in said, said
        _rebind(bundle, out, made=made, format=fmt)

    # The verifier package alone binds it by digest only, and says so.
    alone = _alone(demo, bundle)
    assert alone.failure is None and any(
        f"the {label} export's content: it is the file the bundle was made with" in line
        for line in alone.cannot
    )


def test_a_missing_export_cannot_be_proved_and_export_names_it(demo: ExportDemo, tmp_path: Path) -> None:
    out, bundle = _bound(demo, "json", "moved.json", journey="excursion")
    moved = tmp_path / "elsewhere.json"
    shutil.move(out, moved)
    code, said = _verify(demo, bundle)
    assert code == 0, said
    assert said.startswith("OK: moved.json.bundle.zip; but the JSON export moved.json")
    assert "is not beside it: nothing about it was checked (pass --export FILE" in said
    assert "these records make" not in said

    code, said = _verify(demo, bundle, "--export", str(moved))
    assert code == 0 and "elsewhere.json is exactly the JSON export these records make" in said, said

    other = demo.export("json", "--coi", demo.journey("mismatch"), out="other.json")
    code, said = _verify(demo, bundle, "--export", str(other))
    assert code == 1 and "FAILED: other.json" in said, said

    code, said = _verify(demo, bundle, "--export", str(tmp_path / "nothing.json"))
    assert code == 2 and "--export" in said


def test_a_bundle_written_before_exports_were_bound_still_verifies(tmp_path: Path) -> None:
    manifest = json.loads(zipfile.ZipFile(OLD_BUNDLE).read(MANIFEST))
    assert "export" not in manifest
    bundle = tmp_path / OLD_BUNDLE.name
    shutil.copy(OLD_BUNDLE, bundle)
    config = str(tmp_path / "cfg")
    done = run_coi(
        tmp_path, "verify-bundle", str(bundle), "--trusted-key", str(FIXTURE_VKEY), COI_CONFIG_DIR=config
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "export" not in done.stdout

    # Today's code writes the same bytes for the same records when no export is bound.
    copy_fixture_ledger(tmp_path / "coi-data")
    again = tmp_path / "again.zip"
    done = run_coi(
        tmp_path, "export", "bundle", "--coi", OLD_PATIENT, "--out", str(again), COI_CONFIG_DIR=config
    )
    assert done.returncode == 0, done.stderr
    assert again.read_bytes() == OLD_BUNDLE.read_bytes()

    (tmp_path / "some.json").write_text("{}")
    done = run_coi(
        tmp_path, "verify-bundle", str(bundle), "--trusted-key", str(FIXTURE_VKEY), "--export",
        str(tmp_path / "some.json"), COI_CONFIG_DIR=config,
    )  # fmt: skip
    assert done.returncode == 2 and "names no export" in done.stderr, done.stdout + done.stderr


def test_a_bundle_of_one_format_is_not_made_with_another(demo: ExportDemo) -> None:
    """The export's name in the manifest is the file written beside it: a bundle does not
    check the file of another export of the same patient."""
    _, json_bundle = _bound(demo, "json", "pair.json", journey="corrected")
    csv_out, _ = _bound(demo, "csv", "pair.zip", journey="corrected")
    assert _manifest(json_bundle)["export"]["path"] == "pair.json"
    code, said = _verify(demo, json_bundle, "--export", str(csv_out))
    assert code == 1 and "pair.zip: is not the JSON export the bundle was made with" in said, said
