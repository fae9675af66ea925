"""`coi export genealogy --format fhir` as a hospital's system takes it: every demo patient's
export parses with fhir.resources as an R5 Bundle and each entry as its own resource type; the
product carries the ISBT 128 product code, the DIN and the COI the signed records hold; its
status says plainly whether it may be used (infused, rejected, infusion blocked, released);
every resource names the signed records it was read from; and a broken resource is refused."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fhir.resources
import msgspec
import pytest
from fhir.resources import get_fhir_model_class
from fhir.resources.bundle import Bundle
from pydantic import ValidationError

from projections.export import as_fhir
from projections.export.document import Genealogy
from tests.exports import ExportDemo, bundle_bodies

BASE = "https://id.hospital.example/coi-ledger"
PROPERTY = f"{BASE}/fhir/CodeSystem/product-property"
SEQUENCE = f"{BASE}/fhir/StructureDefinition/ledger-sequence"


class Export:
    """One patient's FHIR export, with the JSON document and the records it was made from."""

    def __init__(self, demo: ExportDemo, coi: str) -> None:
        out = demo.folder / f"{coi}.fhir.json"
        done = demo.run(
            "export", "genealogy", "--coi", coi, "--format", "fhir", "--out", str(out), "--with-bundle",
            COI_ID_BASE=BASE,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        self.coi = coi
        self.bundle: dict[str, Any] = json.loads(out.read_text())
        self.bodies = bundle_bodies(Path(f"{out}.bundle.zip"))
        self.json = json.loads(
            demo.export("json", "--coi", coi, out=f"{coi}.json", COI_ID_BASE=BASE).read_text()
        )
        self.by_url = {e["fullUrl"]: e["resource"] for e in self.bundle["entry"]}

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.by_url.values() if r["resourceType"] == kind]

    def product_url(self) -> str:
        """The final product's (the one BiologicallyDerivedProduct made from another)."""
        (url,) = [
            u
            for u, r in self.by_url.items()
            if r["resourceType"] == "BiologicallyDerivedProduct" and "parent" in r
        ]
        return url

    def product(self) -> dict[str, Any]:
        return self.by_url[self.product_url()]

    def infusion(self) -> dict[str, Any] | None:
        found = [r for url, r in self.by_url.items() if "/infusion/" in url]
        return found[0] if found else None


def prop(resource: dict[str, Any], name: str) -> list[Any]:
    """The values of the product's property `name` (a concept's code, else the value itself)."""
    values = []
    for p in resource.get("property", []):
        if p["type"]["coding"][0] == {"system": PROPERTY, "code": name}:
            value = next(v for k, v in p.items() if k.startswith("value"))
            values.append(value["coding"][0]["code"] if "coding" in value else value)
    return values


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> ExportDemo:
    return ExportDemo(tmp_path_factory.mktemp("fhir"))


@pytest.fixture(scope="module")
def exports(demo: ExportDemo) -> Iterator[dict[str, Export]]:
    yield {coi: Export(demo, coi) for coi in demo.cois}


def _journey(demo: ExportDemo, exports: dict[str, Export], name: str) -> Export:
    return exports[demo.journey(name)]


def test_the_models_are_r5() -> None:
    assert fhir.resources.__fhir_version__ == "5.0.0"


def test_every_patient_exports_an_r5_bundle_each_entry_valid_as_its_type(exports: dict[str, Export]) -> None:
    for export in exports.values():
        Bundle.model_validate(export.bundle)
        assert export.bundle["type"] == "collection"
        kinds = set()
        for entry in export.bundle["entry"]:
            resource = entry["resource"]
            kinds.add(resource["resourceType"])
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert entry["fullUrl"].startswith(f"{BASE}/"), entry["fullUrl"]
        assert {"Patient", "BiologicallyDerivedProduct", "Procedure", "Observation", "Provenance"} <= kinds


def test_every_reference_resolves_inside_the_bundle(exports: dict[str, Export]) -> None:
    def references(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                yield node["reference"]
            for value in node.values():
                yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    for export in exports.values():
        found = list(references(export.bundle))
        assert len(found) > 20
        assert set(found) <= export.by_url.keys()


def test_every_resource_names_the_signed_records_it_was_read_from(exports: dict[str, Export]) -> None:
    for export in exports.values():
        events = {r["event_id"]: r["sequence"] for r in export.json["records"]}
        for url, resource in export.by_url.items():
            if url.startswith(f"{BASE}/ledger/"):
                continue  # the ledger, whose checkpoint the export rests on: no record of its own
            cited = [x["valueInteger"] for x in resource.get("extension", []) if x["url"] == SEQUENCE]
            assert cited, url
            assert set(cited) <= export.bodies.keys(), url  # records of the bundle the export rests on
            if "meta" in resource:
                source = resource["meta"]["source"]
                assert source.startswith(f"{BASE}/coi/{export.coi}/event/")
                assert events[source.rsplit("/", 1)[1]] == min(c for c in cited if c in events.values())


def test_the_product_carries_the_isbt_128_code_the_din_and_the_coi(exports: dict[str, Export]) -> None:
    for export in exports.values():
        (collection,) = export.json["collections"]
        (batch,) = export.json["batches"]
        (output,) = batch["outputs"]
        product = export.product()
        code = output["product_code"]["value"]
        assert product["productCode"] == {
            "coding": [{"system": as_fhir.ISBT_PRODUCT_DESCRIPTION, "code": code[:5]}],
            "text": code,
        }
        din = collection["din"]["value"]
        assert product["biologicalSourceEvent"] == {"system": as_fhir.ISBT_DIN, "value": din}
        assert {"system": f"{BASE}/coi", "value": export.coi} in product["identifier"]
        assert export.by_url[product["parent"][0]["reference"]]["biologicalSourceEvent"]["value"] == din
        assert product["productCategory"]["code"] == "cells"
        assert prop(product, "batch") == [batch["batch_id"]["value"]]
        assert prop(product, "cartridge") == [batch["cartridge_id"]["value"]]
        assert prop(product, "recipe-version") == [batch["recipe_version"]["value"]]
        site = export.by_url[product["processingFacility"][0]["reference"]]
        assert site["resourceType"] == "Organization" and site["name"] == batch["site"]["value"]


def test_the_patient_is_only_the_coi(exports: dict[str, Export]) -> None:
    for export in exports.values():
        (patient,) = export.of("Patient")
        assert patient["identifier"] == [{"system": f"{BASE}/coi", "value": export.coi}]
        assert set(patient) == {"resourceType", "meta", "extension", "identifier"}


def _status(product: dict[str, Any]) -> str:
    coding = product["productStatus"]
    assert coding["system"] == as_fhir.PRODUCT_STATUS
    return str(coding["code"])


def test_an_infused_product_is_unavailable_and_its_infusion_is_done_with_the_bedside_signatures(
    demo: ExportDemo, exports: dict[str, Export]
) -> None:
    for name in ("corrected", "excursion"):
        export = _journey(demo, exports, name)
        product = export.product()
        assert _status(product) == "unavailable"
        assert prop(product, "ledger-status") == ["infused"] and prop(product, "bedside-check") == ["MATCH"]
        infusion = export.infusion()
        assert infusion is not None and infusion["status"] == "completed"
        (done,) = export.json["infusions"]
        assert infusion["occurrenceDateTime"] == done["occurred_at"]["value"]
        checks = [
            p for p in export.of("Provenance") if p["activity"]["text"] == "bedside_identity_verified: MATCH"
        ]
        (check,) = checks
        meanings = {s["type"][1]["code"]: s for s in check["signature"]}
        assert meanings.keys() == {"verified", "witnessed"}
        (bedside,) = export.json["bedside"]
        signers = {s["meaning"]: s for s in bedside["signatures"]}
        for meaning, signature in meanings.items():
            assert signature["when"] == signers[meaning]["signed_at"]
            assert signature["who"]["display"] == signers[meaning]["printed_name"]


def test_the_rejected_batch_s_product_says_never_to_be_used_with_the_failed_test_and_qa_signature(
    demo: ExportDemo, exports: dict[str, Export]
) -> None:
    export = _journey(demo, exports, "rejected")
    product = export.product()
    assert _status(product) == "unavailable"
    assert prop(product, "ledger-status") == ["rejected"] and prop(product, "qa-disposition") == ["rejected"]
    assert "REJECTED" in product["text"]["div"]
    assert export.infusion() is None  # never shipped, never at a bedside
    failed = [o for o in export.of("Observation") if o["interpretation"][0]["coding"][0]["code"] == "A"]
    assert [o["code"]["text"] for o in failed] == ["sterility"]
    assert failed[0]["focus"] == [{"reference": export.product_url()}]
    assert failed[0]["valueString"] == "growth detected day 5" and failed[0]["referenceRange"][0]["text"]
    (qa,) = [p for p in export.of("Provenance") if p["activity"]["text"] == "disposition: REJECTED"]
    assert {"reference": export.product_url()} in qa["target"]
    (signature,) = qa["signature"]
    assert signature["type"][0]["code"] == "ProofOfapproval" and signature["when"].endswith("Z")
    assert export.by_url[signature["who"]["reference"]]["resourceType"] == "Practitioner"


def test_a_blocked_infusion_is_not_done_with_the_reason_and_the_product_unavailable(
    demo: ExportDemo, exports: dict[str, Export]
) -> None:
    export = _journey(demo, exports, "mismatch")
    product = export.product()
    assert _status(product) == "unavailable"
    assert prop(product, "ledger-status") == ["blocked"] and prop(product, "bedside-check") == ["MISMATCH"]
    infusion = export.infusion()
    assert infusion is not None and infusion["status"] == "not-done"
    assert "MISMATCH" in infusion["statusReason"]["text"]
    (bedside,) = export.json["bedside"]
    assert infusion["occurrenceDateTime"] == bedside["occurred_at"]["value"]


def test_the_collection_volume_is_the_corrected_one_citing_the_correction(
    demo: ExportDemo, exports: dict[str, Export]
) -> None:
    export = _journey(demo, exports, "corrected")
    (collection,) = export.json["collections"]
    (correction,) = collection["corrections"]
    bag = export.by_url[collection["bag_uri"]]
    (volume,) = prop(bag, "volume")
    assert volume["value"] == float(correction["new_value"]["value"]) != collection["volume_ml"]["value"]
    cited = {x["valueInteger"] for x in bag["extension"]}
    assert {correction["sequence"], collection["volume_ml"]["sequence"]} <= cited


def test_a_released_product_nobody_has_infused_is_available_and_a_hold_makes_it_unavailable(
    demo: ExportDemo, exports: dict[str, Export]
) -> None:
    """The demo's released products all reached a bedside; render one from its document as it
    stood before the check, then with a hold in force."""
    export = _journey(demo, exports, "mismatch")
    genealogy = msgspec.json.decode(json.dumps(export.json), type=Genealogy)
    (product,) = genealogy.products
    before = msgspec.structs.replace(product, bedside=None, status="released")
    held = msgspec.structs.replace(before, holds=["H-1"])
    for version, expected in ((before, "available"), (held, "unavailable")):
        rendered = json.loads(
            as_fhir.render(msgspec.structs.replace(genealogy, products=[version], bedside=[]))
        )
        Bundle.model_validate(rendered)
        (made,) = [
            e["resource"]
            for e in rendered["entry"]
            if e["resource"]["resourceType"] == "BiologicallyDerivedProduct" and "parent" in e["resource"]
        ]
        assert _status(made) == expected


def test_a_broken_resource_is_refused(exports: dict[str, Export]) -> None:
    export = next(iter(exports.values()))
    product = dict(export.product())
    bdp = get_fhir_model_class("BiologicallyDerivedProduct")
    bdp.model_validate(product)
    with pytest.raises(ValidationError):
        bdp.model_validate(product | {"productStatus": "available"})  # a Coding, not a string
    with pytest.raises(ValidationError):
        bdp.model_validate(product | {"processing": [{"description": "R4's element, gone in R5"}]})
    infusion = export.infusion()
    assert infusion is not None
    with pytest.raises(ValidationError):
        get_fhir_model_class("Procedure").model_validate({k: v for k, v in infusion.items() if k != "status"})
    # The Bundle checks each entry as its resource type (fhir.resources does not check codes
    # against value sets: the tests above check the codes themselves).
    broken = json.loads(json.dumps(export.bundle))
    for entry in broken["entry"]:
        entry["resource"].pop("status", None)
    with pytest.raises(ValidationError, match="status"):
        Bundle.model_validate(broken)


def test_the_first_entry_says_the_outcome_the_alarms_and_the_checkpoint(
    demo: ExportDemo, exports: dict[str, Export]
) -> None:
    for export in exports.values():
        first = export.bundle["entry"][0]
        about = first["resource"]
        assert about["resourceType"] == "Provenance"
        assert first["fullUrl"].startswith(f"{BASE}/coi/{export.coi}/export/")
        outcome, verification = export.json["outcome"], export.json["verification"]
        shown = re.findall(r"<p>(.*?)</p>", about["text"]["div"])
        assert html.unescape(shown[0]) == outcome["summary"]
        assert [html.unescape(p) for p in shown[1:-1]] == [f"!! {a}" for a in outcome["alarms"]]
        assert shown[-1].startswith("records VERIFIED against the checkpoint at tree size ")
        (source,) = about["entity"]
        origin, size = verification["origin"], verification["tree_size"]
        assert source["what"]["identifier"]["value"] == f"{origin}/{size}"
        assert verification["root_hash"] in source["what"]["display"]
        ledger = export.by_url[about["agent"][0]["who"]["reference"]]
        assert ledger["resourceType"] == "Device" and ledger["displayName"] == origin
        assert {"reference": export.product_url()} in about["target"]
    rejected = _journey(demo, exports, "rejected").bundle["entry"][0]["resource"]["text"]["div"]
    assert "REJECTED by QA" in rejected and "sterility FAILED" in rejected
