"""`coi export genealogy --format epcis` on the demo ledger: every patient's EPCISDocument is
valid against GS1's EPCIS 2.0 JSON Schema with format checking on, and says what happened: the
bag goes into the TransformationEvent and the product comes out, the product is packed into the
shipper, shipped and received between the right sites, a rejected batch never ships, an
excursion shows in the sensor report, a correction is an error declaration with its corrective
event, and every event traces to the signed record it was read from.

GS1's schema is not copied into the project: it is read from `shared/standards/epcis/` beside
the checkout, or the folder in COI_EPCIS_SCHEMA_DIR."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.exports import ExportDemo

SCHEMA = "EPCIS-JSON-Schema.json"
SHARED = Path(__file__).resolve().parents[2].parent / "shared/standards/epcis"

Doc = dict[str, Any]


def _no_remote(uri: str) -> Resource[Any]:
    raise LookupError(f"the EPCIS schema must not fetch {uri}")


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    folder = Path(os.environ.get("COI_EPCIS_SCHEMA_DIR") or SHARED)
    path = folder / SCHEMA
    if not path.is_file():
        reason = f"GS1's EPCIS 2.0 JSON Schema is not at {path}: set COI_EPCIS_SCHEMA_DIR to its folder"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    schema = json.loads(path.read_text())
    checker = Draft7Validator.FORMAT_CHECKER
    # Without these jsonschema skips the formats silently, and with them most of the schema.
    missing = {"uri", "date-time"} - set(checker.checkers)
    assert not missing, (
        f"jsonschema cannot check {missing}: install the test extras (jsonschema[format-nongpl])"
    )
    registry: Registry[Any] = Registry(retrieve=_no_remote).with_resource(  # type: ignore[call-arg]
        schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7)
    )
    return Draft7Validator(schema, registry=registry, format_checker=checker)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportDemo]:
    yield ExportDemo(tmp_path_factory.mktemp("epcis"))


def _exports(demo: ExportDemo, coi: str, **env: str) -> tuple[Doc, Doc]:
    """The patient's EPCISDocument and, to check it against, the genealogy document."""
    epcis = json.loads(demo.export("epcis", "--coi", coi, **env).read_text())
    genealogy = json.loads(demo.export("json", "--coi", coi, **env).read_text())
    return epcis, genealogy


def _invalid(validator: Draft7Validator, document: Doc) -> str | None:
    error = best_match(validator.iter_errors(document))
    return None if error is None else f"{list(error.absolute_path)}: {error.message}"


def _events(epcis: Doc, **match: Any) -> list[Doc]:
    """The events with these fields, leaving out error declarations (a corrected event again)."""
    return [
        e
        for e in epcis["epcisBody"]["eventList"]
        if "errorDeclaration" not in e and all(e.get(k) == v for k, v in match.items())
    ]


def _site(genealogy: Doc, fact: Doc) -> str:
    return f"{genealogy['id_base']}/site/{fact['value']}"


def test_every_patient_exports_a_valid_epcis_document_traced_to_its_records(
    validator: Draft7Validator, demo: ExportDemo
) -> None:
    for coi in demo.cois:
        epcis, genealogy = _exports(demo, coi)
        assert _invalid(validator, epcis) is None, coi
        base = genealogy["id_base"]
        assert epcis["@context"][1] == {"coi": f"{base}/ns/epcis/"}
        records = {r["sequence"]: r for r in genealogy["records"]}
        events = epcis["epcisBody"]["eventList"]
        times = [datetime.fromisoformat(e["eventTime"]) for e in events]
        assert times == sorted(times)
        for event in events:
            record = records[event["coi:sequence"]]
            assert event["coi:record_event_id"] == record["event_id"]
            assert event["coi:record_type"] == record["type"]
            assert event["eventID"].startswith(f"{base}/coi/{coi}/event/{record['event_id']}")
            if "errorDeclaration" not in event and "coi:corrects" not in event:
                assert event["eventTime"] == record["occurred_at"]
        # Every event's record is one the export was made from, and most records made an event.
        assert len({e["coi:sequence"] for e in events}) > len(records) // 2


def test_the_bag_is_transformed_into_the_product_packed_shipped_and_received(demo: ExportDemo) -> None:
    for coi in [demo.journey("corrected"), demo.journey("excursion"), demo.journey("mismatch")]:
        epcis, genealogy = _exports(demo, coi)
        (collection,) = genealogy["collections"]
        (added,) = _events(epcis, type="ObjectEvent", action="ADD", bizStep="commissioning", **{
            "coi:sequence": collection["din"]["sequence"]})  # fmt: skip
        assert added["epcList"] == [collection["bag_uri"]]
        assert added["ilmd"]["coi:din"] == collection["din_uri"]

        (batch,) = genealogy["batches"]
        (made,) = _events(epcis, type="TransformationEvent")
        assert made["inputEPCList"] == [collection["bag_uri"]]
        assert made["ilmd"]["coi:donations"] == [collection["din_uri"]]
        assert made["outputEPCList"] == [o["uri"] for o in batch["outputs"]]
        assert made["transformationID"] == batch["uri"]
        assert made["readPoint"]["id"] == _site(genealogy, batch["site"])

        (shipment,) = genealogy["shipments"]
        products = [o["uri"] for o in batch["outputs"]]
        (packed,) = _events(epcis, type="AggregationEvent", action="ADD")
        assert packed["bizStep"] == "packing"
        assert packed["parentID"].endswith(f"/shipper/{shipment['shipper_id']['value']}")
        assert packed["childEPCs"] == products
        (unpacked,) = _events(epcis, type="AggregationEvent", action="DELETE")
        assert (unpacked["parentID"], unpacked["childEPCs"]) == (packed["parentID"], products)

        origin = _site(genealogy, shipment["origin_site"])
        destination = _site(genealogy, shipment["destination_site"])
        assert origin != destination
        for step, at in (("shipping", origin), ("receiving", destination)):
            (moved,) = _events(epcis, bizStep=step, bizTransactionList=[
                {"type": "desadv", "bizTransaction": shipment["uri"]}])  # fmt: skip
            assert moved["epcList"] == [packed["parentID"], *products]
            assert moved["sourceList"] == [{"type": "location", "source": origin}]
            assert moved["destinationList"] == [{"type": "location", "destination": destination}]
            assert moved["readPoint"]["id"] == at
        assert _events(epcis, bizStep="shipping")[0]["disposition"] == "in_transit"


def test_a_rejected_batch_is_non_conformant_and_never_ships(demo: ExportDemo) -> None:
    epcis, genealogy = _exports(demo, demo.journey("rejected"))
    (batch,) = genealogy["batches"]
    products = [o["uri"] for o in batch["outputs"]]
    (decided,) = _events(epcis, **{"coi:record_type": "disposition"})
    assert (decided["epcList"], decided["disposition"]) == (products, "non_conformant")
    assert decided["coi:decision"] == "rejected"
    (qa,) = decided["coi:signatures"]
    assert qa["coi:printed_name"] and qa["coi:meaning"]
    (failed,) = _events(
        epcis, bizStep="inspecting", disposition="non_conformant", **{"coi:test": "sterility"}
    )
    assert failed["coi:passed"] is False and failed["coi:result"] != failed["coi:specification"]
    (deviation,) = [e for e in genealogy["register"] if e["kind"] == "deviation"]
    assert failed["coi:deviations"] == [f"{genealogy['patient']['uri']}/deviation/{deviation['item_id']}"]
    assert failed["coi:flags"] and deviation["item_id"] in failed["coi:flags"][0]
    steps = {e.get("bizStep") for e in epcis["epcisBody"]["eventList"]}
    assert not steps & {"packing", "shipping", "sensor_reporting", "dispensing"}
    assert not _events(epcis, type="AggregationEvent")
    # After QA's rejection nothing more happens to the product.
    naming = [e for e in epcis["epcisBody"]["eventList"] if set(products) & set(e.get("epcList", []))]
    assert naming == [decided]


def test_an_excursion_shows_in_the_sensor_report_and_holds_the_product(demo: ExportDemo) -> None:
    epcis, genealogy = _exports(demo, demo.journey("excursion"))
    (shipment,) = genealogy["shipments"]
    readings = _events(epcis, bizStep="sensor_reporting")
    assert len(readings) == len(shipment["temperatures"])
    reports = [r for e in readings for element in e["sensorElementList"] for r in element["sensorReport"]]
    assert [r["value"] for r in reports] == [t["celsius"]["value"] for t in shipment["temperatures"]]
    (excursion,) = [t for t in shipment["temperatures"] if t["excursion"]]
    (alarm,) = [r for r in reports if r.get("exception") == "ALARM_CONDITION"]
    assert (alarm["type"], alarm["uom"], alarm["value"]) == (
        "Temperature",
        "CEL",
        excursion["celsius"]["value"],
    )
    assert alarm["value"] > alarm["coi:limit_celsius"] == excursion["limit_celsius"]["value"]
    product = genealogy["batches"][0]["outputs"][0]["uri"]
    held, released = _events(epcis, epcList=[product], bizStep="holding") + _events(
        epcis, epcList=[product], disposition="available", **{"coi:record_type": "hold_released"}
    )
    assert held["disposition"] == "unavailable"
    assert held["coi:sequence"] == excursion["celsius"]["sequence"]
    assert held["eventTime"] < released["eventTime"] and held["coi:hold"] == released["coi:hold"]
    assert _events(epcis, bizStep="dispensing", epcList=[product])


def test_a_correction_is_an_error_declaration_with_its_corrective_event(demo: ExportDemo) -> None:
    epcis, genealogy = _exports(demo, demo.journey("corrected"))
    (correction,) = genealogy["corrections"]
    (declared,) = [e for e in epcis["epcisBody"]["eventList"] if "errorDeclaration" in e]
    (original,) = _events(epcis, eventID=declared["eventID"])
    assert original["coi:sequence"] == correction["corrects"]
    assert {k: v for k, v in declared.items() if k != "errorDeclaration"} == original
    error = declared["errorDeclaration"]
    assert error["reason"] == "incorrect_data"
    assert error["declarationTime"] == correction["occurred_at"]["value"]
    assert error["coi:reason"] == correction["reason"]["value"]
    (corrective_id,) = error["correctiveEventIDs"]
    (corrective,) = _events(epcis, eventID=corrective_id)
    assert corrective["coi:sequence"] == correction["sequence"]
    assert corrective["coi:corrects"] == correction["corrects"]
    assert original["ilmd"]["coi:volume_ml"] == float(correction["old_value"]["value"])
    assert corrective["ilmd"]["coi:volume_ml"] == float(correction["new_value"]["value"])
    assert corrective["epcList"] == original["epcList"]


def test_a_bedside_mismatch_is_a_mismatched_instance_and_nothing_is_dispensed(demo: ExportDemo) -> None:
    epcis, genealogy = _exports(demo, demo.journey("mismatch"))
    (check,) = _events(epcis, **{"coi:record_type": "bedside_identity_verified"})
    assert (check["disposition"], check["coi:outcome"]) == ("mismatch_instance", "MISMATCH")
    assert check["coi:patient"] == genealogy["patient"]["uri"]
    assert not _events(epcis, bizStep="dispensing")


def test_ids_and_the_extension_namespace_follow_coi_id_base(demo: ExportDemo) -> None:
    coi = demo.cois[0]
    epcis, _ = _exports(demo, coi, COI_ID_BASE="https://id.example.org/ct/")
    assert epcis["@context"][1] == {"coi": "https://id.example.org/ct/ns/epcis/"}
    for event in epcis["epcisBody"]["eventList"]:
        assert event["eventID"].startswith(f"https://id.example.org/ct/coi/{coi}/event/")
        assert event["readPoint"]["id"].startswith("https://id.example.org/ct/site/")


def test_the_schema_checks_formats_so_a_bad_time_or_key_fails(
    validator: Draft7Validator, demo: ExportDemo
) -> None:
    epcis, _ = _exports(demo, demo.cois[0])
    assert _invalid(validator, epcis) is None
    for path, value in [
        (("eventTime",), "2026-12-02 23:43"),  # not RFC 3339
        (("readPoint", "id"), "US-BDW"),  # not a URI
        (("bizstep",), "shipping"),  # not a field EPCIS knows, nor a URI or CURIE
        (("disposition",), "quarantined"),  # not a CBV disposition
    ]:
        broken = copy.deepcopy(epcis)
        event = broken["epcisBody"]["eventList"][0]
        for step in path[:-1]:
            event = event[step]
        event[path[-1]] = value
        assert _invalid(validator, broken) is not None, path
