"""One patient's genealogy document (projections/export/document.py) from the records it is
made from: the patient's history and the registry records (for signers' names).

The records go through `projections.audit.derive`, the projector's own code, so a status, a
hold, a flag or a bedside outcome here is what the read models hold and what the rules decided.
Every value is then cited from the signed body it was read from.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import msgspec

from aggregates.base import body_of
from aggregates.therapy import TherapyState
from ledger.transparency.records import payload_of
from ledger.wire import events as ev
from projections.audit import Patients, derive
from projections.custody import as_utc
from projections.export import document as doc
from projections.export.uris import Ids
from projections.rows import AuditRows, Closing, RegisterRow, SignatureRow, UnitRow


class ExportError(ValueError):
    """The records cannot make the document asked for; the message says why."""


@dataclass(frozen=True)
class Source:
    """A record the export is made from, as the ledger (or a bundle) holds it."""

    sequence: int
    recorded_at: str
    envelope: str
    leaf_index: int | None = None


class _Cite:
    """Facts read from one record's signed body."""

    def __init__(self, sequence: int, raw: dict[str, Any]) -> None:
        self.sequence = sequence
        self.raw = raw

    def __call__(self, *path: str | int) -> doc.Fact:
        found = self.opt(*path)
        if found is None:
            raise ExportError(f"sequence {self.sequence}: its body has no {pointer(path)}")
        return found

    def opt(self, *path: str | int) -> doc.Fact | None:
        value: Any = self.raw
        for step in path:
            try:
                value = value[step]
            except (KeyError, IndexError, TypeError):
                return None
        if value is None or isinstance(value, dict | list):
            return None
        return doc.Fact(value, self.sequence, pointer(path))

    def each(self, name: str) -> list[doc.Fact]:
        return [self(name, i) for i in range(len(self.raw.get(name) or ()))]


def pointer(path: tuple[str | int, ...] | list[str | int]) -> str:
    """The JSON Pointer (RFC 6901) of `path`."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def raw_body(envelope: str) -> dict[str, Any]:
    decoded = msgspec.json.decode(payload_of(envelope))
    assert isinstance(decoded, dict)
    return decoded


@dataclass
class _Batch:
    started: _Cite
    steps: list[doc.Step] = field(default_factory=list)
    completed: _Cite | None = None
    samples: list[doc.Fact] = field(default_factory=list)
    qc: list[doc.QcResult] = field(default_factory=list)
    retests: list[doc.Retest] = field(default_factory=list)
    disposition: doc.Disposition | None = None


@dataclass
class _Shipment:
    dispatched: _Cite
    received: _Cite | None = None
    temperatures: list[doc.Reading] = field(default_factory=list)


@dataclass
class _Built:
    """What the walk over the records collects."""

    ids: Ids
    names: dict[str, _Cite]  # principal -> its registration
    bodies: dict[int, _Cite] = field(default_factory=dict)  # sequence -> the patient's records
    rows: AuditRows = field(default_factory=AuditRows)
    state: TherapyState | None = None
    units: dict[str, UnitRow] = field(default_factory=dict)
    enrolment: _Cite | None = None
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    collections: list[tuple[_Cite, str]] = field(default_factory=list)  # and the DIN
    custody: list[tuple[_Cite, ev.Journey]] = field(default_factory=list)
    batches: dict[str, _Batch] = field(default_factory=dict)
    shipments: dict[str, _Shipment] = field(default_factory=dict)
    bedside: list[tuple[_Cite, str]] = field(default_factory=list)  # and the outcome
    infusions: list[_Cite] = field(default_factory=list)
    corrections: list[doc.Correction] = field(default_factory=list)
    signatures: dict[int, list[doc.Signature]] = field(default_factory=lambda: defaultdict(list))
    records: list[doc.Record] = field(default_factory=list)


def build(
    sources: list[Source],
    coi: str,
    ids: Ids,
    verification: doc.Verification,
    asked: str,
    exported_at: datetime,
) -> doc.Genealogy:
    """The document of patient `coi` from `sources` (in sequence order: the patient's records
    and the registry records before them)."""
    built = _Built(ids, {})
    patients = Patients(lambda _: [])
    event_sequences: dict[str, int] = {}
    for source in sources:
        body = body_of(source.envelope)
        if isinstance(body, ev.Journey) and body.coi != coi:
            continue
        if isinstance(body, ev.PrincipalRegistered):
            built.names[body.principal_id] = _Cite(source.sequence, raw_body(source.envelope))
        rows = derive((source.sequence, source.recorded_at, source.envelope), patients, body)
        if not isinstance(body, ev.Journey):
            continue
        _merge(built.rows, rows)
        event_sequences[str(body.event_id)] = source.sequence
        cite = built.bodies[source.sequence] = _Cite(source.sequence, raw_body(source.envelope))
        _collect(built, body, cite, rows, event_sequences)
        record = rows.records[0]
        built.records.append(
            doc.Record(
                sequence=source.sequence,
                type=record.event_type,
                event_id=record.event_id,
                occurred_at=_utc(record.occurred_at),
                recorded_at=_utc(record.recorded_at),
                site=record.site,
                actor=record.actor,
                reason=record.reason,
                outcome=record.outcome,
                flags=[],
                leaf_index=source.leaf_index,
            )
        )
        for unit in rows.units:
            built.units[unit.unit_id] = unit
    if built.enrolment is None:
        raise ExportError(f"the records hold no enrolment of {coi}")
    built.state = patients.get(coi).state
    for signature_row in built.rows.signatures:
        signed = built.bodies[signature_row.sequence]
        built.signatures[signature_row.sequence].append(_signature(signature_row, signed, built.names))
    return _document(built, verification, asked, exported_at)


def _merge(into: AuditRows, rows: AuditRows) -> None:
    for name in AuditRows.__struct_fields__:
        getattr(into, name).extend(getattr(rows, name))


def _collect(
    built: _Built, body: ev.Journey, cite: _Cite, rows: AuditRows, event_sequences: dict[str, int]
) -> None:
    """File the record under the part of the journey it belongs to."""
    match body:
        case ev.Enrolled():
            built.enrolment = cite
        case ev.LabelPrinted():
            built.labels[body.label_id] = {"printed": cite}
        case ev.LabelApplied():
            built.labels.setdefault(body.label_id, {})["applied"] = cite
        case ev.LabelVoided():
            built.labels.setdefault(body.label_id, {})["voided"] = cite
        case ev.ApheresisCollected():
            built.collections.append((cite, body.din))
        case ev.CustodyTransferred() | ev.MaterialReceived():
            built.custody.append((cite, body))
        case ev.ManufacturingStarted():
            built.batches[body.batch_id] = _Batch(cite)
        case ev.ManufacturingStepCompleted():
            built.batches[body.batch_id].steps.append(
                doc.Step(
                    step=cite("step"),
                    started_at=cite("started_at"),
                    ended_at=cite("ended_at"),
                    material_lots=cite.each("material_lots"),
                    alarms=cite.each("alarms"),
                    performed_by=cite("actor"),
                )
            )
        case ev.ManufacturingCompleted():
            built.batches[body.batch_id].completed = cite
        case ev.QcSampleTaken():
            built.batches[body.batch_id].samples.append(cite("sample_id"))
        case ev.QcResultRecorded():
            qc = rows.qc[0]
            built.batches[body.batch_id].qc.append(
                doc.QcResult(
                    sample_id=cite("sample_id"),
                    test=cite("test"),
                    method=cite("method"),
                    result=cite("result"),
                    specification=cite("specification"),
                    passed=cite("passed"),
                    retest=qc.retest,
                    occurred_at=cite("occurred_at"),
                    recorded_by=cite("actor"),
                )
            )
        case ev.RetestAuthorised():
            built.batches[body.batch_id].retests.append(
                doc.Retest(
                    test=cite("test"),
                    deviation_id=cite("deviation_id"),
                    authorised_at=cite("occurred_at"),
                    authorised_by=cite("actor"),
                    reason=cite.opt("reason"),
                )
            )
        case ev.Disposition():
            built.batches[body.batch_id].disposition = doc.Disposition(
                decision=cite("decision"),
                occurred_at=cite("occurred_at"),
                reason=cite.opt("reason"),
                signatures=[],  # filled in once every signature is known
            )
        case ev.ShipmentDispatched():
            built.shipments[body.shipment_id] = _Shipment(cite)
        case ev.TemperatureRecorded() | ev.TemperatureExcursion():
            built.shipments[body.shipment_id].temperatures.append(
                doc.Reading(
                    logger_id=cite("logger_id"),
                    celsius=cite("celsius"),
                    occurred_at=cite("occurred_at"),
                    excursion=isinstance(body, ev.TemperatureExcursion),
                    limit_celsius=cite.opt("limit_celsius"),
                    duration_s=cite.opt("duration_s"),
                )
            )
        case ev.ShipmentReceived():
            built.shipments[body.shipment_id].received = cite
            built.custody.append((cite, body))
        case ev.BedsideIdentityVerified():
            built.bedside.append((cite, rows.records[0].outcome or "MISMATCH"))
        case ev.Infused():
            built.infusions.append(cite)
        case ev.RecordCorrected():
            corrects = event_sequences.get(str(body.corrects_event_id))
            if corrects is None:
                raise ExportError(
                    f"sequence {cite.sequence} corrects event {body.corrects_event_id}, which is not "
                    "among this patient's records"
                )
            built.corrections.append(
                doc.Correction(
                    sequence=cite.sequence,
                    corrects=corrects,
                    field=cite("field"),
                    old_value=cite("old_value"),
                    new_value=cite("new_value"),
                    reason=cite("reason"),
                    by=cite("actor"),
                    occurred_at=cite("occurred_at"),
                )
            )


def _signature(row: SignatureRow, signed: _Cite, names: dict[str, _Cite]) -> doc.Signature:
    """The signature with its manifestation in the signed body; a signer without one (a device,
    a site system) with its name and kind from its registration."""
    registered = names.get(row.principal)
    manifestations = signed.raw.get("manifestations") or []
    shown = next((i for i, m in enumerate(manifestations) if m.get("principal") == row.principal), None)
    if shown is not None:
        cited = [
            signed("manifestations", shown, n) for n in ("principal", "printed_name", "signed_at", "meaning")
        ]
    elif registered is not None:
        cited = [registered("principal_id"), registered("printed_name"), registered("kind")]
    else:
        cited = []
    return doc.Signature(
        sequence=row.sequence,
        position=row.position,
        keyid=row.keyid,
        principal=row.principal,
        kind=str(registered("kind").value) if registered else None,
        printed_name=row.printed_name or (str(registered("printed_name").value) if registered else None),
        signed_at=_utc(row.signed_at) if row.signed_at is not None else None,
        meaning=row.meaning,
        manifested=row.signed_at is not None,
        cited=cited,
    )


def _utc(at: datetime | str) -> str:
    return as_utc(at).isoformat().replace("+00:00", "Z")


def _document(
    built: _Built, verification: doc.Verification, asked: str, exported_at: datetime
) -> doc.Genealogy:
    ids, state = built.ids, built.state
    assert built.enrolment is not None and state is not None
    corrections: dict[int, list[doc.Correction]] = defaultdict(list)
    for correction in built.corrections:
        corrections[correction.corrects].append(correction)
    flags: dict[int, list[str]] = defaultdict(list)
    for flag in built.rows.flags:
        flags[flag.sequence].append(flag.note)
    enrolment = built.enrolment
    batches = [_batch(ids, state, b, built.signatures) for b in built.batches.values()]
    register = _register(built.rows)
    made = {str(o.unit_id.value): o.unit_id for b in batches for o in b.outputs}
    products = [
        _product(ids, unit, made[unit.unit_id])
        for unit in sorted(built.units.values(), key=lambda u: u.unit_id)
        if unit.kind == "product"
    ]
    return doc.Genealogy(
        format=doc.FORMAT,
        exported_at=_utc(exported_at),
        asked=asked,
        id_base=ids.base,
        outcome=_outcome(built, batches, products, register, verification),
        patient=doc.Patient(
            coi=enrolment("coi"),
            uri=ids.patient(),
            order_id=enrolment("order_id"),
            product=enrolment("product"),
            treatment_site=enrolment("treatment_site"),
            enrolled_at=enrolment("occurred_at"),
            enrolled_by=enrolment("actor"),
        ),
        labels=[_label(label) for label in built.labels.values() if "printed" in label],
        collections=[
            doc.Collection(
                din=c("din"),
                din_uri=ids.din(din),
                bag=c("unit_id"),
                bag_uri=ids.unit(str(c("unit_id").value)),
                product_code=c("product_code"),
                collection_facility=c("collection_facility"),
                volume_ml=c("volume_ml"),
                volume_ml_in_force=in_force(c("volume_ml"), "volume_ml", corrections.get(c.sequence, [])),
                started_at=c("started_at"),
                ended_at=c("ended_at"),
                site=c("site"),
                collected_by=c("actor"),
                corrections=corrections.get(c.sequence, []),
            )
            for c, din in built.collections
        ],
        custody=[_custody(c, body, corrections) for c, body in built.custody],
        batches=batches,
        products=products,
        shipments=[_shipment(ids, s) for s in built.shipments.values()],
        bedside=[
            doc.Bedside(
                sequence=c.sequence,
                unit_id=c("unit_id"),
                outcome="MATCH" if outcome == "MATCH" else "MISMATCH",
                occurred_at=c("occurred_at"),
                checked_by=c("actor"),
                witness=c("witness"),
                signatures=built.signatures.get(c.sequence, []),
            )
            for c, outcome in built.bedside
        ],
        infusions=[
            doc.Infusion(
                unit_id=c("unit_id"),
                thaw_started_at=c("thaw_started_at"),
                occurred_at=c("occurred_at"),
                infused_by=c("actor"),
                site=c("site"),
            )
            for c in built.infusions
        ],
        register=register,
        corrections=built.corrections,
        signatures=[s for sequence in sorted(built.signatures) for s in built.signatures[sequence]],
        records=[msgspec.structs.replace(r, flags=flags.get(r.sequence, [])) for r in built.records],
        graph=_graph(ids, built, state),
        verification=verification,
    )


def _label(label: dict[str, _Cite]) -> doc.Label:
    printed, applied, voided = label["printed"], label.get("applied"), label.get("voided")
    return doc.Label(
        label_id=printed("label_id"),
        din=printed("din"),
        printed_at=printed("occurred_at"),
        applied_to=applied("unit_id") if applied else None,
        voided=(voided.opt("reason") or voided("occurred_at")) if voided else None,
    )


def in_force(recorded: doc.Fact, name: str, corrections: list[doc.Correction]) -> doc.Fact:
    """A field's value in force: the new value of its latest correction, else as recorded."""
    latest = [c for c in corrections if c.field.value == name]
    return latest[-1].new_value if latest else recorded


def _custody(c: _Cite, body: ev.Journey, corrections: dict[int, list[doc.Correction]]) -> doc.CustodyStep:
    received = isinstance(body, ev.ShipmentReceived)
    return doc.CustodyStep(
        sequence=c.sequence,
        type=str(body.__struct_config__.tag),
        units=[c("shipment_id")] if received else c.each("unit_ids"),
        from_custodian=c.opt("from_custodian"),
        to_custodian=c.opt("to_custodian") or c("actor"),
        location=c("location"),
        location_in_force=in_force(c("location"), "location", corrections.get(c.sequence, [])),
        condition=c("condition"),
        condition_in_force=in_force(c("condition"), "condition", corrections.get(c.sequence, [])),
        occurred_at=c("occurred_at"),
        site=c("site"),
        corrections=corrections.get(c.sequence, []),
    )


def _batch(ids: Ids, state: TherapyState, b: _Batch, signatures: dict[int, list[doc.Signature]]) -> doc.Batch:
    s, done = b.started, b.completed
    batch_id = str(s("batch_id").value)
    disposition = b.disposition
    if disposition is not None:
        disposition = msgspec.structs.replace(
            disposition, signatures=signatures.get(disposition.decision.sequence, [])
        )
    outputs = (done.raw.get("outputs") or []) if done else []
    return doc.Batch(
        batch_id=s("batch_id"),
        uri=ids.batch(batch_id),
        status=state.batches[batch_id].status,
        site=s("site"),
        shuttle_id=s("shuttle_id"),
        slot=s("slot"),
        cartridge_id=s("cartridge_id"),
        recipe_version=s("recipe_version"),
        inputs=s.each("input_unit_ids"),
        started_at=s("occurred_at"),
        steps=b.steps,
        completed_at=done("occurred_at") if done else None,
        outputs=[
            doc.Output(
                unit_id=done("outputs", i, "unit_id"),
                uri=ids.unit(str(done("outputs", i, "unit_id").value)),
                product_code=done("outputs", i, "product_code"),
                volume_ml=done("outputs", i, "volume_ml"),
            )
            for i in range(len(outputs))
            if done is not None
        ],
        samples=b.samples,
        qc=b.qc,
        retests=b.retests,
        disposition=disposition,
    )


def _product(ids: Ids, unit: UnitRow, made: doc.Fact) -> doc.Product:
    return doc.Product(
        unit_id=made,
        uri=ids.unit(unit.unit_id),
        batch_id=unit.batch_id,
        status=status_of(unit),
        status_sequence=unit.sequence,
        holds=list(unit.holds),
        custodian=unit.custodian,
        site=unit.site,
        shipment_id=unit.shipment_id,
        bedside=unit.bedside,
    )


def status_of(unit: UnitRow) -> doc.UnitStatus:
    """A unit's status as the export says it: the rules' (aggregates/views.py), except that a
    released product whose latest bedside check did not match is blocked (not to be infused)."""
    if unit.bedside == "MISMATCH" and unit.status != "infused":
        return "blocked"
    return cast("doc.UnitStatus", unit.status)


def _shipment(ids: Ids, s: _Shipment) -> doc.Shipment:
    d, r = s.dispatched, s.received
    return doc.Shipment(
        shipment_id=d("shipment_id"),
        uri=ids.shipment(str(d("shipment_id").value)),
        units=d.each("unit_ids"),
        shipper_id=d("shipper_id"),
        data_logger_id=d("data_logger_id"),
        origin_site=d("site"),
        destination_site=d("destination_site"),
        dispatched_at=d("occurred_at"),
        received_at=r("occurred_at") if r else None,
        received_location=r("location") if r else None,
        received_condition=r("condition") if r else None,
        logger_reviewed=r("logger_reviewed") if r else None,
        temperatures=s.temperatures,
    )


def _register(rows: AuditRows) -> list[doc.RegisterEntry]:
    closings = {(c.kind, c.item_id): c for c in rows.closings}
    entries = []
    for row in rows.register:
        closing = closings.get((row.kind, row.item_id))
        entries.append(_entry(row, closing))
    return entries


def _entry(row: RegisterRow, closing: Closing | None) -> doc.RegisterEntry:
    """The entry, closed by `closing` unless it closed at once (corrections, dispositions)."""
    closed_sequence, closed_at, closed_by, outcome = (
        (row.closed_sequence, row.closed_at, row.closed_by, row.outcome)
        if closing is None or row.closed_sequence is not None
        else (closing.sequence, closing.at, closing.by, closing.outcome)
    )
    return doc.RegisterEntry(
        kind=row.kind,
        item_id=row.item_id,
        summary=row.summary,
        opened_sequence=row.opened_sequence,
        opened_at=_utc(row.opened_at),
        opened_by=row.opened_by,
        site=row.site,
        reason=row.reason,
        severity=row.severity,
        batch_id=row.batch_id,
        links=list(row.links),
        closed_sequence=closed_sequence,
        closed_at=_utc(closed_at) if closed_at is not None else None,
        closed_by=closed_by,
        outcome=outcome,
    )


def _graph(ids: Ids, built: _Built, state: TherapyState) -> doc.Graph:
    nodes: dict[str, doc.Node] = {}

    def node(kind: str, identifier: str) -> str:
        uri = ids.node(kind, identifier)
        if uri not in nodes:
            unit = built.units.get(identifier) if kind in ("bag", "product", "sample") else None
            batch = state.batches.get(identifier) if kind == "batch" else None
            status = status_of(unit) if unit else batch.status if batch else None
            nodes[uri] = doc.Node(id=uri, kind=kind, label=identifier, status=status)
        return uri

    edges = [
        doc.Edge(
            source=node(e.parent_kind, e.parent),
            target=node(e.child_kind, e.child),
            relation=e.relation,
            sequence=e.sequence,
        )
        for e in built.rows.edges
    ]
    return doc.Graph(list(nodes.values()), edges)


_STAGES: tuple[tuple[doc.Stage, str], ...] = (
    ("infused", "infused"),
    ("blocked", "INFUSION BLOCKED: the bedside identity check did not match"),
    ("received", "received at the treatment centre"),
    ("shipped", "shipped"),
    ("released", "released by QA"),
    ("rejected", "rejected by QA"),
    ("in QC", "in QC"),
    ("manufacturing", "in manufacturing"),
    ("collected", "collected"),
    ("enrolled", "enrolled"),
)


def _outcome(
    built: _Built,
    batches: list[doc.Batch],
    products: list[doc.Product],
    register: list[doc.RegisterEntry],
    verification: doc.Verification,
) -> doc.Outcome:
    """Unresolved things are alarms (a failed test no retest passed, a rejection, a mismatch, an
    open hold, deviation or excursion, records unverified or left out); resolved ones notes."""
    coi = built.ids.coi
    alarms: list[str] = []
    notes: list[str] = []
    for batch in batches:
        _qc_outcome(batch, alarms, notes)
        if batch.disposition is not None and batch.disposition.decision.value == "rejected":
            decision = batch.disposition.decision
            alarms.append(f"batch {batch.batch_id.value} REJECTED by QA (sequence {decision.sequence})")
    for c, outcome in built.bedside:
        if outcome == "MISMATCH":
            alarms.append(
                f"bedside identity check MISMATCH on {c('unit_id').value} (sequence {c.sequence}): "
                "infusion blocked"
            )
    excursions = {link for entry in register if entry.kind == "excursion" for link in entry.links}
    for entry in register:
        where = f"(sequence {entry.opened_sequence})"
        if entry.kind not in ("hold", "deviation", "excursion", "correction"):
            continue
        if entry.closed_sequence is None:
            alarms.append(f"{entry.kind} {entry.item_id} is OPEN: {entry.summary} {where}")
        elif entry.kind == "correction":
            notes.append(f"corrected {where}: {entry.summary}; reason: {entry.reason}")
        elif entry.kind != "deviation" or entry.item_id not in excursions:  # said with its excursion
            notes.append(
                f"{entry.kind} {entry.item_id} {where}: {entry.summary}; "
                f"{'released' if entry.kind == 'hold' else 'closed'} by {entry.closed_by} "
                f"(sequence {entry.closed_sequence}): {entry.outcome}"
            )
    if verification.status != "verified":
        alarms.append(f"the records are {verification.status.upper()}: {verification.failure}")
    if verification.left_out:
        later = "1 later record" if verification.left_out == 1 else f"{verification.left_out} later records"
        alarms.append(
            f"{later} of {coi} not in this export: the ledger holds "
            f"{'it' if verification.left_out == 1 else 'them'} after the checkpoint at tree size "
            f"{verification.tree_size} (run coi checkpoint --sign, then export again)"
        )
    stage = _stage(built, batches)
    summary = _summary(built, batches, products, stage)
    return doc.Outcome(stage=stage, summary=summary, alarms=alarms, notes=notes)


def _qc_outcome(batch: doc.Batch, alarms: list[str], notes: list[str]) -> None:
    """A failed release test is an alarm unless a retest QA authorised passed after it."""
    latest = {str(q.test.value): q for q in batch.qc}  # in record order: the last counts
    for qc in batch.qc:
        if qc.passed.value is not False:
            continue
        said = (
            f"batch {batch.batch_id.value}: {qc.test.value} FAILED ({qc.result.value!s}; specification "
            f"{qc.specification.value!s}; sequence {qc.passed.sequence})"
        )
        last = latest[str(qc.test.value)]
        if last is qc or last.passed.value is not True:
            alarms.append(said)
        else:
            notes.append(
                f"{said}, then passed on a retest QA authorised ({last.result.value!s}; "
                f"sequence {last.passed.sequence})"
            )


def _stage(built: _Built, batches: list[doc.Batch]) -> doc.Stage:
    shipments = built.shipments.values()
    reached = {
        "infused": bool(built.infusions),
        "blocked": any(outcome == "MISMATCH" for _, outcome in built.bedside),
        "received": any(s.received for s in shipments),
        "shipped": bool(built.shipments),
        "released": any(b.status == "released" for b in batches),
        "rejected": any(b.status == "rejected" for b in batches),
        "in QC": any(b.status == "completed" for b in batches),
        "manufacturing": bool(batches),
        "collected": bool(built.collections),
        "enrolled": True,
    }
    return next(stage for stage, _ in _STAGES if reached[stage])


def _summary(built: _Built, batches: list[doc.Batch], products: list[doc.Product], stage: doc.Stage) -> str:
    coi = built.ids.coi
    said = dict(_STAGES)[stage]
    text = f"COI {coi}: {said}"
    if stage == "infused":
        infusion = built.infusions[-1]
        unit, site, at = (infusion(name).value for name in ("unit_id", "site", "occurred_at"))
        text += f": {unit} at {site} on {at}"
    elif stage == "rejected":
        rejected = next(b for b in batches if b.status == "rejected")
        failed = [str(q.test.value) for q in rejected.qc if q.passed.value is False]
        text += f": batch {rejected.batch_id.value}"
        text += f" after {', '.join(failed)} failed" if failed else ""
        text += "; no product was shipped" if not built.shipments else ""
    elif stage == "blocked":
        blocked = [str(c("unit_id").value) for c, outcome in built.bedside if outcome == "MISMATCH"]
        text += f" for {', '.join(dict.fromkeys(blocked))}"
    held = [p for p in products if p.holds]
    if held:
        text += f"; on hold: {', '.join(str(p.unit_id.value) for p in held)}"
    return text
