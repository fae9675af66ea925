"""`--format epcis`: the genealogy as a GS1 EPCIS 2.0 JSON-LD `EPCISDocument`.

What each ledger record becomes (CBV 2.0 business steps and dispositions):

- apheresis collection: ObjectEvent ADD of the bag, `commissioning`, `active`; the DIN, product
  code and volume in its ilmd;
- hand-off between custodians: ObjectEvent OBSERVE, `accepting`, the custodians as
  `possessing_party` source and destination; the bag's receipt at manufacturing: `receiving`;
- manufacturing: TransformationEvent (the bag in, material lots as input classes, the product
  out; `transformationID` the batch), `commissioning`, `unavailable` until QA releases it;
- QC: the sample's ObjectEvent ADD (`sampling`), each result an OBSERVE (`inspecting`,
  `conformant` | `non_conformant`); QA's disposition an OBSERVE of the product (`inspecting`,
  `available` when released, `non_conformant` when rejected) with QA's signature;
- dispatch: AggregationEvent ADD packing the product into the shipper, then ObjectEvent
  `shipping`, `in_transit`, with source and destination sites; temperature readings
  `sensor_reporting` with a sensorElementList (an excursion is an `ALARM_CONDITION`); a hold
  `holding`, `unavailable`, its release `inspecting`, `available`; receipt `receiving`, then
  AggregationEvent DELETE `unpacking`;
- bedside identity check: `inspecting`, `conformant` or `mismatch_instance`; infusion
  `dispensing`, `dispensed`;
- a correction: the corrected record's events again with an errorDeclaration
  (`incorrect_data`) naming corrective events, which restate them with the new value.

Every event's `eventID` is its record's URI under the id base; every event carries its
record's sequence, event id, type and actor, and what the rules flagged on it and the
deviations it opened, as `coi:` extension fields (the namespace is under the id base), so each
traces to the signed record it was read from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from projections.export import document as doc
from projections.export.uris import Ids

CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
PREFIX = "coi"

Event = dict[str, Any]


def namespace(id_base: str) -> str:
    """The extension fields' namespace: under the operator's base, like every identifier."""
    return f"{id_base}/ns/epcis/"


def render(genealogy: doc.Genealogy) -> bytes:
    return msgspec.json.format(msgspec.json.encode(document(genealogy))) + b"\n"


def document(genealogy: doc.Genealogy) -> dict[str, Any]:
    """The EPCISDocument, its events in time order."""
    events = _Events(genealogy)
    events.collections()
    events.custody()
    for batch in genealogy.batches:
        events.batch(batch)
    for shipment in genealogy.shipments:
        events.shipment(shipment)
    events.holds()
    events.bedside()
    events.infusions()
    events.corrections()
    v = genealogy.verification
    return {
        "@context": [CONTEXT, {PREFIX: namespace(genealogy.id_base)}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": genealogy.exported_at,
        "coi:patient": events.ids.patient(),
        "coi:asked": genealogy.asked,
        "coi:verification": {
            "coi:status": v.status,
            "coi:origin": v.origin,
            "coi:tree_size": v.tree_size,
            "coi:root_hash": v.root_hash,
        },
        "epcisBody": {"eventList": events.in_time_order()},
    }


def _key(fact: doc.Fact) -> str:
    """An extension key named after the body field the fact was read from (a correction names
    that field, so the corrective event can restate it)."""
    return f"{PREFIX}:{fact.field.rsplit('/', 1)[-1]}"


def _facts(*facts: doc.Fact | None) -> dict[str, Any]:
    return {_key(f): f.value for f in facts if f is not None}


def _offset(at: str) -> str:
    """eventTimeZoneOffset (+HH:MM) of an RFC 3339 time; the ledger records UTC."""
    delta = datetime.fromisoformat(at).utcoffset()
    minutes = int(delta.total_seconds()) // 60 if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class _Events:
    def __init__(self, genealogy: doc.Genealogy) -> None:
        self.g = genealogy
        self.ids = Ids(genealogy.id_base, str(genealogy.patient.coi.value))
        self.records = {r.sequence: r for r in genealogy.records}
        self.events: list[tuple[datetime, int, Event]] = []
        self.deviations: dict[int, list[str]] = {}  # the record that opened them
        for entry in genealogy.register:
            if entry.kind == "deviation":
                uri = self.ids.local("deviation", entry.item_id)
                self.deviations.setdefault(entry.opened_sequence, []).append(uri)

    def add(
        self, kind: str, sequence: int, *, role: str = "", ext: dict[str, Any] | None = None, **fields: Any
    ) -> Event:
        """An event read from record `sequence` with EPCIS `fields` and extension fields `ext`;
        `role` tells apart two events of one record."""
        record = self.records[sequence]
        event: Event = {
            "type": kind,
            "eventID": self.event_id(record.event_id, role),
            "eventTime": record.occurred_at,
            "eventTimeZoneOffset": _offset(record.occurred_at),
            "recordTime": record.recorded_at,
        }
        event.update({k: v for k, v in fields.items() if v not in (None, [], {})})
        event.update(ext or {})
        event.update(self.traced(record))
        self.events.append((datetime.fromisoformat(record.occurred_at), sequence, event))
        return event

    def traced(self, record: doc.Record) -> dict[str, Any]:
        """The signed record an event was read from, and what the rules flagged on it."""
        traced: dict[str, Any] = {
            "coi:sequence": record.sequence,
            "coi:record_event_id": record.event_id,
            "coi:record_type": record.type,
            "coi:actor": self.ids.principal(record.actor),
        }
        if record.flags:
            traced["coi:flags"] = record.flags
        if record.sequence in self.deviations:
            traced["coi:deviations"] = self.deviations[record.sequence]
        return traced

    def observe(
        self, sequence: int, epcs: list[str], biz_step: str, disposition: str | None, **fields: Any
    ) -> Event:
        """An ObjectEvent OBSERVE of `epcs`, read where record `sequence` was made."""
        return self.add(
            "ObjectEvent",
            sequence,
            action="OBSERVE",
            epcList=epcs,
            bizStep=biz_step,
            disposition=disposition,
            readPoint=self.place(sequence),
            **fields,
        )

    def aggregation(
        self, sequence: int, action: str, biz_step: str, disposition: str, parent: str, children: list[str]
    ) -> None:
        """Packing into (or unpacking from) a shipper: the second event of the record's, its
        business step telling it apart."""
        self.add(
            "AggregationEvent",
            sequence,
            role=biz_step,
            action=action,
            parentID=parent,
            childEPCs=children,
            bizStep=biz_step,
            disposition=disposition,
            readPoint=self.place(sequence),
        )

    def event_id(self, event_id: str, role: str) -> str:
        uri = self.ids.event(event_id)
        return f"{uri}/{role}" if role else uri

    def place(self, sequence: int) -> dict[str, str]:
        return {"id": self.ids.site(self.records[sequence].site)}

    def party(self, field: str, custodian: doc.Fact | None) -> list[dict[str, str]]:
        """A custodian as a source or destination: the party in possession."""
        if custodian is None:
            return []
        return [{"type": "possessing_party", field: self.ids.principal(str(custodian.value))}]

    def lot(self, lot: doc.Fact) -> str:
        return self.ids.shared("lot", str(lot.value))

    def units(self, facts: Iterable[doc.Fact]) -> list[str]:
        return [self.ids.unit(str(f.value)) for f in facts]

    def in_time_order(self) -> list[Event]:
        # sorted() is stable: a record's events keep the order they happen in (pack, then ship)
        return [e for _, _, e in sorted(self.events, key=lambda t: (t[0], t[1]))]

    def collections(self) -> None:
        for c in self.g.collections:
            self.add(
                "ObjectEvent",
                c.din.sequence,
                action="ADD",
                epcList=[c.bag_uri],
                bizStep="commissioning",
                disposition="active",
                readPoint=self.place(c.din.sequence),
                bizLocation=self.place(c.din.sequence),
                ilmd={
                    "coi:din": c.din_uri,
                    **_facts(c.product_code, c.volume_ml, c.collection_facility, c.started_at, c.ended_at),
                },
            )

    def custody(self) -> None:
        for step in self.g.custody:
            if step.type == "shipment_received":
                continue  # the shipment's receipt (shipment())
            received = step.type == "material_received"
            self.observe(
                step.sequence,
                self.units(step.units),
                "receiving" if received else "accepting",
                "in_progress" if received else None,
                bizLocation=self.place(step.sequence) if received else None,
                sourceList=self.party("source", step.from_custodian),
                destinationList=self.party("destination", step.to_custodian),
                ext=_facts(step.location, step.condition),
            )

    def batch(self, b: doc.Batch) -> None:
        outputs = [o.uri for o in b.outputs]
        if b.completed_at is not None:
            lots = dict.fromkeys(self.lot(lot) for s in b.steps for lot in s.material_lots)
            bags = {str(i.value) for i in b.inputs}
            self.add(
                "TransformationEvent",
                b.completed_at.sequence,
                inputEPCList=self.units(b.inputs),
                inputQuantityList=[{"epcClass": lot} for lot in lots],  # lots are classes: no quantity
                outputEPCList=outputs,
                transformationID=b.uri,
                bizStep="commissioning",
                disposition="unavailable",  # quarantined until QA's disposition
                readPoint=self.place(b.completed_at.sequence),
                bizLocation=self.place(b.completed_at.sequence),
                ilmd={
                    "coi:batch": b.uri,
                    "coi:donations": [c.din_uri for c in self.g.collections if c.bag.value in bags],
                    "coi:cartridge": self.ids.shared("cartridge", str(b.cartridge_id.value)),
                    "coi:shuttle": self.ids.shared("shuttle", str(b.shuttle_id.value)),
                    **_facts(b.slot, b.recipe_version),
                    "coi:started_at": b.started_at.value,
                    "coi:outputs": [
                        {"coi:unit": o.uri, **_facts(o.product_code, o.volume_ml)} for o in b.outputs
                    ],
                    "coi:steps": [
                        {
                            "coi:sequence": s.step.sequence,
                            **_facts(s.step, s.started_at, s.ended_at),
                            "coi:material_lots": [
                                self.ids.shared("lot", str(lot.value)) for lot in s.material_lots
                            ],
                            "coi:alarms": [a.value for a in s.alarms],
                        }
                        for s in b.steps
                    ],
                },
            )
        for sample in b.samples:
            self.add(
                "ObjectEvent",
                sample.sequence,
                action="ADD",
                epcList=self.units([sample]),
                bizStep="sampling",
                readPoint=self.place(sample.sequence),
                ilmd={"coi:batch": b.uri, "coi:sampled_from": outputs},
            )
        for q in b.qc:
            self.observe(
                q.test.sequence,
                self.units([q.sample_id]),
                "inspecting",
                "conformant" if q.passed.value is True else "non_conformant",
                ext={
                    "coi:batch": b.uri,
                    **_facts(q.test, q.method, q.result, q.specification, q.passed),
                    "coi:retest": q.retest,
                },
            )
        if b.disposition is not None:
            d = b.disposition
            released = d.decision.value == "released"
            self.observe(
                d.decision.sequence,
                outputs,
                "inspecting",
                "available" if released else "non_conformant",
                bizLocation=self.place(d.decision.sequence),
                ext={
                    "coi:batch": b.uri,
                    **_facts(d.decision, d.reason),
                    "coi:signatures": [self.signature(s) for s in d.signatures],
                },
            )

    def signature(self, s: doc.Signature) -> dict[str, Any]:
        return {
            "coi:principal": self.ids.principal(s.principal),
            "coi:printed_name": s.printed_name,
            "coi:signed_at": s.signed_at,
            "coi:meaning": s.meaning,
        }

    def shipment(self, s: doc.Shipment) -> None:
        shipper = self.ids.shared("shipper", str(s.shipper_id.value))
        units = self.units(s.units)
        sent = s.shipment_id.sequence
        route: dict[str, Any] = {
            "sourceList": [{"type": "location", "source": self.ids.site(str(s.origin_site.value))}],
            "destinationList": [
                {"type": "location", "destination": self.ids.site(str(s.destination_site.value))}
            ],
            "bizTransactionList": [{"type": "desadv", "bizTransaction": s.uri}],
        }
        self.aggregation(sent, "ADD", "packing", "container_closed", shipper, units)
        self.observe(
            sent,
            [shipper, *units],
            "shipping",
            "in_transit",
            **route,
            ext={"coi:data_logger": self.ids.shared("logger", str(s.data_logger_id.value))},
        )
        for r in s.temperatures:
            report: dict[str, Any] = {"type": "Temperature", "value": r.celsius.value, "uom": "CEL"}
            if r.excursion:
                report["exception"] = "ALARM_CONDITION"
                report.update(_facts(r.limit_celsius, r.duration_s))
            self.observe(
                r.celsius.sequence,
                [shipper, *units],
                "sensor_reporting",
                "in_transit",
                sensorElementList=[
                    {
                        "sensorMetadata": {
                            "time": r.occurred_at.value,
                            "deviceID": self.ids.shared("logger", str(r.logger_id.value)),
                        },
                        "sensorReport": [report],
                    }
                ],
            )
        if s.received_at is not None:
            got = s.received_at.sequence
            self.observe(
                got,
                [shipper, *units],
                "receiving",
                "in_progress",
                bizLocation=self.place(got),
                **route,
                ext=_facts(s.received_location, s.received_condition, s.logger_reviewed),
            )
            self.aggregation(got, "DELETE", "unpacking", "container_open", shipper, units)

    def holds(self) -> None:
        units = {str(p.unit_id.value) for p in self.g.products}
        for h in self.g.register:
            held = [self.ids.unit(u) for u in h.links if u in units]
            if h.kind != "hold" or not held:
                continue
            about: dict[str, Any] = {"coi:hold": self.ids.local("hold", h.item_id), "coi:summary": h.summary}
            self.observe(
                h.opened_sequence,
                held,
                "holding",
                "unavailable",
                role="hold",
                ext=about,
            )
            if h.closed_sequence is not None:
                self.observe(
                    h.closed_sequence,
                    held,
                    "inspecting",
                    "available",
                    ext={**about, "coi:outcome": h.outcome},
                )

    def bedside(self) -> None:
        for b in self.g.bedside:
            self.observe(
                b.sequence,
                self.units([b.unit_id]),
                "inspecting",
                "conformant" if b.outcome == "MATCH" else "mismatch_instance",
                bizLocation=self.place(b.sequence),
                ext={
                    "coi:outcome": b.outcome,
                    "coi:patient": self.ids.patient(),
                    "coi:witness": self.ids.principal(str(b.witness.value)),
                    "coi:signatures": [self.signature(s) for s in b.signatures],
                },
            )

    def infusions(self) -> None:
        for i in self.g.infusions:
            self.observe(
                i.unit_id.sequence,
                self.units([i.unit_id]),
                "dispensing",
                "dispensed",
                bizLocation=self.place(i.unit_id.sequence),
                ext={"coi:patient": self.ids.patient(), **_facts(i.thaw_started_at)},
            )

    def corrections(self) -> None:
        """EPCIS 2.0's error declaration: each event of the corrected record again, identical but
        for an errorDeclaration naming its corrective event, which restates it with the new value."""
        for c in self.g.corrections:
            record = self.records[c.sequence]
            wrong = [e for _, seq, e in self.events if seq == c.corrects and "errorDeclaration" not in e]
            for original in wrong:
                role = original["eventID"].removeprefix(self.event_id(self.records[c.corrects].event_id, ""))
                corrective_id = self.ids.event(record.event_id) + role
                declared = copy.deepcopy(original)
                declared["errorDeclaration"] = {
                    "declarationTime": c.occurred_at.value,
                    "reason": "incorrect_data",
                    "correctiveEventIDs": [corrective_id],
                    "coi:sequence": c.sequence,
                    **_facts(c.reason),
                }
                corrective = _restated(
                    copy.deepcopy(original), f"{PREFIX}:{c.field.value}", c.new_value.value
                )
                corrective.update(
                    {
                        "eventID": corrective_id,
                        "recordTime": record.recorded_at,
                        **self.traced(record),
                        "coi:corrects": c.corrects,
                        **_facts(c.field, c.old_value, c.new_value, c.reason),
                    }
                )
                at = datetime.fromisoformat(original["eventTime"])
                self.events += [(at, c.corrects, declared), (at, c.sequence, corrective)]


def _restated(event: Any, key: str, value: doc.Value) -> Any:
    """`event` with every `key` set to `value`, as the type it had (a correction states text)."""
    if isinstance(event, list):
        return [_restated(v, key, value) for v in event]
    if not isinstance(event, dict):
        return event
    out: dict[str, Any] = {}
    for k, v in event.items():
        if k == key and isinstance(v, int | float) and not isinstance(v, bool) and isinstance(value, str):
            try:
                out[k] = type(v)(value)
            except ValueError:
                out[k] = value
        elif k == key:
            out[k] = value
        else:
            out[k] = _restated(v, key, value)
    return out
