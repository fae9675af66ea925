"""One therapy's history as an auditor reads it: every record, who signed it and what the
signature means, with corrections shown beside the value they correct (old values stay) and
what the rules flagged on a record (a failed release test's deviation, a step inside a hold
reported later)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from aggregates.base import body_of
from aggregates.therapy import therapy_uuid
from ledger.app.application import LedgerApplication
from ledger.store.streams import Therapy
from ledger.wire import events as ev
from projections.display import utc

_HEADER = {"type", "event_id", "occurred_at", "site", "actor", "reason", "manifestations", "coi"}


class HistoryRow(msgspec.Struct):
    version: int
    recorded_at: datetime
    occurred_at: datetime
    type: str
    site: str
    actor: str
    details: str
    signatures: list[str]
    reason: str | None = None
    corrections: list[str] = []
    notes: list[str] = []


def history(app: LedgerApplication, coi: str) -> list[HistoryRow]:
    """Rows in record order; empty when the COI is unknown."""
    rows: list[HistoryRow] = []
    by_event: dict[object, HistoryRow] = {}
    stored_events = list(app.events.get(therapy_uuid(coi)))
    notes: dict[object, list[str]] = {}
    if stored_events:
        therapy: object = app.repository.get(therapy_uuid(coi))
        assert isinstance(therapy, Therapy)
        notes = dict(therapy.state.notes)
    for stored in stored_events:
        assert isinstance(stored, Therapy.Opened | Therapy.Recorded)
        body = body_of(stored.envelope)
        fields = msgspec.to_builtins(body)
        row = HistoryRow(
            version=stored.originator_version,
            recorded_at=stored.timestamp,
            occurred_at=body.occurred_at,
            type=fields["type"],
            site=body.site,
            actor=body.actor,
            # An absent optional field (e.g. a v0.1 field in a new record) says nothing.
            details=", ".join(f"{k}={v}" for k, v in fields.items() if k not in _HEADER and v is not None),
            signatures=[
                f"{m.printed_name} ({m.principal}) {m.meaning} {utc(m.signed_at)}"
                for m in body.manifestations
            ],
            reason=body.reason,
            notes=list(notes.get(body.event_id, [])),
        )
        rows.append(row)
        by_event[body.event_id] = row
        if isinstance(body, ev.RecordCorrected) and body.corrects_event_id in by_event:
            by_event[body.corrects_event_id].corrections.append(
                f"{body.field}: {body.old_value} -> {body.new_value} (v{row.version}, {body.reason})"
            )
    return rows
