"""An export rendered again from the records of the bundle written with it, as `coi
verify-bundle` does to compare: the same records, the same inputs the manifest says it was
made with (projections/export/document.py, build.py), the same renderer."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ledger.audit.bundle import Bundle
from ledger.audit.bundle_format import ExportEntry, Made
from projections.export.build import Source, build
from projections.export.document import Genealogy, Verification
from projections.export.formats import FORMATS, RENDERING, renderer
from projections.export.uris import Ids


def made_with(genealogy: Genealogy) -> Made:
    """What the bundle's manifest records of how `genealogy` was made, besides its records."""
    return Made(
        asked=genealogy.asked,
        id_base=genealogy.id_base,
        exported_at=genealogy.exported_at,
        rendering=RENDERING,
        verification=msgspec.to_builtins(genealogy.verification),
    )


def remake(bundle: Bundle, entry: ExportEntry) -> bytes | None:
    """The export `entry` names, rendered again from `bundle`'s proved records; None where this
    coi cannot (made by another rendering version, or not recorded how)."""
    made = entry.made
    if made is None or made.rendering != RENDERING or entry.format not in FORMATS:
        return None
    request = bundle.manifest.request
    if request.coi is None and len(bundle.manifest.cois) != 1:
        return None
    coi = request.coi or bundle.manifest.cois[0]
    sources = [
        Source(proof.sequence, record.recorded_at, record.envelope, proof.leaf_index)
        for proof, record in bundle.records
    ]
    verification = msgspec.convert(made.verification, Verification)
    exported_at = datetime.fromisoformat(made.exported_at)
    document = build(sources, coi, Ids(made.id_base, coi), verification, made.asked, exported_at)
    return renderer(entry.format)(document)
