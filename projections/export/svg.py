"""The genealogy graph as an inline SVG for the HTML report: a left-to-right layered drawing
(patient -> donation -> bag -> batch -> cartridge, sample, product -> shipment), each node a
`<g class="node" data-kind=... data-id=URI>` with its label and status in words, since a
printed report is often black and white.

The infusion edge (product -> patient) would run back to the first column across every other
edge; it ends instead at an "infused into" end node in the last column that names the patient
again below the last column (class "end", not "node": it is the patient node drawn twice, not another
thing).
"""

from __future__ import annotations

from html import escape

from projections.export.document import BLOCKED, Edge, Graph, Node

# kind -> its column, left to right in the order the cells travel
COLUMNS = {
    "patient": 0,
    "donation": 1,
    "label": 1,
    "bag": 2,
    "batch": 3,
    "cartridge": 4,
    "sample": 4,
    "product": 4,
    "shipment": 5,
}
_LAST = max(COLUMNS.values()) + 1  # where unknown kinds go

HEIGHT = 62  # a node's box; its width fits the longest label
CHAR = 10.0  # a label character's width at 14px bold (DejaVu Sans Bold digits are 0.7em)
STATUS_CHAR = 9.0  # a status character's at 12px, bold capitals where it is bad news
GAP_X, GAP_Y = 90, 30  # room between columns for an edge's relation and sequence
MARGIN = 12

# status -> its tone (a CSS class); the words are always written beside the colour
TONES = {
    "rejected": "bad",
    "quarantined": "bad",
    "MISMATCH": "bad",
    BLOCKED: "bad",
    "MATCH": "good",
    "infused": "good",
    "released": "good",
    "consumed": "neutral",
    "completed": "warn",
    "in_progress": "warn",
    "in_transit": "warn",
}

STYLE = """
svg.graph { width: 100%; height: auto; font-family: "DejaVu Sans", Arial, sans-serif; }
svg.graph .box { fill: #fff; stroke: #333; stroke-width: 1.2; }
svg.graph .tone-bad .box { fill: #fde2e1; stroke: #b00020; stroke-width: 3; stroke-dasharray: 7 3; }
svg.graph .tone-good .box { fill: #e3f4e4; stroke: #1b6e20; stroke-width: 2; }
svg.graph .tone-warn .box { fill: #fff4d6; stroke: #8a5a00; }
svg.graph .end .box { fill: #eef2fb; stroke: #27408b; stroke-width: 2; }
svg.graph .kind { font-size: 11px; fill: #444; text-transform: uppercase; letter-spacing: .04em; }
svg.graph .label { font-size: 14px; font-weight: 600; fill: #000; }
svg.graph .status { font-size: 12px; fill: #000; }
svg.graph .tone-bad .status { fill: #b00020; font-weight: 700; }
svg.graph .edge { fill: none; stroke: #555; stroke-width: 1.3; }
svg.graph .edge.infusion { stroke: #27408b; stroke-width: 2; stroke-dasharray: 5 3; }
svg.graph .relation { font-size: 11px; fill: #333; paint-order: stroke; stroke: #fff; stroke-width: 4px; }
"""


def tone(status: str | None) -> str:
    return TONES.get(status or "", "neutral")


def _column(kind: str) -> int:
    return COLUMNS.get(kind, _LAST)


def _text(x: float, y: float, cls: str, text: str, anchor: str = "start") -> str:
    return f'<text class="{cls}" x="{x:.0f}" y="{y:.0f}" text-anchor="{anchor}">{escape(text)}</text>'


def _box(x: float, y: float, width: float, kind: str, label: str, status: str) -> list[str]:
    return [
        f'<rect class="box" x="{x:.0f}" y="{y:.0f}" width="{width:.0f}" height="{HEIGHT}" rx="6"/>',
        _text(x + 8, y + 15, "kind", kind),
        _text(x + 8, y + 35, "label", label),
        _text(x + 8, y + 53, "status", status),
    ]


def _is_infusion(edge: Edge, kinds: dict[str, str]) -> bool:
    return kinds.get(edge.target) == "patient" and _column(kinds.get(edge.source, "")) > 0


def draw(graph: Graph) -> str:
    """The `<svg>` element of `graph`."""
    kinds = {n.id: n.kind for n in graph.nodes}
    infusions = [e for e in graph.edges if _is_infusion(e, kinds)]
    columns: dict[int, list[Node]] = {}
    for node in graph.nodes:
        columns.setdefault(_column(node.kind), []).append(node)
    end_column = max(columns, default=0)
    rows = max([len(c) for c in columns.values()] + [1])
    box = max(
        [16 + CHAR * len(n.label) for n in graph.nodes]
        + [16 + STATUS_CHAR * len(f"status: {n.status}") for n in graph.nodes if n.status]
        + [170]
    )
    step = box + GAP_X
    place: dict[str, tuple[float, float]] = {}
    for column, nodes in columns.items():
        top = MARGIN + (rows - len(nodes)) * (HEIGHT + GAP_Y) / 2  # centred on the tallest column
        for row, node in enumerate(nodes):
            place[node.id] = (MARGIN + column * step, top + row * (HEIGHT + GAP_Y))
    # the infusion end node sits below everything, so its edge passes under the shipment
    end_y = MARGIN + rows * (HEIGHT + GAP_Y)
    height = end_y + (HEIGHT + MARGIN if infusions else 0)
    width = MARGIN * 2 + (end_column + 1) * step - GAP_X
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="genealogy graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
        "</marker></defs>",
    ]
    end_x = MARGIN + end_column * step
    for edge in graph.edges:
        if edge.source not in place or edge.target not in place:
            continue
        sx, sy = place[edge.source]
        if edge in infusions:
            parts.append(_edge(sx + box, sy + HEIGHT / 2, end_x, end_y + HEIGHT / 2, edge, "infusion"))
        else:
            tx, ty = place[edge.target]
            parts.append(_edge(sx + box, sy + HEIGHT / 2, tx, ty + HEIGHT / 2, edge, ""))
    for node in graph.nodes:
        x, y = place[node.id]
        status = node.status.replace("_", " ") if node.status else "-"
        status = status.upper() if tone(node.status) == "bad" else status
        parts.append(
            f'<g class="node tone-{tone(node.status)}" data-kind="{escape(node.kind)}" '
            f'data-id="{escape(node.id)}" data-status="{escape(node.status or "")}">'
            f"<title>{escape(node.id)}</title>"
        )
        parts.extend(_box(x, y, box, node.kind, node.label, f"status: {status}"))
        parts.append("</g>")
    for edge in infusions:
        patient = next(n for n in graph.nodes if n.id == edge.target)
        parts.append(f'<g class="end" data-kind="infusion" data-id="{escape(patient.id)}">')
        parts.extend(_box(end_x, end_y, box, "infused into patient", patient.label, f"seq {edge.sequence}"))
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _edge(x1: float, y1: float, x2: float, y2: float, edge: Edge, cls: str) -> str:
    """A curve from (x1, y1) to (x2, y2) with its relation and record sequence written on it."""
    bend = max(abs(x2 - x1) / 2, 30)
    if x2 <= x1:  # back to an earlier column: loop under the nodes
        low = max(y1, y2) + 80
        path = f"M{x1:.0f},{y1:.0f} C{x1 + 60:.0f},{low:.0f} {x2 - 60:.0f},{low:.0f} {x2:.0f},{y2:.0f}"
    elif y2 > y1 and cls:  # down first, then across: the infusion edge passes under the column
        path = f"M{x1:.0f},{y1:.0f} C{x1 + 30:.0f},{y2:.0f} {x1 + 30:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
    else:
        path = f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
    mid_x, mid_y = (x1 + x2) / 2, (y1 + y2) / 2
    return (
        f'<g class="link" data-relation="{escape(edge.relation)}">'
        f'<path class="edge {cls}" d="{path}" marker-end="url(#arrow)"/>'
        f"{_text(mid_x, mid_y - 4, 'relation', edge.relation, 'middle')}"
        f"{_text(mid_x, mid_y + 9, 'relation', f'seq {edge.sequence}', 'middle')}</g>"
    )
