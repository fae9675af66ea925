"""The browser harness (tests/browser.py) on a page made here: what the report's tests will
rely on (rendered text, the graph's nodes, printed pages, a screenshot) works in Chromium."""

from __future__ import annotations

from pathlib import Path

from tests.browser import RenderedPage

ROWS = 120  # at A4 and the default margins, three pages or so: enough to paginate

PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Harness check</title>
<style>
  body {{ font: 14px sans-serif; margin: 0 2em; }}
  .node rect {{ fill: #dde8f5; stroke: #245; }}
  .hidden {{ display: none; }}
</style></head>
<body>
<h1>Batch genealogy of B-0001</h1>
<p class="hidden">Text nobody sees</p>
<svg width="480" height="120" role="img" aria-label="genealogy">
  <g class="node"><rect x="10" y="40" width="120" height="40"/><text x="20" y="65">Apheresis</text></g>
  <g class="node"><rect x="180" y="40" width="120" height="40"/><text x="190" y="65">Manufacture</text></g>
  <g class="node"><rect x="350" y="40" width="120" height="40"/><text x="360" y="65">Infusion</text></g>
  <path d="M130 60 H180 M300 60 H350" stroke="#245"/>
</svg>
<table>{"".join(f"<tr><td>Record {n}</td><td>custody transfer</td></tr>" for n in range(1, ROWS + 1))}</table>
<p>End of the genealogy of B-0001.</p>
</body></html>
"""


def test_a_page_is_rendered_counted_printed_and_pictured(tmp_path: Path, browser_page: RenderedPage) -> None:
    html = tmp_path / "report.html"
    html.write_text(PAGE, encoding="utf-8")
    browser_page.open(html)

    text = browser_page.text
    assert text.startswith("Batch genealogy of B-0001\n")
    assert f"Record {ROWS}\tcustody transfer" in text
    assert "Text nobody sees" not in text  # innerText: what is shown, not what is in the source
    assert browser_page.count("svg g.node") == 3
    assert browser_page.errors == [] and browser_page.external_requests == []

    printed = browser_page.pdf("report")
    assert 2 <= printed.pages <= 5, printed.pages
    assert "End of the genealogy of B-0001." in printed.last_page_text
    assert "Batch genealogy" not in printed.last_page_text  # the heading is on page 1 only

    shot = browser_page.screenshot("report")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert shot.parent == printed.path.parent


def test_a_page_that_reaches_out_or_throws_is_caught(tmp_path: Path, browser_page: RenderedPage) -> None:
    """A report must stand alone: a script from the network is refused, and said."""
    html = tmp_path / "leaky.html"
    html.write_text(
        '<!doctype html><script src="https://cdn.example.org/graph.js"></script>'
        "<script>undefinedFunction()</script><p>Leaky</p>",
        encoding="utf-8",
    )
    browser_page.open(html)
    assert browser_page.external_requests == ["https://cdn.example.org/graph.js"]
    assert len(browser_page.errors) == 1 and "undefinedFunction" in browser_page.errors[0]
