"""`coi verify-bundle` renders a bound export again and compares it byte for byte, but only when
the exporters' rendering version (projections/export/formats.py RENDERING) is the one that made
it. So any change to what a format writes for the same records must raise RENDERING, or every
bundle made before would fail to verify. This test holds the exporters' output, for every
format, for one patient of the v0.1 fixture ledger, to digests recorded per version: a change
without a new version fails here."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from ledger.audit.trust import read_keys
from ledger.store.sources import open_source
from projections.export.build import build
from projections.export.evidence import gather
from projections.export.formats import FORMATS, RENDERING, renderer
from projections.export.uris import Ids
from tests.support import FIXTURE_VKEY, copy_fixture_ledger

PATIENT = "CHW0451260059EM"
EXPORTED_AT = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)
BASE = "https://id.example.org/coi-ledger"

# RENDERING -> format -> SHA-256 of the export of PATIENT (recorded when the version was made).
RENDERED: dict[int, dict[str, str]] = {
    1: {
        "json": "da524bbbfd8754501b04d7a9565628468d6e84c4885208384a7172e0c2e1c742",
        "csv": "bb632a8edd0db886ec5ce2858f523b24328401b459822899e1e651f8010ddc5a",
        "epcis": "04ad17cd357df9f128c382310c78b70954494d1c1faf55e3407735450807c968",
        "fhir": "bde4db24c442c99d37c466eb159907cfc4038bef725c4b69f11a5ea606e21bf2",
        "html": "c2f28e57e98dbdb5ea9d87268a039d9746f001482af649e78c0e9c53523baa20",
    },
}


def _rendered(folder: Path) -> dict[str, str]:
    data = copy_fixture_ledger(folder / "coi-data")
    source = open_source(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        evidence = gather(source, PATIENT, lambda _: (read_keys(FIXTURE_VKEY), "the fixture's key"))
    finally:
        source.close()
    assert evidence.verification.status == "verified", evidence.verification.failure
    document = build(evidence.sources, PATIENT, Ids(BASE, PATIENT), evidence.verification, "COI", EXPORTED_AT)
    return {fmt: hashlib.sha256(renderer(fmt)(document)).hexdigest() for fmt in FORMATS}


def test_what_each_format_writes_is_the_rendering_version_that_says_so(tmp_path: Path) -> None:
    rendered = _rendered(tmp_path / "once")
    assert _rendered(tmp_path / "again") == rendered  # the same records make the same bytes
    recorded = RENDERED.get(RENDERING, {})
    changed = sorted(fmt for fmt in FORMATS if recorded.get(fmt) != rendered[fmt])
    assert not changed, (
        f"what {', '.join(changed)} writes for the same records changed: raise RENDERING in "
        f"projections/export/formats.py (bundles made before must not fail) and record {rendered}"
    )
