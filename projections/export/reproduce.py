"""An export rendered again from the records of the bundle written with it, as `coi
verify-bundle` does to compare: the same records, the same renderer, and what the manifest says
it was made with (projections/export/document.py, build.py). What it says it proved is not
taken from the manifest: it is established again from the bundle (evidence.checked)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ledger.audit.bundle import Bundle
from ledger.audit.bundle_format import ExportEntry, Made
from ledger.audit.exported import RenderError
from ledger.transparency.checkpoint import NoteVerifier
from projections.export.build import Source, build
from projections.export.document import Genealogy
from projections.export.evidence import checked
from projections.export.formats import FORMATS, RENDERING, renderer
from projections.export.uris import BaseError, Ids, checked_base


def made_with(genealogy: Genealogy) -> Made:
    """What the bundle's manifest records of how `genealogy` was made, besides its records."""
    return Made(
        asked=genealogy.asked,
        id_base=genealogy.id_base,
        exported_at=genealogy.exported_at,
        rendering=RENDERING,
        verified=genealogy.verification.status == "verified",
    )


def remaker(trusted: list[NoteVerifier]) -> Callable[[Bundle, ExportEntry], bytes]:
    """`remake` for a verifier trusting `trusted` (the keys it verified the bundle with)."""

    def remake(bundle: Bundle, entry: ExportEntry) -> bytes:
        """The export `entry` names, rendered again from `bundle`'s proved records; RenderError
        where this coi cannot, which fails the check (the manifest that would say why is not
        signed, so a reason to check less is never taken from it)."""
        made = entry.made
        if made is None:
            raise RenderError("the manifest does not say how the export was made")
        if made.rendering != RENDERING:
            raise RenderError(
                f"the manifest says rendering version {made.rendering}; this coi renders version "
                f"{RENDERING}: check it with the coi that made it"
            )
        if entry.format not in FORMATS:
            raise RenderError(f"the manifest names format {entry.format!r}, which coi does not write")
        if len(bundle.manifest.cois) != 1:
            raise RenderError("the bundle is not one patient's")
        coi = bundle.manifest.cois[0]
        try:
            base = checked_base(made.id_base)
        except BaseError as exc:
            raise RenderError(f"the manifest's id base: {exc}") from None
        sources = [
            Source(proof.sequence, record.recorded_at, record.envelope, proof.leaf_index)
            for proof, record in bundle.records
        ]
        verification = checked(bundle, trusted if made.verified else [], bundle.manifest.after_checkpoint)
        try:
            exported_at = datetime.fromisoformat(made.exported_at)
        except ValueError:
            raise RenderError(f"the manifest's export time {made.exported_at!r} is not a time") from None
        document = build(sources, coi, Ids(base, coi), verification, made.asked, exported_at)
        return renderer(entry.format)(document)

    return remake
