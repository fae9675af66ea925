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
        "json": "8aa7fdce275435dbfa6358cb8bc05dfb6b06c39b7e4b5b00c2d41b75cac7b486",
        "csv": "19517f3f273e9e2f3484cda7c9cf97f4e36605018653f72989103497a1cb297d",
        "epcis": "04ad17cd357df9f128c382310c78b70954494d1c1faf55e3407735450807c968",
        "fhir": "2bb45c1f7ce3647ec56bea9bba05a7fe5e2ee1b484da56dba200980781cb0d84",
        "html": "a07ff09f020771c00d2f61c502d66276a688ff09419d447bf71231311bebcdab",
    },
}


def _rendered(folder: Path) -> dict[str, str]:
    data = copy_fixture_ledger(folder / "coi-data")
    source = open_source(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        evidence = gather(source, PATIENT, lambda _: read_keys(FIXTURE_VKEY))
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
