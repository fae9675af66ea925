"""The projection tables: their DDL, the migrations that made them, and how rows go in.

Each read model is one table whose columns are its row Struct's fields in order, so rows
are written and read back generically. The DDL is written out: a migration that has shipped
never changes, so a new column is a new migration (and a rebuild fills it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, get_type_hints

import msgspec

from ledger.store.migrations import Migration, ddl
from projections.custody import CurrentCustody, TimelineRow
from projections.rows import (
    EdgeRow,
    FlagRow,
    IdentifierRow,
    QcRow,
    RecordRow,
    RegisterRow,
    RegistryRow,
    SignatureRow,
    StageRow,
    UnitRow,
)  # fmt: skip

S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True)
class Table:
    name: str
    row: type[msgspec.Struct]
    key: tuple[str, ...]
    order: str  # how a snapshot lists the rows
    # INSERT ... ON CONFLICT: DO NOTHING, or an update guarded so only a newer record wins
    on_conflict: str = "DO NOTHING"

    def insert(self, postgres: bool) -> str:
        marks = ", ".join(["?"] * len(self.row.__struct_fields__))
        conflict = f"ON CONFLICT ({', '.join(self.key)}) {self.on_conflict}"
        sql = f"INSERT INTO {self.name} VALUES ({marks}) {conflict}"  # noqa: S608 - constant names
        return placeholders(sql, postgres)

    def select(self) -> str:
        return f"SELECT {', '.join(self.row.__struct_fields__)} FROM {self.name} ORDER BY {self.order}"  # noqa: S608


def _newer(table: str, fields: tuple[str, ...], key: tuple[str, ...]) -> str:
    sets = ", ".join(f"{f} = excluded.{f}" for f in fields if f not in key)
    return f"DO UPDATE SET {sets} WHERE {table}.sequence < excluded.sequence"


CUSTODY_TIMELINE = Table(
    "proj_custody_timeline", TimelineRow, ("sequence", "unit_id"), "sequence, position, unit_id"
)
CUSTODY_CURRENT = Table(
    "proj_custody_current", CurrentCustody, ("coi", "unit_id"), "coi, unit_id",
    _newer("proj_custody_current", CurrentCustody.__struct_fields__, ("coi", "unit_id")),
)  # fmt: skip
RECORDS = Table("proj_records", RecordRow, ("sequence",), "sequence")
SIGNATURES = Table("proj_signatures", SignatureRow, ("sequence", "position"), "sequence, position")
FLAGS = Table("proj_flags", FlagRow, ("sequence", "flagged_by", "note"), "sequence, flagged_by, note")
IDENTIFIERS = Table(
    "proj_identifiers",
    IdentifierRow,
    ("identifier", "coi", "kind", "sequence"),
    "identifier, coi, kind, sequence",
)
UNITS = Table(
    "proj_units", UnitRow, ("coi", "unit_id"), "coi, unit_id",
    _newer("proj_units", UnitRow.__struct_fields__, ("coi", "unit_id")),
)  # fmt: skip
GENEALOGY = Table(
    "proj_genealogy",
    EdgeRow,
    ("coi", "parent", "relation", "child"),
    "coi, sequence, parent, relation, child",
)
QC = Table("proj_qc", QcRow, ("sequence",), "sequence")
REGISTER = Table("proj_register", RegisterRow, ("coi", "kind", "item_id"), "opened_sequence, kind, item_id")
REGISTRY = Table("proj_registry_history", RegistryRow, ("sequence",), "sequence")
STAGES = Table("proj_stages", StageRow, ("coi", "stage", "subject"), "coi, stage, subject")

# What one record's audit rows go into, by AuditRows field.
AUDIT = {
    "records": RECORDS, "signatures": SIGNATURES, "flags": FLAGS, "identifiers": IDENTIFIERS,
    "units": UNITS, "edges": GENEALOGY, "qc": QC, "register": REGISTER, "registry": REGISTRY,
    "stages": STAGES,
}  # fmt: skip
READ_MODELS = (CUSTODY_TIMELINE, CUSTODY_CURRENT, *AUDIT.values())
TRACKING = "proj_projector_tracking"

# A register entry is closed once, by the first record that closes it.
CLOSE = """UPDATE proj_register SET closed_sequence = ?, closed_at = ?, closed_by = ?, outcome = ?
    WHERE coi = ? AND kind = ? AND item_id = ? AND closed_sequence IS NULL"""

_CUSTODY_DDL = (
    """CREATE TABLE IF NOT EXISTS proj_custody_timeline (
        sequence {int} NOT NULL, position INTEGER NOT NULL, unit_id TEXT NOT NULL, coi TEXT NOT NULL,
        event_type TEXT NOT NULL, custodian TEXT NOT NULL, site TEXT NOT NULL,
        occurred_at {time} NOT NULL, recorded_at {time} NOT NULL, actor TEXT NOT NULL,
        from_custodian TEXT, to_custodian TEXT, location TEXT, batch_id TEXT, shipment_id TEXT,
        parents TEXT NOT NULL, PRIMARY KEY (sequence, unit_id))""",
    """CREATE TABLE IF NOT EXISTS proj_custody_current (
        coi TEXT NOT NULL, unit_id TEXT NOT NULL, kind TEXT NOT NULL, custodian TEXT NOT NULL,
        site TEXT NOT NULL, status TEXT NOT NULL, since {time} NOT NULL, sequence {int} NOT NULL,
        location TEXT, batch_id TEXT, shipment_id TEXT, PRIMARY KEY (coi, unit_id))""",
    f"""CREATE TABLE IF NOT EXISTS {TRACKING} (
        consumer TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
        next_offset {{int}} NOT NULL, PRIMARY KEY (consumer, topic, partition))""",
    # One unit's timeline; the batch and shipment lookups stay within one COI too.
    "CREATE INDEX IF NOT EXISTS proj_custody_timeline_unit ON proj_custody_timeline (coi, unit_id, sequence)",
)
# `status` there said held for anything in someone's hands, a rejected product too: it is the
# unit's custody; proj_units has the status a person reads.
_CUSTODY_RENAMED = ("ALTER TABLE proj_custody_current RENAME COLUMN status TO custody",)

_AUDIT_DDL = (
    """CREATE TABLE IF NOT EXISTS proj_records (
        sequence {int} NOT NULL PRIMARY KEY, coi TEXT, event_type TEXT NOT NULL, event_id TEXT NOT NULL,
        occurred_at {time} NOT NULL, recorded_at {time} NOT NULL, site TEXT NOT NULL, actor TEXT NOT NULL,
        reason TEXT, outcome TEXT, corrects {int}, envelope TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS proj_records_coi ON proj_records (coi, sequence)",
    # The trail shows each record's corrections wherever they fall: found by what they correct.
    "CREATE INDEX IF NOT EXISTS proj_records_corrects ON proj_records (corrects) WHERE corrects IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS proj_records_recorded ON proj_records (recorded_at, sequence)",
    "CREATE INDEX IF NOT EXISTS proj_records_site ON proj_records (site, recorded_at, sequence)",
    "CREATE INDEX IF NOT EXISTS proj_records_type ON proj_records (event_type, recorded_at, sequence)",
    """CREATE TABLE IF NOT EXISTS proj_signatures (
        sequence {int} NOT NULL, position INTEGER NOT NULL, coi TEXT, recorded_at {time} NOT NULL,
        keyid TEXT NOT NULL,
        principal TEXT NOT NULL, printed_name TEXT, signed_at {time}, meaning TEXT,
        PRIMARY KEY (sequence, position))""",
    "CREATE INDEX IF NOT EXISTS proj_signatures_coi ON proj_signatures (coi, sequence)",
    "CREATE INDEX IF NOT EXISTS proj_signatures_principal"
    " ON proj_signatures (principal, recorded_at, sequence)",
    """CREATE TABLE IF NOT EXISTS proj_flags (
        sequence {int} NOT NULL, flagged_by {int} NOT NULL, note TEXT NOT NULL,
        PRIMARY KEY (sequence, flagged_by, note))""",
    """CREATE TABLE IF NOT EXISTS proj_identifiers (
        identifier TEXT NOT NULL, kind TEXT NOT NULL, sequence {int} NOT NULL, coi TEXT NOT NULL,
        PRIMARY KEY (identifier, coi, kind, sequence))""",
    """CREATE TABLE IF NOT EXISTS proj_units (
        coi TEXT NOT NULL, unit_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
        holds TEXT NOT NULL, custodian TEXT NOT NULL, site TEXT NOT NULL, batch_id TEXT,
        shipment_id TEXT, bedside TEXT, sequence {int} NOT NULL, since {time} NOT NULL,
        PRIMARY KEY (coi, unit_id))""",
    """CREATE TABLE IF NOT EXISTS proj_genealogy (
        coi TEXT NOT NULL, parent_kind TEXT NOT NULL, parent TEXT NOT NULL, relation TEXT NOT NULL,
        child_kind TEXT NOT NULL, child TEXT NOT NULL, sequence {int} NOT NULL,
        PRIMARY KEY (coi, parent, relation, child))""",
    """CREATE TABLE IF NOT EXISTS proj_qc (
        sequence {int} NOT NULL PRIMARY KEY, coi TEXT NOT NULL, batch_id TEXT NOT NULL,
        sample_id TEXT NOT NULL, test TEXT NOT NULL, method TEXT NOT NULL, result TEXT NOT NULL,
        specification TEXT NOT NULL, passed BOOLEAN NOT NULL, retest BOOLEAN NOT NULL,
        occurred_at {time} NOT NULL, actor TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS proj_qc_batch ON proj_qc (coi, batch_id, sequence)",
    """CREATE TABLE IF NOT EXISTS proj_register (
        coi TEXT NOT NULL, kind TEXT NOT NULL, item_id TEXT NOT NULL, summary TEXT NOT NULL,
        opened_sequence {int} NOT NULL, opened_at {time} NOT NULL, opened_by TEXT NOT NULL,
        site TEXT NOT NULL, reason TEXT, severity TEXT, batch_id TEXT, links TEXT NOT NULL,
        closed_sequence {int}, closed_at {time}, closed_by TEXT, outcome TEXT,
        PRIMARY KEY (coi, kind, item_id))""",
    "CREATE INDEX IF NOT EXISTS proj_register_opened ON proj_register (opened_sequence, kind, item_id)",
    """CREATE TABLE IF NOT EXISTS proj_registry_history (
        sequence {int} NOT NULL PRIMARY KEY, principal_id TEXT NOT NULL, change TEXT NOT NULL,
        keyid TEXT, effective_at {time} NOT NULL, actor TEXT NOT NULL, authority TEXT NOT NULL,
        occurred_at {time} NOT NULL, recorded_at {time} NOT NULL, printed_name TEXT, kind TEXT,
        roles TEXT NOT NULL, routine BOOLEAN NOT NULL, reason TEXT)""",
    """CREATE TABLE IF NOT EXISTS proj_stages (
        coi TEXT NOT NULL, stage TEXT NOT NULL, subject TEXT NOT NULL, site TEXT NOT NULL,
        started_at {time} NOT NULL, ended_at {time} NOT NULL, seconds DOUBLE PRECISION NOT NULL,
        start_sequence {int} NOT NULL, end_sequence {int} NOT NULL,
        PRIMARY KEY (coi, stage, subject))""",
)

# Recorded in coi_schema of the projections' database (which may be the ledger's).
MIGRATIONS = (
    Migration("custody-projection-tables", ddl(*_CUSTODY_DDL)),
    Migration("custody-current-status-is-custody", ddl(*_CUSTODY_RENAMED)),
    Migration("audit-read-models", ddl(*_AUDIT_DDL)),
    # issue 14: the sites a registration or a binding names (a rebuild fills older rows)
    Migration(
        "registry-history-sites",
        ddl("ALTER TABLE proj_registry_history ADD COLUMN sites TEXT NOT NULL DEFAULT '[]'"),
    ),
)


def recreate(cur: Any, postgres: bool) -> None:
    """Drop the read models and make them again as the migrations leave them."""
    for table in READ_MODELS:
        cur.execute(f"DROP TABLE IF EXISTS {table.name}")
    for migration in MIGRATIONS:
        migration.run(cur, postgres)


def placeholders(sql: str, postgres: bool) -> str:
    return sql.replace("?", "%s") if postgres else sql


_JSON_FIELDS: dict[type, frozenset[str]] = {}
# Per row type, the places of its tuple and datetime fields: values() runs for every row written.
_PLACES: dict[type, tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _json_fields(kind: type[msgspec.Struct]) -> frozenset[str]:
    """The fields kept as JSON text: tuples."""
    found = _JSON_FIELDS.get(kind)
    if found is None:
        hints = get_type_hints(kind)
        found = _JSON_FIELDS[kind] = frozenset(
            name for name in kind.__struct_fields__ if getattr(hints[name], "__origin__", None) is tuple
        )
    return found


def _places(kind: type[msgspec.Struct]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    found = _PLACES.get(kind)
    if found is None:
        hints = get_type_hints(kind)
        as_json = _json_fields(kind)
        found = _PLACES[kind] = (
            tuple(i for i, name in enumerate(kind.__struct_fields__) if name in as_json),
            tuple(
                i
                for i, name in enumerate(kind.__struct_fields__)
                if hints[name] is datetime or datetime in getattr(hints[name], "__args__", ())
            ),
        )
    return found


def values(row: msgspec.Struct, postgres: bool) -> list[object]:
    """A row's column values: tuples as JSON text; times as ISO 8601 text on SQLite."""
    as_json, times = _places(type(row))
    out = list(msgspec.structs.astuple(row))
    for i in as_json:
        out[i] = msgspec.json.encode(out[i]).decode()
    if not postgres:
        for i in times:
            if out[i] is not None:
                out[i] = out[i].isoformat()
    return out


def decode(kind: type[S], row: tuple[Any, ...] | list[Any]) -> S:
    """A row of `kind`'s table, its columns in the Struct's field order."""
    fields = dict(zip(kind.__struct_fields__, row, strict=True))
    for name in _json_fields(kind):
        fields[name] = msgspec.json.decode(fields[name])
    return msgspec.convert(fields, kind, strict=False)  # strict=False: SQLite keeps times as text
