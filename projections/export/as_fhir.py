"""`--format fhir`: the genealogy as a FHIR R5 Bundle for the hospital's systems.

A `collection` Bundle, not a `document`: the hospital's systems take each resource in on its
own (the product into the blood/cell bank, the procedures into the chart), and a document would
need a Composition with an author and an attester that nobody signed; what is attested is the
signed ledger records, which every resource names.

- Each final product is a BiologicallyDerivedProduct: the ISBT 128 Product Description Code as
  productCode (the full product code as its text), the DIN as biologicalSourceEvent, the COI
  and the unit id as identifiers, productStatus `available` only when QA released it and nothing
  stands in the way (no hold, no failed bedside check, not infused), and the ledger's own status,
  the QA decision, batch, recipe, cartridge, Cell Shuttle and volume as `property`. Its parent
  is the apheresis bag, a BiologicallyDerivedProduct of its own.
- The patient is a Patient holding only the COI: the ledger holds no name, and neither does this.
- Manufacturing and infusion are Procedures (a blocked infusion is `not-done`, with the reason),
  QC results Observations on the product, QA's disposition and the bedside check Provenances
  carrying each signature's signer, UTC time and meaning.
- The first entry is a Provenance of the export itself: the journey's outcome in plain words,
  what a reader must not miss, and the checkpoint the records were proved in.
- Every fullUrl is the thing's URI under COI_ID_BASE (uris.py), and references are those URIs.
  Every resource names the records it was read from: meta.source is the first record's URI,
  and one `ledger-sequence` extension per record gives its sequence.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import msgspec

from projections.export import document as doc
from projections.export.uris import Ids

# The ISBT 128 URIs FHIR R5's BiologicallyDerivedProduct examples use.
ISBT_DIN = "https://www.isbt128.org/uri/DonationIdentificationNumber"
ISBT_PRODUCT_DESCRIPTION = "https://www.isbt128.org/uri/ProductDescriptionCode"
# R5 value sets (hl7.org/fhir/R5: biologicallyderived-product-status, product-category).
PRODUCT_STATUS = "http://hl7.org/fhir/biologicallyderived-product-status"
PRODUCT_CATEGORY = "http://hl7.org/fhir/product-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
ASTM = "urn:iso-astm:E1762-95:2013"
ETSI = "http://uri.etsi.org/01903/v1.2.2"
UCUM = "http://unitsofmeasure.org"

# A signature's meaning (ledger/wire/events.py Meaning) as R5's signature-type and
# provenance-participant-type codes; the ledger's own word is kept beside them.
_SIGNATURE_TYPE = {
    "performed": (ASTM, "1.2.840.10065.1.12.1.1", "Author's Signature"),
    "reviewed": (ASTM, "1.2.840.10065.1.12.1.13", "Review Signature"),
    "verified": (ASTM, "1.2.840.10065.1.12.1.5", "Verification Signature"),
    "witnessed": (ASTM, "1.2.840.10065.1.12.1.10", "Identity Witness Signature"),
    "approved": (ETSI, "ProofOfapproval", "Proof of approval"),
    "released": (ETSI, "ProofOfapproval", "Proof of approval"),
    # QA approves the content it signs, here the decision to reject; "rejected" stays beside it
    "rejected": (ETSI, "ProofOfapproval", "Proof of approval"),
}
_PARTICIPANT = {
    "performed": "performer",
    "reviewed": "verifier",
    "verified": "verifier",
    "witnessed": "attester",
    "approved": "attester",
    "released": "attester",
    "rejected": "attester",
}


class _Resource:
    """A resource being written, remembering the records its values came from."""

    def __init__(self, kind: str, url: str, ids: Ids) -> None:
        self.kind, self.url, self.ids = kind, url, ids
        self.body: dict[str, Any] = {}
        self.sequences: set[int] = set()

    def v(self, fact: doc.Fact) -> Any:
        """The fact's value, its record noted."""
        self.sequences.add(fact.sequence)
        return fact.value

    def s(self, fact: doc.Fact) -> str:
        return str(self.v(fact))

    def cites(self, *sequences: int) -> None:
        self.sequences.update(sequences)

    def entry(self, events: dict[int, str]) -> dict[str, Any]:
        base = self.ids.base
        ordered = sorted(self.sequences)
        resource: dict[str, Any] = {"resourceType": self.kind}
        journey = [events[n] for n in ordered if n in events]  # not the registry's records
        if journey:
            resource["meta"] = {"source": self.ids.event(journey[0])}
        if ordered:
            resource["extension"] = [
                {"url": f"{base}/fhir/StructureDefinition/ledger-sequence", "valueInteger": n}
                for n in ordered
            ]
        return {"fullUrl": self.url, "resource": resource | self.body}


def _ref(url: str, display: str | None = None) -> dict[str, str]:
    return {"reference": url} | ({"display": display} if display else {})


def _code(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code} | ({"display": display} if display else {})


def _narrative(*paragraphs: str) -> dict[str, str]:
    shown = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{shown}</div>'}


class _Writer:
    def __init__(self, genealogy: doc.Genealogy) -> None:
        self.g = genealogy
        self.ids = Ids(genealogy.id_base, str(genealogy.patient.coi.value))
        self.events = {r.sequence: r.event_id for r in genealogy.records}
        self.resources: dict[str, _Resource] = {}
        # principal -> a signature of theirs: kind, printed name and where those were read
        self.signers = {s.principal: s for s in genealogy.signatures}
        self.patient_url = self.patient()

    def new(self, kind: str, url: str) -> _Resource:
        made = self.resources[url] = _Resource(kind, url, self.ids)
        return made

    def system(self, kind: str) -> str:
        """The identifier system of this patient's `kind` (a unit, a batch): with the value, its URI."""
        return self.ids.local(kind, "").rstrip("/")

    def coi_identifier(self) -> dict[str, str]:
        return {"system": f"{self.ids.base}/coi", "value": str(self.g.patient.coi.value)}

    def code(self, name: str, display: str) -> dict[str, Any]:
        """A concept of the ledger's own (a product property, a signature meaning)."""
        return {"coding": [_code(f"{self.ids.base}/fhir/CodeSystem/{name}", display)], "text": display}

    # who ----------------------------------------------------------------------------------------

    def patient(self) -> str:
        p = self.g.patient
        r = self.new("Patient", self.ids.patient())
        r.body["identifier"] = [self.coi_identifier()]
        r.v(p.coi)
        return r.url

    def site(self, site: doc.Fact | str) -> str:
        name = str(site.value) if isinstance(site, doc.Fact) else site
        url = self.ids.site(name)
        if url not in self.resources:
            r = self.new("Organization", url)
            r.body |= {"identifier": [{"system": f"{self.ids.base}/site", "value": name}], "name": name}
        if isinstance(site, doc.Fact):
            self.resources[url].v(site)
        return url

    def principal(self, principal: doc.Fact | str) -> str:
        """A Practitioner for a person, a Device for a device or site system (as registered)."""
        name = str(principal.value) if isinstance(principal, doc.Fact) else principal
        url = self.ids.principal(name)
        if url not in self.resources:
            signed = self.signers.get(name)
            person = signed is None or signed.kind in (None, "person")
            r = self.new("Practitioner" if person else "Device", url)
            identifier = [{"system": f"{self.ids.base}/principal", "value": name}]
            shown = signed.printed_name if signed else None
            if person:
                r.body |= {"identifier": identifier} | ({"name": [{"text": shown}]} if shown else {})
            else:
                r.body |= {"identifier": identifier, "displayName": shown or name}
            if signed is not None:
                r.cites(*(c.sequence for c in signed.cited))
        return url

    # what ---------------------------------------------------------------------------------------

    def bag(self, c: doc.Collection) -> str:
        r = self.new("BiologicallyDerivedProduct", c.bag_uri)
        graph = {n.id: n for n in self.g.graph.nodes}
        r.body |= {
            "productCategory": _code(PRODUCT_CATEGORY, "cells"),
            "productCode": self.product_code(r, c.product_code),
            "identifier": [{"system": self.system("unit"), "value": r.s(c.bag)}, self.coi_identifier()],
            "biologicalSourceEvent": {"system": ISBT_DIN, "value": r.s(c.din)},
            "collection": self.collection(r, c),
            "property": [self.volume(r, c.volume_ml, c.corrections)],
        }
        node = graph.get(c.bag_uri)
        if node is not None and node.status:
            r.body["property"].append(self.prop("ledger-status", valueString=node.status))
        return r.url

    def product_code(self, r: _Resource, code: doc.Fact) -> dict[str, Any]:
        """ISBT 128 Product Code (data structure 003): its first five characters are the Product
        Description Code, the code system FHIR binds productCode to; the whole code is the text."""
        full = r.s(code)
        return {"coding": [_code(ISBT_PRODUCT_DESCRIPTION, full[:5])], "text": full}

    def collection(self, r: _Resource, c: doc.Collection) -> dict[str, Any]:
        return {
            "collector": _ref(self.principal(c.collected_by)),
            "source": _ref(self.patient_url),
            "collectedPeriod": {"start": r.s(c.started_at), "end": r.s(c.ended_at)},
        }

    def volume(self, r: _Resource, volume: doc.Fact, corrections: list[doc.Correction]) -> dict[str, Any]:
        """The volume in mL, as corrected where a correction restated it (the last one holds)."""
        value = float(r.v(volume))
        for correction in corrections:
            if correction.field.value == "volume_ml":
                value = float(r.s(correction.new_value))
                r.cites(correction.sequence)
        return self.prop("volume", valueQuantity={"value": value, "unit": "mL", "system": UCUM, "code": "mL"})

    def prop(self, name: str, **value: Any) -> dict[str, Any]:
        return {"type": self.code("product-property", name)} | value

    def product(self, p: doc.Product, batch: doc.Batch, output: doc.Output, bags: dict[str, str]) -> None:
        r = self.new("BiologicallyDerivedProduct", p.uri)
        r.cites(p.status_sequence)
        sources = [c for c in self.g.collections if c.bag.value in {i.value for i in batch.inputs}]
        available, why = _availability(p, batch)
        disposition = batch.disposition
        props = [
            self.prop("ledger-status", valueCodeableConcept=self.code("unit-status", p.status)),
            self.prop("batch", valueString=r.s(batch.batch_id)),
            self.prop("recipe-version", valueString=r.s(batch.recipe_version)),
            self.prop("cartridge", valueString=r.s(batch.cartridge_id)),
            self.prop("cell-shuttle", valueString=r.s(batch.shuttle_id)),
            self.prop("cell-shuttle-slot", valueInteger=r.v(batch.slot)),
            self.volume(r, output.volume_ml, []),
        ]
        if disposition is not None:
            decision = r.s(disposition.decision)
            props.append(
                self.prop("qa-disposition", valueCodeableConcept=self.code("qa-disposition", decision))
            )
        props += [self.prop("hold", valueString=hold) for hold in p.holds]
        if p.bedside is not None:
            props.append(self.prop("bedside-check", valueCodeableConcept=self.code("bedside", p.bedside)))
        r.body |= {
            "text": _narrative(f"{output.unit_id.value}: {p.status}; {why}"),
            "productCategory": _code(PRODUCT_CATEGORY, "cells"),
            "productCode": self.product_code(r, output.product_code),
            "parent": [_ref(bags[str(r.v(i))]) for i in batch.inputs if str(i.value) in bags],
            "identifier": [
                {"system": self.system("unit"), "value": r.s(output.unit_id)},
                self.coi_identifier(),
            ],
            "processingFacility": [_ref(self.site(batch.site))],
            "productStatus": _code(PRODUCT_STATUS, "available" if available else "unavailable"),
            "property": props,
        }
        if sources:
            # The donation the cells came from; a pooled product would carry its own pooled DIN.
            r.body["biologicalSourceEvent"] = {"system": ISBT_DIN, "value": r.s(sources[0].din)}
            r.body["collection"] = self.collection(r, sources[0])

    # events -------------------------------------------------------------------------------------

    def manufacturing(self, batch: doc.Batch, bags: dict[str, str]) -> None:
        r = self.new("Procedure", batch.uri)
        period = {"start": r.s(batch.started_at)}
        if batch.completed_at is not None:
            period["end"] = r.s(batch.completed_at)
        performers = [{"actor": _ref(self.site(batch.site))}]
        for by in dict.fromkeys(str(s.performed_by.value) for s in batch.steps):
            performers.append({"actor": _ref(self.principal(by))})
        used = [{"reference": _ref(bags[str(r.v(i))])} for i in batch.inputs if str(i.value) in bags]
        for step in batch.steps:
            used += [{"concept": {"text": f"{r.s(lot)} ({step.step.value})"}} for lot in step.material_lots]
        r.body |= {
            "identifier": [{"system": self.system("batch"), "value": r.s(batch.batch_id)}],
            "status": "completed" if batch.completed_at is not None else "in-progress",
            "code": {"text": f"CAR-T manufacturing, recipe {r.s(batch.recipe_version)}"},
            "subject": _ref(self.patient_url),
            "occurrencePeriod": period,
            "performer": performers,
            "used": used,
            "note": [
                {"text": f"{r.s(s.step)}: {r.s(s.started_at)} to {r.s(s.ended_at)} by {r.s(s.performed_by)}"}
                for s in batch.steps
            ],
        }
        for qc in batch.qc:
            self.qc(batch, qc)
        if batch.disposition is not None:
            targets = [o.uri for o in batch.outputs] + [r.url]
            self.provenance(batch.disposition.decision.sequence, targets, batch.disposition.signatures)

    def qc(self, batch: doc.Batch, qc: doc.QcResult) -> None:
        event = self.events[qc.passed.sequence]
        r = self.new("Observation", self.ids.local("qc", event))
        passed = r.v(qc.passed) is True
        note = [{"text": "recorded under a retest QA authorised"}] if qc.retest else []
        r.body |= {
            "status": "final",
            "code": {"text": r.s(qc.test)},
            "method": {"text": r.s(qc.method)},
            "subject": _ref(self.patient_url),
            "focus": [_ref(o.uri) for o in batch.outputs],
            "effectiveDateTime": r.s(qc.occurred_at),
            "performer": [_ref(self.principal(qc.recorded_by))],
            "valueString": r.s(qc.result),
            "referenceRange": [{"text": r.s(qc.specification)}],
            "interpretation": [
                {
                    "coding": [
                        _code(INTERPRETATION, "N", "Normal")
                        if passed
                        else _code(INTERPRETATION, "A", "Abnormal")
                    ],
                    "text": "meets specification" if passed else "FAILED: outside specification",
                }
            ],
        } | ({"note": note} if note else {})
        r.cites(qc.sample_id.sequence)

    def infusion(self, unit: str, uri: str) -> None:
        """The infusion of `unit`: done, or not done because the bedside check did not match."""
        done = next((i for i in self.g.infusions if i.unit_id.value == unit), None)
        checks = [b for b in self.g.bedside if b.unit_id.value == unit]
        if done is None and not checks:
            return
        r = self.new("Procedure", self.ids.local("infusion", unit))
        r.body |= {
            "code": {"text": "CAR-T infusion"},
            "subject": _ref(self.patient_url),
            "used": [{"reference": _ref(uri)}],
        }
        if done is not None:
            r.body |= {
                "status": "completed",
                "occurrenceDateTime": r.s(done.occurred_at),
                "performer": [{"actor": _ref(self.principal(done.infused_by))}],
            }
            sequence = done.unit_id.sequence
            r.cites(sequence)
            self.provenance(sequence, [uri, r.url], [s for s in self.g.signatures if s.sequence == sequence])
        else:
            last = checks[-1]
            r.body |= {
                "status": "not-done" if last.outcome == "MISMATCH" else "preparation",
                "occurrenceDateTime": r.s(last.occurred_at),
                "performer": [{"actor": _ref(self.principal(last.checked_by))}],
            }
            if last.outcome == "MISMATCH":
                r.body["statusReason"] = {
                    "text": f"bedside identity check MISMATCH (sequence {last.sequence}): infusion blocked"
                }
        for check in checks:
            self.provenance(check.sequence, [uri, r.url], check.signatures)

    def provenance(self, sequence: int, targets: list[str], signatures: list[doc.Signature]) -> None:
        """The signed record `sequence` as a Provenance: who signed it, when, meaning what."""
        record = next(x for x in self.g.records if x.sequence == sequence)
        r = self.new("Provenance", self.ids.event(record.event_id))
        r.cites(sequence)
        agents, signed = [], []
        for s in signatures:
            who = _ref(self.principal(s.principal), s.printed_name)
            meaning = s.meaning or "performed"
            agents.append(
                {"type": {"coding": [_code(PARTICIPANT, _PARTICIPANT[meaning])], "text": meaning}, "who": who}
            )
            system, code, display = _SIGNATURE_TYPE[meaning]
            types = [_code(system, code, display), self.code("signature-meaning", meaning)["coding"][0]]
            signed.append({"type": types, "who": who} | ({"when": s.signed_at} if s.signed_at else {}))
            r.cites(*(c.sequence for c in s.cited))
        r.body |= {
            "target": [_ref(t) for t in targets],
            "occurredDateTime": record.occurred_at,
            "recorded": record.recorded_at,
            "activity": {"text": record.type + (f": {record.outcome}" if record.outcome else "")},
            "patient": _ref(self.patient_url),
            "agent": agents,
            "signature": signed,
        }

    def bundle(self) -> dict[str, Any]:
        bags = {str(c.bag.value): self.bag(c) for c in self.g.collections}
        outputs = {str(o.unit_id.value): (b, o) for b in self.g.batches for o in b.outputs}
        for p in self.g.products:
            batch, output = outputs[str(p.unit_id.value)]
            self.product(p, batch, output, bags)
        for batch in self.g.batches:
            self.manufacturing(batch, bags)
        for p in self.g.products:
            self.infusion(str(p.unit_id.value), p.uri)
        about = self.about()
        return {
            "resourceType": "Bundle",
            "identifier": {
                "system": f"{self.ids.base}/export",
                "value": f"{self.ids.coi}/{self.g.exported_at}",
            },
            "type": "collection",
            "timestamp": self.g.exported_at,
            "entry": [about.entry(self.events)]
            + [r.entry(self.events) for r in _ordered(self.resources.values())],
        }

    def about(self) -> _Resource:
        """The export itself, first: the journey's outcome in plain words, what a reader must not
        miss, and the checkpoint every record was proved in (the ledger assembled it from them)."""
        v, outcome = self.g.verification, self.g.outcome
        r = _Resource("Provenance", self.ids.local("export", self.g.exported_at), self.ids)
        r.cites(*self.events)
        ledger = self.new("Device", self.ids.shared("ledger", v.origin))
        ledger.body |= {
            "identifier": [{"system": f"{self.ids.base}/ledger", "value": v.origin}],
            "displayName": v.origin,
        }
        checkpoint = f"checkpoint at tree size {v.tree_size} of {v.origin}, root hash {v.root_hash}"
        r.body |= {
            "text": _narrative(
                outcome.summary,
                *(f"!! {alarm}" for alarm in outcome.alarms),
                f"records {v.status.upper()} against the {checkpoint} (signed by {v.signed_by})",
            ),
            "target": [_ref(self.patient_url)] + [_ref(p.uri) for p in self.g.products],
            "recorded": self.g.exported_at,
            "activity": {"text": f"genealogy export ({self.g.asked}): {outcome.stage}"},
            "patient": _ref(self.patient_url),
            "agent": [{"type": {"coding": [_code(PARTICIPANT, "assembler")]}, "who": _ref(ledger.url)}],
            "entity": [
                {
                    "role": "source",
                    "what": {
                        "identifier": {
                            "system": f"{self.ids.base}/checkpoint",
                            "value": f"{v.origin}/{v.tree_size}",
                        },
                        "display": checkpoint,
                    },
                }
            ],
        }
        return r


# The order a reader meets them: the patient, the products, then what happened to them.
_ORDER = ("Patient", "BiologicallyDerivedProduct", "Procedure", "Observation", "Provenance")


def _ordered(resources: Iterable[_Resource]) -> list[_Resource]:
    rank = {kind: i for i, kind in enumerate(_ORDER)}
    return sorted(resources, key=lambda r: rank.get(r.kind, len(_ORDER)))


def _availability(p: doc.Product, batch: doc.Batch) -> tuple[bool, str]:
    """Whether the product is available for use (R5: 'currently available for use'), and why."""
    if p.status == "infused":
        return False, "infused: not available"
    if p.status == "rejected" or batch.status == "rejected":
        return False, "REJECTED by QA: never to be infused"
    if p.status != "released":
        return False, f"not released by QA ({p.status})"
    if p.holds:
        return False, f"ON HOLD ({', '.join(p.holds)}): not to be infused until released"
    if p.bedside == "MISMATCH":
        return False, "bedside identity check MISMATCH: infusion blocked"
    return True, "released by QA: available for use"


def render(genealogy: doc.Genealogy) -> bytes:
    return msgspec.json.format(msgspec.json.encode(_Writer(genealogy).bundle())) + b"\n"
