"""The formats a genealogy exports to, each rendered from the one document by a module of its
own, imported only when asked for (the HTML and FHIR writers are the heaviest)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from projections.export.document import Genealogy

Render = Callable[[Genealogy], bytes]

# The exporters' output version, recorded with a bundle's export: `coi verify-bundle` renders
# an export again only with the version that made it. Raise it whenever any format's output
# changes for the same document (tests/integration/test_export_rendering.py holds each
# version's output, so a change without a new version fails there).
RENDERING = 1

# format -> the module whose `render(genealogy) -> bytes` writes it
MODULES = {
    "json": "projections.export.as_json",
    "csv": "projections.export.csv_zip",
    "epcis": "projections.export.as_epcis",
    "fhir": "projections.export.as_fhir",
    "html": "projections.export.html",
}
FORMATS = tuple(MODULES)


def renderer(fmt: str) -> Render:
    render: Render = importlib.import_module(MODULES[fmt]).render
    return render
