"""What auditors ask of the read models: find an identifier, replay a patient as of a time,
the audit trail, the registers, the signature manifest, stage durations, registry history.

Read only, over the tables projections/tables.py defines. Every list that can grow with the
ledger is paged: at most `limit` rows and the cursor of the next page (`after`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import msgspec

from aggregates.base import body_of
from ledger.wire import events as ev
from projections.audit import replay
from projections.custody import ProjectionError, TimelineRow, as_utc
from projections.rows import RecordRow, RegisterRow, RegistryRow, UnitRow
from projections.tables import CUSTODY_TIMELINE, RECORDS, REGISTER, REGISTRY, decode, placeholders

T = TypeVar("T")

# The header every body has: the rest of a body is its details.
_HEADER = frozenset({"type", "event_id", "occurred_at", "site", "actor", "reason", "manifestations", "coi"})
# The stages in the order a journey passes them (projections/audit.py `_stages`).
STAGE_ORDER = (
    "enrolment to collection", "collection to manufacturing site", "manufacturing", "QC and disposition",
    "release to dispatch", "shipment", "receipt to infusion", "vein to vein",
)  # fmt: skip

_RECORD_COLUMNS = ", ".join(f"r.{f}" for f in RecordRow.__struct_fields__)
_SIGNATURE_COLUMNS = (
    "s.sequence, s.position, r.event_type, s.keyid, s.principal, s.printed_name, s.signed_at, s.meaning"
    " FROM proj_signatures s JOIN proj_records r ON r.sequence = s.sequence"
)
_CUSTODY_OF = (
    f"SELECT {', '.join(TimelineRow.__struct_fields__)} FROM {CUSTODY_TIMELINE.name}"  # noqa: S608
    " WHERE coi = ? ORDER BY sequence, position"
)


class QueryError(ValueError):
    """A question the read models cannot answer as asked; the message names the argument."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class AmbiguousError(QueryError):
    """An identifier unique only within one patient, found under several: name the patient."""

    def __init__(self, argument: str, identifier: str, cois: list[str]) -> None:
        super().__init__(
            argument, f"{identifier} is known under {len(cois)} patients: {', '.join(cois)}; add --coi"
        )
        self.cois = cois


class Page(msgspec.Struct, Generic[T]):
    rows: list[T]
    next: str | None  # pass as `after` for the next page; None: this was the last


class SignatureView(msgspec.Struct, frozen=True):
    sequence: int
    type: str  # of the record signed
    keyid: str
    principal: str
    kind: str | None  # person | device | site_system, from the registry
    printed_name: str | None  # the manifestation's, else the registry's
    signed_at: datetime | None  # the manifestation's; a device or site system signs without one
    meaning: str | None


class CorrectionView(msgspec.Struct, frozen=True):
    sequence: int
    field: str
    old_value: str
    new_value: str
    reason: str | None
    actor: str
    recorded_at: datetime


class RecordView(msgspec.Struct, frozen=True):
    sequence: int
    coi: str | None
    type: str
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    site: str
    actor: str
    reason: str | None
    outcome: str | None  # MATCH | MISMATCH, PASS | FAIL, RELEASED | REJECTED, EXCURSION
    entered_late: bool  # recorded later after it occurred than the policy's late-entry delay
    details: dict[str, Any]  # the body's own fields
    signatures: list[SignatureView]
    flags: list[str]  # what the rules flagged on it (as known at the view's time)
    corrections: list[CorrectionView]  # the later records correcting it (as known at the view's time)
    corrects: int | None  # the sequence this record corrects
    envelope: str  # verbatim, as signed


class Timeline(msgspec.Struct, frozen=True):
    coi: str
    as_of: datetime | None  # records that had occurred by then
    known_at: datetime | None  # records the ledger held by then
    records: list[RecordView]
    units: list[UnitRow]  # each unit as it stood after the last of those records
    custody: list[TimelineRow]  # each unit's custodian and location after each of those records


class Match(msgspec.Struct, frozen=True):
    identifier: str
    kind: str
    coi: str
    records: list[int]  # the sequences of the records naming it


class StageFigures(msgspec.Struct, frozen=True):
    stage: str
    site: str
    count: int
    p50_hours: float
    p90_hours: float
    max_hours: float


LateAfter = Callable[[datetime], timedelta]


def _never_late(_: datetime) -> timedelta:
    return timedelta.max


@dataclass
class Audit:
    """Queries over the read models on a DB-API connection (sqlite3 or psycopg)."""

    conn: Any
    postgres: bool
    late_after: LateAfter = _never_late  # the policy's late-entry delay in force at a time
    _registered: dict[str, tuple[str | None, str | None]] | None = field(default=None, init=False)

    # ------------------------------------------------------------------ find

    def find(self, identifier: str, *, limit: int = 100, after: str | None = None) -> Page[Match]:
        """The patients (in COI order, `limit` of them after the COI `after`) and records naming
        `identifier` (a COI, DIN, batch, cartridge, unit, sample, shipment, label, deviation,
        hold, logger, order or event id). A logger or shuttle names thousands of patients: the
        page reads only its own."""
        where = _Where()
        where.add("identifier = ?", identifier)
        if after is not None:
            self._cursor_at(
                "SELECT 1 FROM proj_identifiers WHERE identifier = ? AND coi = ?", after, identifier, after
            )
            where.add("coi > ?", after)
        found: dict[tuple[str, str], list[int]] = {}
        cur = self.conn.cursor()
        try:
            cur.execute(
                placeholders(
                    f"SELECT coi, kind, sequence FROM proj_identifiers WHERE {where}"  # noqa: S608
                    " ORDER BY coi, kind, sequence",
                    self.postgres,
                ),
                where.params,
            )
            cois: list[str] = []
            while rows := cur.fetchmany(500):
                for coi, kind, sequence in rows:
                    if not cois or cois[-1] != coi:
                        cois.append(coi)
                    if len(cois) > limit:
                        break
                    found.setdefault((coi, kind), []).append(int(sequence))
                if len(cois) > limit:
                    break
        finally:
            cur.close()
        matches = [Match(identifier, kind, coi, sequences) for (coi, kind), sequences in found.items()]
        return Page(matches, cois[limit - 1] if len(cois) > limit else None)

    def cois(self, identifier: str, kind: str | None = None, most: int = 50) -> list[str]:
        """The patients under whom `identifier` names a `kind` (at most `most` of them)."""
        where = _Where()
        where.add("identifier = ?", identifier)
        where.given("kind = ?", kind)
        sql = f"SELECT DISTINCT coi FROM proj_identifiers WHERE {where} ORDER BY coi LIMIT {int(most)}"  # noqa: S608
        return [coi for (coi,) in self._all(sql, *where.params)]

    # ------------------------------------------------------------------ one patient

    def timeline(self, coi: str, as_of: datetime | None = None, known_at: datetime | None = None) -> Timeline:
        """The patient's records and units as they stood: `as_of`, what had happened by then
        (by occurred_at, late entries included), with the corrections of those records the
        ledger holds; `known_at`, what the ledger held then (by recorded_at, so a later
        correction or flag does not change it). Empty records: the COI is unknown, or nothing
        had happened by then."""
        known = [
            r for r in self._records("r.coi = ?", (coi,)) if known_at is None or r.recorded_at <= known_at
        ]
        rows = [r for r in known if as_of is None or r.occurred_at <= as_of]
        try:
            patient, derived = replay((r.sequence, r.recorded_at, r.envelope) for r in rows)
        except ProjectionError as exc:  # a step whose prerequisite happened later: the rules refuse that
            raise QueryError(
                "--as-of", f"the records of {coi} that had happened by then do not replay alone: {exc}"
            ) from None
        flags: dict[int, list[str]] = defaultdict(list)
        for flag in derived.flags:
            flags[flag.sequence].append(flag.note)
        kept = {r.sequence for r in rows}
        custody = [
            step
            for step in (decode(TimelineRow, row) for row in self._all(_CUSTODY_OF, coi))
            if step.sequence in kept
        ]
        units = sorted(patient.units.values(), key=lambda u: u.unit_id)
        # A correction made after `as_of` corrects what had happened by then: it is shown.
        views = self._views(rows, flags, [r for r in known if r.corrects in kept])
        # Where a correction of these records restated a location, the unit was there.
        located = {v.sequence: c.new_value for v in views for c in v.corrections if c.field == "location"}
        custody = [
            msgspec.structs.replace(step, location=located[step.sequence])
            if step.sequence in located
            else step
            for step in custody
        ]
        return Timeline(coi, as_of, known_at, views, units, custody)

    def history(self, coi: str) -> list[RecordView]:
        return self.timeline(coi).records

    # ------------------------------------------------------------------ network-wide

    def trail(
        self,
        *,
        coi: str | None = None,
        site: str | None = None,
        actor: str | None = None,
        event_type: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[RecordView]:
        """Records by recorded_at (then sequence) for the periodic audit-trail review: each
        filter narrows; `actor` is anyone who signed the record."""
        # An actor's records come from the signatures, in their own (principal, recorded_at) order.
        t = "s" if actor is not None else "r"
        source = f"proj_signatures s JOIN {RECORDS.name} r ON r.sequence = s.sequence" if actor else None
        where = _Where()
        where.given("s.principal = ?", actor)
        where.given("r.coi = ?", coi)
        where.given("r.site = ?", site)
        where.given("r.event_type = ?", event_type)
        where.given(f"{t}.recorded_at >= ?", start and self._time(start))
        where.given(f"{t}.recorded_at <= ?", end and self._time(end))
        if after is not None:
            where.add(
                f"({t}.recorded_at, {t}.sequence) >"  # noqa: S608 - t is r or s
                " (SELECT a.recorded_at, a.sequence FROM proj_records a WHERE a.sequence = ?)",
                self._cursor_at(
                    "SELECT 1 FROM proj_records WHERE sequence = ?", after, _sequence_cursor(after)
                ),
            )
        rows = self._records(
            str(where), where.params, order=f"{t}.recorded_at, {t}.sequence", limit=limit + 1, source=source
        )
        page, more = rows[:limit], len(rows) > limit
        sequences = [r.sequence for r in page]
        # The corrections of what is shown, wherever they fall in the trail.
        correcting = (
            self._records(f"r.corrects IN ({', '.join('?' * len(sequences))})", sequences) if page else []
        )
        return Page(
            self._views(page, self._flags(sequences), correcting),
            str(page[-1].sequence) if more else None,
        )

    def register(
        self,
        *,
        kind: str | None = None,
        open_only: bool = False,
        coi: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[RegisterRow]:
        """Deviations, holds, excursions, corrections and dispositions, in the order they were opened."""
        where = _Where()
        where.given("kind = ?", kind)
        where.given("coi = ?", coi)
        if open_only:
            where.add("closed_sequence IS NULL")
        if after is not None:
            where.add(
                "(opened_sequence, kind, item_id) > (?, ?, ?)",
                *self._cursor_at(
                    "SELECT 1 FROM proj_register WHERE opened_sequence = ? AND kind = ? AND item_id = ?",
                    after,
                    *_register_cursor(after),
                ),
            )
        params = where.params
        sql = (
            f"SELECT {', '.join(RegisterRow.__struct_fields__)} FROM {REGISTER.name}"  # noqa: S608
            f" WHERE {where}"
            " ORDER BY opened_sequence, kind, item_id LIMIT ?"
        )
        rows = [decode(RegisterRow, row) for row in self._all(sql, *params, limit + 1)]
        page, more = rows[:limit], len(rows) > limit
        last = page[-1] if page else None
        return Page(page, f"{last.opened_sequence}:{last.kind}:{last.item_id}" if more and last else None)

    def signatures(
        self, *, coi: str | None = None, batch: str | None = None, limit: int = 100, after: str | None = None
    ) -> Page[SignatureView]:
        """Every signature on a patient's records, or on the records naming a batch or any
        unit made from, consumed into or sampled from it."""
        if batch is not None:
            if coi is None:
                cois = self.cois(batch, "batch")
            else:
                named_under = (
                    "SELECT 1 FROM proj_identifiers WHERE identifier = ? AND coi = ? AND kind = 'batch'"
                )
                cois = [coi] if self._all(named_under + " LIMIT 1", batch, coi) else []
            if not cois:
                raise QueryError(
                    "--batch", f"no record names a batch {batch}" + (f" of {coi}" if coi else "")
                )
            if len(cois) > 1:
                raise AmbiguousError("--batch", batch, cois)
            coi = cois[0]
            named = self._batch_members(coi, batch)
            marks = ", ".join("?" * len(named))
            where = (
                "s.coi = ? AND s.sequence IN (SELECT i.sequence FROM proj_identifiers i"  # noqa: S608 - marks only
                f" WHERE i.coi = ? AND i.identifier IN ({marks}))"
            )
            params: list[object] = [coi, coi, *named]
        elif coi is not None:
            where, params = "s.coi = ?", [coi]
        else:
            raise QueryError("--coi", "name a patient (--coi) or a batch (--batch)")
        if after is not None:
            where += " AND (s.sequence, s.position) > (?, ?)"
            sequence, position = _cursor(after, 2)
            if not (sequence.isdigit() and position.isdigit()):
                raise QueryError("--after", f"{after!r} is not a cursor this command printed")
            params.extend(
                self._cursor_at(
                    "SELECT 1 FROM proj_signatures WHERE sequence = ? AND position = ?",
                    after,
                    int(sequence),
                    int(position),
                )
            )
        rows = self._all(
            f"SELECT {_SIGNATURE_COLUMNS} WHERE {where} ORDER BY s.sequence, s.position LIMIT ?",
            *params,
            limit + 1,
        )
        page, more = rows[:limit], len(rows) > limit
        views = [self._signature(row) for row in page]
        return Page(views, f"{page[-1][0]}:{page[-1][1]}" if more else None)

    def stages(self, site: str | None = None) -> list[StageFigures]:
        """Durations of each stage, per site where it ended: count, p50, p90, max (hours)."""
        rows = self._all(
            "SELECT stage, site, seconds FROM proj_stages" + (" WHERE site = ?" if site else ""),  # noqa: S608
            *([site] if site else []),
        )
        grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
        for stage, at, seconds in rows:
            grouped[(stage, at)].append(float(seconds) / 3600)
        order = {stage: i for i, stage in enumerate(STAGE_ORDER)}
        return [
            StageFigures(stage, at, len(hours), _percentile(hours, 50), _percentile(hours, 90), max(hours))
            for (stage, at), hours in sorted(
                grouped.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])
            )
        ]

    def registry(self, principal: str | None = None, as_of: datetime | None = None) -> list[RegistryRow]:
        """Who registered, rotated or revoked which key, on whose authority and why, in log
        order; `as_of`: the changes that had happened by then."""
        where = _Where()
        where.given("principal_id = ?", principal)
        where.given("occurred_at <= ?", as_of and self._time(as_of))
        sql = f"SELECT {', '.join(RegistryRow.__struct_fields__)} FROM {REGISTRY.name}"  # noqa: S608
        sql += f" WHERE {where} ORDER BY sequence"
        return [decode(RegistryRow, row) for row in self._all(sql, *where.params)]

    def site_seen(self, site: str) -> bool:
        """Whether any record was made at `site` (a filter naming no such site is a typo)."""
        return bool(self._all(f"SELECT 1 FROM {RECORDS.name} WHERE site = ? LIMIT 1", site))  # noqa: S608

    def principal_known(self, principal: str) -> bool:
        """Whether `principal` was ever registered."""
        return bool(self._all(f"SELECT 1 FROM {REGISTRY.name} WHERE principal_id = ? LIMIT 1", principal))  # noqa: S608

    # ------------------------------------------------------------------ freshness

    def began(self, clock: str) -> datetime | None:
        """When the ledger began by `clock`: its first record's recorded_at, or its occurred_at
        (what an --as-of time is compared with); None for an empty ledger."""
        column = {"recorded_at": "recorded_at", "occurred_at": "occurred_at"}[clock]
        row = self._all(f"SELECT {column} FROM {RECORDS.name} ORDER BY sequence LIMIT 1")  # noqa: S608
        return as_utc(row[0][0]) if row else None

    # ------------------------------------------------------------------ internals

    def _records(
        self,
        where: str,
        params: Sequence[object],
        *,
        order: str = "r.sequence",
        limit: int | None = None,
        source: str | None = None,
    ) -> list[RecordRow]:
        """Records (as `r`, joined in `source` if given) matching `where`."""
        sql = f"SELECT {_RECORD_COLUMNS} FROM {source or RECORDS.name + ' r'} WHERE {where} ORDER BY {order}"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [decode(RecordRow, row) for row in self._all(sql, *params)]

    def _views(
        self,
        rows: list[RecordRow],
        flags: dict[int, list[str]],
        correcting: list[RecordRow] = (),  # type: ignore[assignment]
    ) -> list[RecordView]:
        """The records with their signatures, and the corrections among `rows` (and `correcting`)
        beside what they correct."""
        signatures = self._signatures_of([r.sequence for r in rows])
        corrections: dict[int, list[CorrectionView]] = defaultdict(list)
        bodies = {r.sequence: body_of(r.envelope) for r in rows}
        for r in sorted({r.sequence: r for r in [*rows, *correcting]}.values(), key=lambda r: r.sequence):
            body = bodies.get(r.sequence) or body_of(r.envelope)
            if r.corrects is not None and isinstance(body, ev.RecordCorrected):
                corrections[r.corrects].append(
                    CorrectionView(
                        r.sequence,
                        body.field,
                        body.old_value,
                        body.new_value,
                        r.reason,
                        r.actor,
                        r.recorded_at,
                    )
                )
        return [
            RecordView(
                sequence=r.sequence,
                coi=r.coi,
                type=r.event_type,
                event_id=r.event_id,
                occurred_at=r.occurred_at,
                recorded_at=r.recorded_at,
                site=r.site,
                actor=r.actor,
                reason=r.reason,
                outcome=r.outcome,
                entered_late=r.recorded_at - r.occurred_at > self.late_after(r.recorded_at),
                details=_details(bodies[r.sequence]),
                signatures=signatures.get(r.sequence, []),
                flags=flags.get(r.sequence, []),
                corrections=corrections.get(r.sequence, []),
                corrects=r.corrects,
                envelope=r.envelope,
            )
            for r in rows
        ]

    def _flags(self, sequences: list[int]) -> dict[int, list[str]]:
        """What the rules flagged on these records, as the ledger knows it now."""
        flags: dict[int, list[str]] = defaultdict(list)
        if sequences:
            marks = ", ".join("?" * len(sequences))
            sql = f"SELECT sequence, note FROM proj_flags WHERE sequence IN ({marks})"  # noqa: S608
            sql += " ORDER BY sequence, flagged_by"
            for sequence, note in self._all(sql, *sequences):
                flags[int(sequence)].append(note)
        return flags

    def _signatures_of(self, sequences: list[int]) -> dict[int, list[SignatureView]]:
        found: dict[int, list[SignatureView]] = defaultdict(list)
        for chunk in (sequences[i : i + 500] for i in range(0, len(sequences), 500)):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT {_SIGNATURE_COLUMNS} WHERE s.sequence IN ({marks}) ORDER BY s.sequence, s.position"
            for row in self._all(sql, *chunk):
                found[int(row[0])].append(self._signature(row))
        return found

    def _signature(self, row: Sequence[Any]) -> SignatureView:
        sequence, _, event_type, keyid, principal, printed_name, signed_at, meaning = row
        registered = self._principals().get(principal)
        return SignatureView(
            int(sequence),
            event_type,
            keyid,
            principal,
            registered[1] if registered else None,
            printed_name or (registered[0] if registered else None),
            as_utc(signed_at) if signed_at is not None else None,
            meaning,
        )

    def _principals(self) -> dict[str, tuple[str | None, str | None]]:
        """principal -> (printed name, kind) as registered; read once per Audit."""
        if self._registered is None:
            rows = self._all(
                "SELECT principal_id, printed_name, kind FROM proj_registry_history"
                " WHERE change = 'registered'"
            )
            self._registered = {principal: (name, kind) for principal, name, kind in rows}
        return self._registered

    def _batch_members(self, coi: str, batch: str) -> list[str]:
        """The batch and the units consumed into, made in or sampled from it."""
        rows = self._all(
            "SELECT parent, child FROM proj_genealogy WHERE coi = ? AND (parent = ? OR child = ?)",
            coi,
            batch,
            batch,
        )
        return sorted({batch, *(child if parent == batch else parent for parent, child in rows)})

    def _cursor_at(self, sql: str, text: str, *key: Any) -> Any:
        """The cursor's key, once the row it names is found: a page starts after a row shown."""
        if not self._all(sql, *key):
            raise QueryError("--after", f"{text!r} is not a cursor this command printed")
        return key[0] if len(key) == 1 else key

    def _all(self, sql: str, *params: object) -> list[Any]:
        cur = self.conn.cursor()
        try:
            cur.execute(placeholders(sql, self.postgres), params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def _time(self, at: datetime) -> object:
        at = as_utc(at)
        return at if self.postgres else at.isoformat()


class _Where:
    """Conditions joined by AND, with their parameters in order."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: list[object] = []

    def add(self, condition: str, *params: object) -> None:
        self.terms.append(condition)
        self.params.extend(params)

    def given(self, condition: str, value: object) -> None:
        """The condition on `value`, unless it is None (not asked)."""
        if value is not None:
            self.add(condition, value)

    def __str__(self) -> str:
        return " AND ".join(self.terms) or "1 = 1"


def _details(body: ev.Event) -> dict[str, Any]:
    fields = msgspec.to_builtins(body)
    # An absent optional field (a v0.1 field in a new record) says nothing.
    return {k: v for k, v in fields.items() if k not in _HEADER and v is not None}


def _percentile(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def _cursor(text: str, parts: int) -> list[str]:
    found = text.split(":", parts - 1)
    if len(found) != parts or not all(found):
        raise QueryError("--after", f"{text!r} is not a cursor this command printed")
    return found


def _sequence_cursor(text: str) -> int:
    if not text.isdigit():
        raise QueryError("--after", f"{text!r} is not a cursor this command printed")
    return int(text)


def _register_cursor(text: str) -> tuple[int, str, str]:
    sequence, kind, item_id = _cursor(text, 3)
    if not sequence.isdigit():
        raise QueryError("--after", f"{text!r} is not a cursor this command printed")
    return int(sequence), kind, item_id
