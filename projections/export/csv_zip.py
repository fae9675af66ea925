"""`--format csv`: the genealogy as a zip of CSV tables, one per kind of row, for spreadsheets.

Each table row carries `sequence`: the record it came from. Every cell read from a record is
cited in `cells.csv` (table, row, column, item, sequence, field: the JSON Pointer into that
record's signed body), and `columns.csv` says which columns are read from records and which
the export derived (a status as the rules hold it, a key id from the envelope), so
`coi verify-bundle` checks each cited cell against the signed records without this code
(ledger/audit/exported.py, whose `cell_text` writes every cell here). A cell holding a list
is its items joined by "; ", each item cited.

Files are UTF-8 with a byte order mark (Excel reads UTF-8 only with one), RFC 4180 quoting
and CRLF line ends; a text starting with = + - @ (or a tab or carriage return) is written with
a leading ' so that no spreadsheet runs it as a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.audit.exported import CELLS, COLUMNS, FROM_RECORD, ROW_RECORD, cell_text
from ledger.wire.files import fixed_zip
from projections.export import document as doc

FORMAT = "coi-genealogy-csv/1"
DERIVED = "derived"

Cited = doc.Fact | list[doc.Fact] | None


@dataclass(frozen=True)
class _Column:
    name: str
    source: str  # FROM_RECORD | DERIVED
    get: Callable[[Any], object]


def _cited(name: str, get: Callable[[Any], Cited]) -> _Column:
    return _Column(name, FROM_RECORD, get)


def _derived(name: str, get: Callable[[Any], object]) -> _Column:
    return _Column(name, DERIVED, get)


def _facts(names: str, of: Callable[[Any], Any] = lambda row: row) -> list[_Column]:
    """Columns of the Facts (or lists of Facts) of the same names (space-separated) on `of(row)`."""
    return [_cited(n, _attribute(n, of)) for n in names.split()]


def _plain(names: str, of: Callable[[Any], Any] = lambda row: row) -> list[_Column]:
    """Columns of the values the export derived, of the same names on `of(row)`."""
    return [_derived(n, _attribute(n, of)) for n in names.split()]


def _attribute(name: str, of: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda row: getattr(of(row), name)


@dataclass(frozen=True)
class _Table:
    name: str
    sequence: Callable[[Any], int]  # the record the row came from
    columns: list[_Column]
    rows: Callable[[doc.Genealogy], Sequence[Any]]


def _signed(name: str, *fields: str) -> _Column:
    """A signature's manifestation (or registration) value, from what it cites."""

    def get(signature: doc.Signature) -> Cited:
        return next((f for f in signature.cited if f.field.rsplit("/", 1)[-1] in fields), None)

    return _cited(name, get)


def _outputs(g: doc.Genealogy) -> list[tuple[doc.Product, doc.Output | None]]:
    made = {o.unit_id.value: o for b in g.batches for o in b.outputs}
    return [(p, made.get(p.unit_id.value)) for p in g.products]


def _first(row: tuple[Any, Any]) -> Any:
    return row[0]


def _second(row: tuple[Any, Any]) -> Any:
    return row[1]


def _within(
    name: str,
    parents: Callable[[doc.Genealogy], list[Any]],
    parent_id: str,
    children: str,
    cited: str,
    columns: list[_Column],
) -> _Table:
    """A table of what each parent holds (a batch's steps, a shipment's readings): rows are
    (parent, child), each with the parent's id, and come from the record of the child's `cited`."""
    return _Table(
        name,
        lambda row: getattr(row[1], cited).sequence,
        [_cited(parent_id, _attribute(parent_id, _first)), *columns],
        lambda g: [(parent, child) for parent in parents(g) for child in getattr(parent, children)],
    )  # fmt: skip


def _disposition(get: Callable[[doc.Disposition], doc.Fact | None]) -> Callable[[doc.Batch], Cited]:
    return lambda b: get(b.disposition) if b.disposition is not None else None


TABLES = [
    _Table(
        "patient",
        lambda p: p.coi.sequence,
        _facts("coi order_id product treatment_site enrolled_at enrolled_by") + _plain("uri"),
        lambda g: [g.patient],
    ),
    _Table(
        "collections",
        lambda c: c.din.sequence,
        _facts(
            "din bag product_code collection_facility volume_ml volume_ml_in_force started_at ended_at "
            "site collected_by"
        ),
        lambda g: g.collections,
    ),
    _Table(
        "labels",
        lambda label: label.label_id.sequence,
        _facts("label_id din printed_at applied_to voided"),
        lambda g: g.labels,
    ),
    _Table(
        "batches",
        lambda b: b.batch_id.sequence,
        [
            *_facts(
                "batch_id site shuttle_id slot cartridge_id recipe_version inputs "
                "started_at completed_at samples"
            ),
            _derived("status", lambda b: b.status),
            _cited("disposition", _disposition(lambda d: d.decision)),
            _cited("disposition_at", _disposition(lambda d: d.occurred_at)),
            _cited("disposition_reason", _disposition(lambda d: d.reason)),
        ],
        lambda g: g.batches,
    ),
    _within(
        "steps",
        lambda g: g.batches,
        "batch_id",
        "steps",
        "step",
        _facts("step started_at ended_at material_lots alarms performed_by", of=_second),
    ),
    _within(
        "qc",
        lambda g: g.batches,
        "batch_id",
        "qc",
        "result",
        [
            *_facts("sample_id test method result specification passed occurred_at recorded_by", of=_second),
            _derived("retest", lambda row: row[1].retest),
        ],
    ),
    _within(
        "retests",
        lambda g: g.batches,
        "batch_id",
        "retests",
        "authorised_at",
        _facts("test deviation_id authorised_at authorised_by reason", of=_second),
    ),
    _Table(
        "units",
        lambda row: row[0].unit_id.sequence,
        [
            _cited("unit_id", lambda row: row[0].unit_id),
            _cited("product_code", lambda row: row[1].product_code if row[1] else None),
            _cited("volume_ml", lambda row: row[1].volume_ml if row[1] else None),
            *_plain(
                "batch_id status status_sequence holds custodian site shipment_id bedside uri", of=_first
            ),
        ],
        _outputs,
    ),
    _Table(
        "custody",
        lambda c: c.sequence,
        [
            _derived("type", lambda c: c.type),
            *_facts(
                "units from_custodian to_custodian location location_in_force condition "
                "condition_in_force occurred_at site"
            ),
        ],
        lambda g: g.custody,
    ),
    _Table(
        "shipments",
        lambda s: s.shipment_id.sequence,
        _facts(
            "shipment_id units shipper_id data_logger_id origin_site destination_site dispatched_at "
            "received_at received_location received_condition logger_reviewed"
        ),
        lambda g: g.shipments,
    ),
    _within(
        "temperatures",
        lambda g: g.shipments,
        "shipment_id",
        "temperatures",
        "celsius",
        [
            *_facts("logger_id celsius occurred_at limit_celsius duration_s", of=_second),
            _derived("excursion", lambda row: row[1].excursion),
        ],
    ),
    _Table(
        "bedside",
        lambda b: b.sequence,
        [
            *_facts("unit_id occurred_at checked_by witness"),
            _derived("outcome", lambda b: b.outcome),
        ],
        lambda g: g.bedside,
    ),
    _Table(
        "infusions",
        lambda i: i.occurred_at.sequence,
        _facts("unit_id thaw_started_at occurred_at infused_by site"),
        lambda g: g.infusions,
    ),
    _Table(
        "corrections",
        lambda c: c.sequence,
        [
            _derived("corrects", lambda c: c.corrects),
            *_facts("field old_value new_value reason by occurred_at"),
        ],
        lambda g: g.corrections,
    ),
    _Table(
        "signatures",
        lambda s: s.sequence,
        [
            *_plain("position keyid"),
            _signed("principal", "principal", "principal_id"),
            _signed("kind", "kind"),
            _signed("printed_name", "printed_name"),
            _signed("signed_at", "signed_at"),
            _signed("meaning", "meaning"),
            _derived("manifested", lambda s: s.manifested),
        ],
        lambda g: g.signatures,
    ),
    _Table(
        "register",
        lambda r: r.opened_sequence,
        _plain(
            "kind item_id summary opened_at opened_by site reason severity batch_id links closed_sequence "
            "closed_at closed_by outcome"
        ),
        lambda g: g.register,
    ),
    _Table(
        "records",
        lambda r: r.sequence,
        _plain("type event_id occurred_at recorded_at site actor reason outcome flags leaf_index"),
        lambda g: g.records,
    ),
]


def render(genealogy: doc.Genealogy) -> bytes:
    files: dict[str, list[list[object]]] = {
        name: [] for name in [*(f"{t.name}.csv" for t in TABLES), COLUMNS, CELLS]
    }
    columns, cells = files[COLUMNS], files[CELLS]
    for table in TABLES:
        name = f"{table.name}.csv"
        rows = files[name]
        columns.append([name, ROW_RECORD, ROW_RECORD])
        columns.extend([name, c.name, c.source] for c in table.columns)
        for number, row in enumerate(table.rows(genealogy), start=1):
            line: list[object] = [table.sequence(row)]
            for column in table.columns:
                value = column.get(row)
                if column.source != FROM_RECORD:
                    line.append(_text(value))
                    continue
                facts = [
                    f for f in (value if isinstance(value, list) else [value]) if isinstance(f, doc.Fact)
                ]
                line.append(cell_text([f.value for f in facts]))
                cells.extend([name, number, column.name, i, f.sequence, f.field] for i, f in enumerate(facts))
            rows.append(line)
        rows.insert(0, [ROW_RECORD, *(c.name for c in table.columns)])
    columns.insert(0, ["table", "column", "source"])
    cells.insert(0, ["table", "row", "column", "item", "sequence", "field"])
    return fixed_zip([("README.txt", _readme(genealogy)), *((n, _csv(rows)) for n, rows in files.items())])


def _text(value: object) -> str:
    if value is None:
        return ""
    return cell_text(list(value) if isinstance(value, list) else [value])


def _csv(rows: list[list[object]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8-sig")


def _asked(genealogy: doc.Genealogy) -> str:
    coi = f"COI {genealogy.patient.coi.value}"
    return genealogy.asked if genealogy.asked == coi else f"{genealogy.asked} ({coi})"


def _readme(genealogy: doc.Genealogy) -> bytes:
    checked = genealogy.verification
    return (
        f"{FORMAT}: the genealogy of {_asked(genealogy)}, exported "
        f"{genealogy.exported_at}.\r\n{genealogy.outcome.summary}\r\n"
        + "".join(f"!! {alarm}\r\n" for alarm in genealogy.outcome.alarms)
        + "".join(f"-  {note}\r\n" for note in genealogy.outcome.notes)
        + "\r\n"
        f"Verification: {checked.status}, against the checkpoint at tree size {checked.tree_size} of "
        f"{checked.origin}.\r\n\r\n"
        "One CSV table per kind of row (UTF-8 with a byte order mark, RFC 4180). Each row's `sequence` is "
        "the record it came from. columns.csv says, for each column, whether its values are read from "
        "records (record) or derived by the export (derived: statuses and outcomes as the rules decided "
        "them, key ids, counts); cells.csv cites every value read from a record: table, row (1 is the "
        "first under the header), column, item (a list's items are joined by '; '), the record's "
        "sequence and field (a JSON Pointer into its signed body). With the bundle written beside it "
        "(--with-bundle), coi verify-bundle makes these tables again from the signed records and "
        "compares.\r\n"
        "A text that starts with = + - @, a tab or a carriage return is written with a leading ' so that no "
        "spreadsheet runs it "
        "as a formula; the value in the record has no such '.\r\n"
    ).encode()
