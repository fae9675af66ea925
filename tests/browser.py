"""A real browser for the tests of what the ledger renders (issue 13's HTML report): Debian's
Chromium driven by Playwright, which launches it by path (Playwright's own browsers are never
downloaded), and poppler's pdfinfo and pdftotext to read the printed PDF back. Without them a
test is skipped with the reason, except under CI, where that is a failure.

Screenshots and PDFs are kept for a person to look at: in `test-artifacts/` at the repository
root, or `$COI_TEST_ARTIFACTS`, one folder per test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, Route, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("COI_TEST_ARTIFACTS") or ROOT / "test-artifacts")
TOOLS = ("chromium", "pdfinfo", "pdftotext")


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        problem = (
            f"the browser tests need {', '.join(missing)} on PATH"
            " (Debian: apt-get install chromium poppler-utils)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must test in a browser: {problem}")
        pytest.skip(problem)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium, or the test skipped (failed under CI) saying what is missing."""
    _require_tools()
    # Chromium refuses to start its sandbox as root (CI's container runs as root).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=args)
        try:
            yield browser
        finally:
            browser.close()


@dataclass(frozen=True)
class Printed:
    path: Path
    pages: int
    last_page_text: str


class RenderedPage:
    """One tab, for one test: open a local file, read what it shows, keep pictures of it.

    A report must stand alone, so requests leaving the machine are refused and listed in
    `external_requests`; script errors are listed in `errors`."""

    def __init__(self, page: Page, artifacts: Path) -> None:
        self.page = page
        self.artifacts = artifacts
        self.errors: list[str] = []
        self.external_requests: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.route(re.compile(r"^(?!file:|data:|blob:|about:)"), self._refuse)

    def _refuse(self, route: Route, request: Request) -> None:
        self.external_requests.append(request.url)
        route.abort()

    def open(self, html: Path) -> None:
        self.page.goto(html.resolve().as_uri(), wait_until="load")
        # Text measured before its web font arrives would lay out (and paginate) differently.
        self.page.evaluate("document.fonts.ready.then(() => true)")

    @property
    def text(self) -> str:
        """The text as rendered (innerText): hidden elements left out, blocks on lines."""
        return self.page.inner_text("body")

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def _artifact(self, name: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        return self.artifacts / name

    def screenshot(self, name: str) -> Path:
        path = self._artifact(f"{name}.png")
        self.page.screenshot(path=path, full_page=True)
        return path

    def pdf(self, name: str) -> Printed:
        """Printed as a person prints it: A4, backgrounds on, and the page's own @page sizes (a
        landscape page for a wide figure), as Chrome's print dialog honours them; the PDF is kept
        with the screenshots."""
        path = self._artifact(f"{name}.pdf")
        self.page.pdf(path=path, format="A4", print_background=True, prefer_css_page_size=True)
        info = subprocess.run(["pdfinfo", path], capture_output=True, text=True, check=True).stdout
        match = re.search(r"^Pages:\s+(\d+)$", info, re.MULTILINE)
        assert match, f"pdfinfo names no page count for {path}:\n{info}"
        pages = int(match.group(1))
        last = subprocess.run(
            ["pdftotext", "-f", str(pages), "-l", str(pages), path, "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return Printed(path, pages, last)


def artifacts_for(nodeid: str) -> Path:
    """The test's own folder under ARTIFACTS, emptied: what is there is from this run (made
    by the first picture, so a test that keeps none leaves no folder)."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", nodeid).strip("_")
    shutil.rmtree(folder, ignore_errors=True)
    return folder


@contextmanager
def rendered_page(browser: Browser, artifacts: Path) -> Iterator[RenderedPage]:
    # A context per test: no cookies, storage or cache carried from one test to the next.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield RenderedPage(context.new_page(), artifacts)
    finally:
        context.close()
