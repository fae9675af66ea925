"""`--format json`: the document itself (`coi schema --genealogy` is its JSON Schema)."""

from __future__ import annotations

import msgspec

from projections.export.document import Genealogy


def render(genealogy: Genealogy) -> bytes:
    return msgspec.json.format(msgspec.json.encode(genealogy)) + b"\n"
