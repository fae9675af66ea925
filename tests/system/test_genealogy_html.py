"""`coi export genealogy --format html` as a QA reviewer gets it: each demo journey's report
opened in headless Chromium (tests/browser.py) shows its outcome and alarms, the failed test,
the QA signature's manifestation, a graph with exactly the document's nodes; it prints on A4 to
a bounded number of pages whose last says "End of report"; and text a site system wrote cannot
become markup."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from projections.export import html
from projections.export.document import Fact, Genealogy, Node
from tests.browser import RenderedPage
from tests.exports import JOURNEYS, ExportDemo

SCRIPT = "<script>document.title='owned'</script><b>bold</b>"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportDemo]:
    yield ExportDemo(tmp_path_factory.mktemp("genealogy-html"))


def _document(demo: ExportDemo, coi: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(demo.export("json", "--coi", coi).read_text())
    return loaded


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("journey", sorted(JOURNEYS))
def test_each_journey_reads_as_it_ended_in_a_browser_and_prints(
    demo: ExportDemo, browser_page: RenderedPage, journey: str
) -> None:
    coi = demo.journey(journey)
    document = _document(demo, coi)
    pick = ("--batch", f"B-{coi}") if journey == "rejected" else ("--coi", coi)  # as QA asks for it
    browser_page.open(demo.export("html", *pick))
    assert browser_page.errors == [] and browser_page.external_requests == []
    text = _flat(browser_page.text)

    outcome = document["outcome"]
    assert text.startswith(f"Batch genealogy report: COI {coi}")
    assert f"Asked for: {'batch' if journey == 'rejected' else 'COI'} {pick[1]}" in text
    assert _flat(outcome["summary"]) in text
    for said in outcome["alarms"] + outcome["notes"]:
        assert _flat(said) in text
    alarms = browser_page.page.locator("#alarms").inner_text()
    if outcome["alarms"]:
        assert f"{len(outcome['alarms'])} ALARM" in alarms
    else:
        assert alarms.startswith("No alarms")
    assert "Records verified" in text and f"tree size {document['verification']['tree_size']}" in text

    # the graph: one drawn node per node of the document, with its id, kind, label and status
    nodes = document["graph"]["nodes"]
    assert browser_page.count("svg.graph g.node") == len(nodes)
    drawn = browser_page.page.locator("svg.graph g.node")
    for i, node in enumerate(nodes):
        one = drawn.nth(i)
        assert one.get_attribute("data-id") == node["id"] and one.get_attribute("data-kind") == node["kind"]
        assert one.locator("text.label").text_content() == node["label"]
        assert one.locator(
            "text.status"
        ).text_content().lower() == f"status: {node['status'] or '-'}".replace("_", " ")
    infused = bool(document["infusions"])
    assert browser_page.count("svg.graph g.end[data-kind=infusion]") == int(infused)

    # every QA signature's manifestation: printed name (principal), UTC time, meaning
    for batch in document["batches"]:
        for qa in batch["disposition"]["signatures"]:
            assert (
                f"{qa['printed_name']} ({qa['principal']}), {qa['signed_at']}, meaning: {qa['meaning']}"
                in text
            )
            assert qa["signed_at"].endswith("Z")
        failed = [q for q in batch["qc"] if q["passed"]["value"] is False]
        fail_rows = browser_page.page.locator(f"#batch-{batch['batch_id']['value']} table.qc tr.bad")
        assert fail_rows.count() == len(failed)
        for q, row in zip(failed, fail_rows.all_inner_texts(), strict=True):
            assert row.startswith(str(q["passed"]["sequence"])) and "FAIL" in row
            assert q["test"]["value"] in row and q["result"]["value"] in row

    if journey == "rejected":
        assert "REJECTED" in text and "FAIL" in text and "no product was shipped" in text
        assert browser_page.count("svg.graph g.node[data-status=rejected]") == 2  # the batch and its product
    if journey == "mismatch":
        assert "MISMATCH infusion blocked" in text and "No infusion recorded." in text
    if journey == "excursion":
        assert "EXCURSION limit -150.0 °C for 1200 s" in text
    if journey == "retest":
        assert "RETEST" in text and "No alarms" in text
    for correction in document["corrections"]:
        old, new = correction["old_value"]["value"], correction["new_value"]["value"]
        assert f"{old} seq {correction['sequence']} → {new}" in text or f"{old} → {new}" in text

    printed = browser_page.pdf(journey)
    assert 4 <= printed.pages <= 14, printed.pages
    last = _flat(printed.last_page_text)
    tree_size = document["verification"]["tree_size"]
    assert (
        f"End of report: COI {coi}, {len(document['records'])} records, checkpoint tree size {tree_size}"
        in last
    )
    assert "Batch genealogy report" not in last
    assert browser_page.screenshot(journey).stat().st_size > 10_000


def test_ledger_text_with_markup_is_shown_as_text_not_run(
    demo: ExportDemo, browser_page: RenderedPage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A site system's free text (a product name, an outcome, a node label) reaches the page
    as the characters it is, never as an element."""
    original = msgspec.json.decode(
        demo.export("json", "--coi", demo.journey("rejected")).read_bytes(), type=Genealogy
    )
    node = original.graph.nodes[0]
    hostile = msgspec.structs.replace(
        original,
        patient=msgspec.structs.replace(original.patient, product=Fact(SCRIPT, 1, "/product")),
        outcome=msgspec.structs.replace(original.outcome, alarms=[SCRIPT]),
        graph=msgspec.structs.replace(
            original.graph,
            nodes=[Node(id=node.id, kind=node.kind, label=SCRIPT, status=SCRIPT), *original.graph.nodes[1:]],
        ),
    )
    written = html.render(hostile)
    assert b"<script" not in written and b"<b>bold" not in written
    assert written.count(b"&lt;script&gt;") >= 4

    page = tmp_path_factory.mktemp("hostile") / "hostile.html"
    page.write_bytes(written)
    browser_page.open(page)
    assert browser_page.page.title() != "owned" and browser_page.errors == []
    assert browser_page.count("b:text('bold')") == 0
    assert SCRIPT in browser_page.text
    assert browser_page.page.locator("svg.graph g.node text.label").first.text_content() == SCRIPT


def test_unverified_records_are_said_on_the_first_lines_never_as_success(demo: ExportDemo) -> None:
    original = msgspec.json.decode(
        demo.export("json", "--coi", demo.journey("corrected")).read_bytes(), type=Genealogy
    )
    failure = "checkpoint.note: no trusted key for the log"
    unverified = msgspec.structs.replace(
        original,
        verification=msgspec.structs.replace(original.verification, status="not verified", failure=failure),
    )
    written = html.render(unverified).decode()
    header = written[written.index("<header>") : written.index("</header>")]
    assert f"RECORDS NOT VERIFIED: {failure}" in header and 'class="verify bad"' in header
    assert "Records verified" not in written
    assert "Records verified" in html.render(original).decode()
