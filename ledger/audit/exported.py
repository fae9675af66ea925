"""`coi verify-bundle` on a bundle written with a genealogy export (`coi export genealogy
--with-bundle`): the export against the bundle's manifest and, for JSON and CSV, every value
it cites against the signed records.

The manifest names the export (file name, format, SHA-256, size). The manifest is not signed:
whoever changes the export can change its digest there too, so the digest proves only that
the two files travel together. What ties an export to the signed records is the value check:
each cited (sequence, field, value) must be what record `sequence`'s signed body holds at the
JSON Pointer `field`, and those records are proved (inclusion, signatures) by the checks
before this one. EPCIS, FHIR and HTML cite no fields: they are bound by digest only.

The formats are read generically, without the code that wrote them (this package imports only
msgspec, cryptography and the standard library):
- JSON: every object whose keys are exactly `value`, `sequence`, `field`;
- CSV (a zip of tables): `cells.csv` cites each cell read from a record, by table, row,
  column and item (a cell holding a list is its items' text joined by "; "); `columns.csv`
  says which columns hold values read from records, each of whose non-empty cells must be
  cited, and which holds the record each row came from, which the bundle must hold. The
  cell's text is `cell_text` of the cited values, which the writer uses too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ledger.audit.bundle import Bundle, BundleCheck, BundleFailure, BundleReport
from ledger.audit.bundle_format import MANIFEST, ExportEntry
from ledger.transparency.records import payload_of

# The CSV export's index files (projections/export/csv_zip.py writes them).
COLUMNS = "columns.csv"  # table, column, source: record | sequence | anything else (derived)
CELLS = "cells.csv"  # table, row, column, item, sequence, field
FROM_RECORD = "record"
ROW_RECORD = "sequence"  # the column of the record a row came from: one the bundle holds
LIST_SEPARATOR = "; "
# What a spreadsheet reads as the start of a formula (OWASP's list): such a text cell gets a
# leading apostrophe, so it is shown, never run.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_NAMES = {"json": "JSON", "csv": "CSV", "epcis": "EPCIS", "fhir": "FHIR", "html": "HTML"}


class _MismatchError(Exception):
    """A cited value that is not the signed record's."""


def resolve(body: object, field: str) -> object:
    """The value at JSON Pointer `field` in `body`; KeyError where there is none."""
    value = body
    for token in field.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, list) and token.isdigit():
            index = int(token)
            if index >= len(value):
                raise KeyError(field)
            value = value[index]
        elif isinstance(value, dict) and token in value:
            value = value[token]
        else:
            raise KeyError(field)
    return value


def cell_text(values: list[object]) -> str:
    """A CSV cell holding `values` (one, or a list's items): strings as they are, numbers and
    booleans as JSON writes them; a text a spreadsheet would run as a formula gets a leading '."""
    text = LIST_SEPARATOR.join(v if isinstance(v, str) else msgspec.json.encode(v).decode() for v in values)
    number = len(values) == 1 and isinstance(values[0], int | float) and not isinstance(values[0], bool)
    return f"'{text}" if text.startswith(FORMULA_START) and not number else text


class RenderError(Exception):
    """The export cannot be rendered again from the bundle (the message says why)."""


# Renders an export again from a bundle's records and what the manifest says it was made
# with; raises RenderError where it cannot.
Remake = Callable[[Bundle, ExportEntry], bytes]


def bound_export(folder: Path, given: Path | None, remake: Remake | None = None) -> BundleCheck:
    """The check of the export the manifest names: `given`, else its file in `folder` (the
    bundle's); a bundle that names none passes unchanged (older bundles, `coi export bundle`).
    With `remake` (the exporters, which this package does not import), the export must be
    exactly what the records make; without, each value it cites is checked."""

    def check(bundle: Bundle, report: BundleReport) -> BundleFailure | None:
        entry = bundle.manifest.export
        if entry is None:
            return None
        if Path(entry.path).name != entry.path or entry.path in ("", ".", ".."):
            return BundleFailure(MANIFEST, f"names the export {entry.path!r}, which is not a file name")
        path = given or folder / entry.path
        if not path.is_file():
            missing = (
                f"the {_name(entry)} export {entry.path} the bundle was made with is not beside it: "
                "nothing about it was checked (pass --export FILE to check it)"
            )
            report.headline.append(missing)
            report.cannot.append(missing)
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            return BundleFailure(path.name, f"cannot be read ({exc.strerror})")
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            return BundleFailure(
                path.name,
                f"is not the {_name(entry)} export the bundle was made with: its SHA-256 differs from the "
                "one the manifest binds (the export was changed after the bundle was made, or it is "
                "another file)",
            )
        report.proved.append(
            f"{path.name} has the SHA-256 the manifest binds for its {_name(entry)} export (the manifest "
            "is not signed: this shows only that the two files travel together)"
        )
        if remake is not None:
            try:
                remade = remake(bundle, entry)
            except RenderError as exc:
                return BundleFailure(
                    path.name, f"cannot be rendered again from the records to check it: {exc}"
                )
            if remade != data:
                return BundleFailure(
                    path.name,
                    f"is not what the bundle's records make: {difference(data, remade, entry.format)} "
                    "(the export was changed after it was made)",
                )
            made = entry.made
            assert made is not None  # remake rendered it
            report.proved.append(
                f"{path.name} is exactly the {_name(entry)} export these records make: rendered again "
                "from them and compared byte for byte (statuses, outcomes and the summary included)"
            )
            report.cannot.append(
                f"what the export says of itself, which only the unsigned manifest carries: that it was "
                f"made at {made.exported_at}, asked for {made.asked}, with ids under {made.id_base}"
                + (
                    f", and that {bundle.manifest.after_checkpoint} later records were left out"
                    if bundle.manifest.after_checkpoint
                    else ", and that no later record was left out"
                )
            )
            return None
        bodies = _Bodies(bundle)
        try:
            if entry.format == "json":
                checked = _check_json(data, bodies)
            elif entry.format == "csv":
                checked = _check_csv(data, bodies)
            else:
                report.cannot.append(
                    f"the {_name(entry)} export's content: it is the file the bundle was made with; its "
                    "content was not checked value by value (it cites no fields)"
                )
                return None
        except _MismatchError as exc:
            return BundleFailure(path.name, f"{exc}: the export was changed after it was made")
        report.proved.append(
            f"checked {checked} values of the {_name(entry)} export against the signed records: each is "
            "what the record it names holds at the field it names"
        )
        report.cannot.append(
            f"what the {_name(entry)} export says without citing a record (statuses and outcomes as the "
            "rules decided them, the summary): they were not checked value by value"
        )
        return None

    return check


def difference(found: bytes, made: bytes, fmt: str) -> str:
    """Where an export first differs from what the records make, for a reader."""
    if fmt == "csv":
        try:
            with zipfile.ZipFile(io.BytesIO(found)) as a, zipfile.ZipFile(io.BytesIO(made)) as b:
                names = sorted(set(a.namelist()) | set(b.namelist()))
                for name in names:
                    x = a.read(name) if name in a.namelist() else b""
                    y = b.read(name) if name in b.namelist() else b""
                    if x != y:
                        return f"{name}: {_first_line(x, y)}"
        except zipfile.BadZipFile:
            return "it is not a zip"
    if fmt in ("json", "epcis", "fhir"):
        try:
            where = _first_path(msgspec.json.decode(found), msgspec.json.decode(made), "")
        except msgspec.DecodeError:
            where = None
        if where is not None:
            return where
    return _first_line(found, made)


def _first_path(found: object, made: object, where: str) -> str | None:
    if isinstance(found, dict) and isinstance(made, dict):
        for key in [*made, *(k for k in found if k not in made)]:
            if key not in found or key not in made:
                return f"at {where}/{key}: {'missing' if key not in found else 'added'}"
            deeper = _first_path(found[key], made[key], f"{where}/{key}")
            if deeper is not None:
                return deeper
        return None
    if isinstance(found, list) and isinstance(made, list):
        for index, (x, y) in enumerate(zip(found, made, strict=False)):
            deeper = _first_path(x, y, f"{where}/{index}")
            if deeper is not None:
                return deeper
        if len(found) != len(made):
            return f"at {where}: {len(found)} items where the records make {len(made)}"
        return None
    if _same(found, made):
        return None
    if isinstance(found, str) and isinstance(made, str):
        return f"at {where or '/'}: {_around(found, made)}"
    return f"at {where or '/'}: {_clip(found)} where the records make {_clip(made)}"


def _first_line(found: bytes, made: bytes) -> str:
    ours, theirs = found.decode("utf-8", "replace").splitlines(), made.decode("utf-8", "replace").splitlines()
    for number, (x, y) in enumerate(itertools.zip_longest(ours, theirs, fillvalue=""), start=1):
        if x != y:
            return f"line {number}, {_around(x, y)}"
    return "it differs"


def _around(found: str, made: str) -> str:
    """Where two texts first differ, with a little of each on either side."""
    at = next((i for i, (a, b) in enumerate(zip(found, made, strict=False)) if a != b), None)
    if at is None:
        at = min(len(found), len(made))
    start = max(0, at - 40)
    return (
        f"from character {at + 1}: {_clip(found[start : at + 60])} where the records make "
        f"{_clip(made[start : at + 60])}"
    )


def _clip(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."


def _name(entry: ExportEntry) -> str:
    return _NAMES.get(entry.format, entry.format)


class _Bodies:
    """The signed bodies of the bundle's proved records, by sequence, decoded when first cited."""

    def __init__(self, bundle: Bundle) -> None:
        self.envelopes = {proof.sequence: record.envelope for proof, record in bundle.records}
        self.held = {str(sequence) for sequence in self.envelopes}
        self.decoded: dict[int, Any] = {}

    def value(self, sequence: int, field: str) -> object:
        if sequence not in self.envelopes:
            raise _MismatchError(f"cites record {sequence}, which the bundle does not hold")
        if sequence not in self.decoded:
            self.decoded[sequence] = msgspec.json.decode(payload_of(self.envelopes[sequence]))
        try:
            return resolve(self.decoded[sequence], field)
        except KeyError:
            raise _MismatchError(
                f"cites field {field} of record {sequence}, which that record does not have"
            ) from None


def _same(cited: object, signed: object) -> bool:
    """Equal and of the same kind (JSON's true is not 1)."""
    return isinstance(cited, bool) == isinstance(signed, bool) and cited == signed


def _check_json(data: bytes, bodies: _Bodies) -> int:
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise _MismatchError(f"cannot be read as JSON ({exc})") from None
    checked = 0
    stack: list[tuple[str, object]] = [("", document)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict) and item.keys() == {"value", "sequence", "field"}:
            sequence, field, value = item["sequence"], item["field"], item["value"]
            if not isinstance(sequence, int) or not isinstance(field, str):
                raise _MismatchError(f"{where}: a cited value whose sequence or field is not one")
            signed = bodies.value(sequence, field)
            if not _same(value, signed):
                raise _MismatchError(
                    f"{where}: says {value!r} for record {sequence} at {field}; the signed record "
                    f"holds {signed!r}"
                )
            checked += 1
        elif isinstance(item, dict):
            stack.extend((f"{where}/{key}", value) for key, value in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}/{index}", value) for index, value in enumerate(item))
    return checked


def _check_csv(data: bytes, bodies: _Bodies) -> int:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            tables = {name: _rows(z.read(name)) for name in z.namelist() if name.endswith(".csv")}
    except (zipfile.BadZipFile, UnicodeDecodeError, csv.Error) as exc:
        raise _MismatchError(f"cannot be read as a zip of CSV tables ({exc})") from None
    for needed in (COLUMNS, CELLS):
        if needed not in tables:
            raise _MismatchError(f"holds no {needed}: the CSV export's index of what each cell cites")
    cited: dict[tuple[str, int, str], list[tuple[int, int, str]]] = {}
    for line, row in enumerate(_records(tables[CELLS], CELLS), start=1):
        try:
            key = (row["table"], int(row["row"]), row["column"])
            cited.setdefault(key, []).append((int(row["item"]), int(row["sequence"]), row["field"]))
        except ValueError:
            raise _MismatchError(f"{CELLS} line {line}: row, item and sequence are numbers") from None
    for (table, number, column), items in sorted(cited.items()):
        signed = [bodies.value(sequence, field) for _, sequence, field in sorted(items)]
        cell = _cell(tables, table, number, column)
        if cell != cell_text(signed):
            sequence, field = sorted(items)[0][1:]
            raise _MismatchError(
                f"{table} row {number}, column {column}: says {cell!r}; record {sequence} holds "
                f"{cell_text(signed)!r} at {field}"
            )
    for row in _records(tables[COLUMNS], COLUMNS):
        if row["source"] not in (FROM_RECORD, ROW_RECORD) or row["table"] not in tables:
            continue
        table, column = row["table"], row["column"]
        for number, values in enumerate(_records(tables[table], table), start=1):
            if row["source"] == ROW_RECORD and values.get(column, "") not in bodies.held:
                raise _MismatchError(
                    f"{table} row {number}, column {column}: {values.get(column)!r} is not a record the "
                    "bundle holds"
                )
            if row["source"] == FROM_RECORD and values.get(column) and (table, number, column) not in cited:
                raise _MismatchError(
                    f"{table} row {number}, column {column}: a value read from a record that cites none"
                )
    return sum(len(items) for items in cited.values())


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def _records(rows: list[list[str]], table: str) -> list[dict[str, str]]:
    """The rows of a table under its header, by column name."""
    if not rows:
        raise _MismatchError(f"{table} has no header")
    header = rows[0]
    return [dict(zip(header, row, strict=False)) for row in rows[1:]]


def _cell(tables: dict[str, list[list[str]]], table: str, number: int, column: str) -> str:
    rows = tables.get(table)
    if rows is None:
        raise _MismatchError(f"{CELLS} cites table {table}, which the export does not hold")
    if column not in rows[0] or not 1 <= number < len(rows):
        raise _MismatchError(
            f"{CELLS} cites {table} row {number}, column {column}, which the table does not have"
        )
    row = rows[number]
    index = rows[0].index(column)
    return row[index] if index < len(row) else ""
