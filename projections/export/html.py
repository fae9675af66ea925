"""`--format html`: one self-contained page a QA reviewer opens and prints (A4), in the order
they read it: the outcome and the alarms, what was verified against which checkpoint, the
genealogy graph, custody, batches and QC, shipments and the bedside, the register, every
signature's manifestation, the records, and an end-of-report line so the last printed page is
recognisable. No script, no external resource: CSS and SVG inline.

Every text from the ledger is escaped: site systems wrote it. Every value shows the sequence
of the record it was read from, in a `seq` column or as a small "seq N" beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from projections.export import svg
from projections.export.document import (
    Batch,
    Correction,
    Fact,
    Genealogy,
    Shipment,
    Signature,
    Value,
)

Cell = str  # HTML, already escaped

STYLE = """
@page { size: A4; margin: 14mm 12mm 16mm 12mm; }
@page graph { size: A4 landscape; margin: 12mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10pt; color: #000; margin: 0 auto;
  max-width: 1200px; padding: 0 12px; line-height: 1.3; }
h1 { font-size: 17pt; margin: 10px 0 4px; }
h2 { font-size: 13pt; margin: 18px 0 6px; border-bottom: 2px solid #000; padding-bottom: 2px;
  break-after: avoid; page-break-after: avoid; }
h3 { font-size: 11pt; margin: 12px 0 4px; break-after: avoid; page-break-after: avoid; }
p { margin: 4px 0; }
.meta { color: #333; font-size: 9pt; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; font-size: 8.5pt; }
thead { display: table-header-group; }
tr, .keep, figure { break-inside: avoid; page-break-inside: avoid; }
th, td { border: 1px solid #888; padding: 2px 4px; vertical-align: top; text-align: left;
  overflow-wrap: break-word; }
th { background: #e8e8e8; }
table.kv th { width: 22%; }
td.seq, th.seq { width: 4.5em; white-space: nowrap; }
.s { font-size: 7pt; color: #555; white-space: nowrap; }
.s::before { content: " "; }
.outcome { border: 2px solid #000; padding: 6px 10px; font-size: 12pt; margin: 8px 0; }
.alarms { border: 4px double #b00020; background: #fde2e1; padding: 6px 10px; margin: 8px 0; }
.alarms h2 { border: 0; margin: 0 0 4px; color: #b00020; }
.alarms li { font-weight: 700; margin: 2px 0; }
.quiet { border: 1px solid #888; padding: 4px 10px; margin: 8px 0; }
.notes { border: 2px solid #8a5a00; padding: 4px 10px; margin: 8px 0; }
.notes h2 { border: 0; margin: 0 0 4px; font-size: 11pt; }
.columns { display: flex; gap: 12px; font-size: 8.5pt; }
.columns > div { flex: 1; }
.columns ul { padding-left: 16px; margin: 2px 0; }
.badge { font-weight: 700; padding: 0 4px; border: 1px solid currentColor; white-space: nowrap; }
.bad { color: #b00020; }
tr.bad td { background: #fde2e1; }
.good { color: #1b6e20; }
.warn { color: #8a5a00; }
tr.bad td:first-child { border-left: 5px solid #b00020; }
.verify.bad { border: 4px solid #b00020; background: #fde2e1; padding: 6px 10px; font-weight: 700; }
.verify.ok { border: 2px solid #1b6e20; padding: 4px 10px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font-size: 8pt; background: #f4f4f4;
  padding: 4px; border: 1px solid #ccc; }
section.graph { page: graph; }
figure { margin: 0; }
figcaption { font-size: 8.5pt; color: #333; }
.end-of-report { border-top: 3px double #000; margin-top: 18px; padding-top: 6px; font-weight: 700;
  break-inside: avoid; }
@media print { body { max-width: none; padding: 0; } section.graph h2 { margin-top: 0; } }
"""

NONE = '<span class="none">—</span>'
_ALARM_WORDS = ("rejected", "quarantined", "fail", "mismatch", "open", "excursion")


def render(genealogy: Genealogy) -> bytes:
    g = genealogy
    coi = str(g.patient.coi.value)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Genealogy of COI {_e(coi)}: {_e(g.outcome.stage)}</title>",
        f"<style>{STYLE}{svg.STYLE}{_footer(coi)}</style></head><body>",
        _head(g),  # the first page: outcome, alarms, what the records rest on
        _checkpoint(g),
        _graph(g),  # a landscape page of its own
        _verification(g),
        _patient(g),
        _custody(g),
        *(_batch(b) for b in g.batches),
        _products(g),
        *(_shipment(s) for s in g.shipments),
        _bedside(g),
        _register(g),
        _signatures(g),
        _records(g),
        _end(g),
        "</body></html>",
    ]
    return "\n".join(parts).encode()


def _footer(coi: str) -> str:
    """Every printed page says whose report it is and which page of how many; a COI is
    letters and digits, anything else is left out rather than escaped into CSS."""
    whose = f"COI {coi} · " if coi.isalnum() else ""
    return (
        f'@page {{ @bottom-center {{ content: "{whose}page " counter(page) " of " counter(pages); '
        'font-family: "DejaVu Sans", Arial, sans-serif; font-size: 8pt; color: #333; } }'
    )


# --- values -------------------------------------------------------------------------------


def _e(value: Value | None) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def _time(text: str | None) -> Cell:
    """Escaped; a timestamp may break before its time, not mid-number."""
    if text is None:
        return NONE
    escaped = escape(text)
    return escaped.replace("T", "T<wbr>", 1) if text[:4].isdigit() and text[10:11] == "T" else escaped


def _seq(sequence: int) -> Cell:
    return f'<span class="s">seq {sequence}</span>'


def _v(fact: Fact | None, row: int | None = None) -> Cell:
    """The value, with its record's sequence unless it is the row's (shown in its column)."""
    if fact is None:
        return NONE
    text = _time(fact.value) if isinstance(fact.value, str) else _e(fact.value)
    return text if fact.sequence == row else text + _seq(fact.sequence)


def _vs(facts: Iterable[Fact], row: int | None = None) -> Cell:
    return ", ".join(_v(f, row) for f in facts) or NONE


def _badge(text: str, tone: str) -> Cell:
    return f'<span class="badge {tone}">{_e(text)}</span>'


def _status(status: str | None) -> Cell:
    if not status:
        return NONE
    words = status.replace("_", " ")
    return _badge(words.upper() if svg.tone(status) == "bad" else words, svg.tone(status))


def _table(headers: Sequence[str], rows: Iterable[tuple[str, Sequence[Cell]]], cls: str = "") -> Cell:
    """A table of `rows` (each a row class and its cells); "seq" headers get the narrow column."""
    head = "".join(f'<th class="seq">{h}</th>' if h == "seq" else f"<th>{h}</th>" for h in headers)
    body = "".join(
        f'<tr class="{tone}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for tone, cells in rows
    )
    if not body:
        return '<p class="quiet">None recorded.</p>'
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


Part = Fact | list[Fact] | Cell | None


def _row(tone: str, sequence: int, *parts: Part) -> tuple[str, list[Cell]]:
    """A table row read from record `sequence`: that first, then each value (HTML as it is; a
    fact read from another record carries its own sequence)."""
    cells = [
        p if isinstance(p, str) else _vs(p, sequence) if isinstance(p, list) else _v(p, sequence)
        for p in parts
    ]
    return tone, [str(sequence), *cells]


def _kv(rows: Iterable[tuple[str, Cell]]) -> Cell:
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _section(ident: str, title: str, *body: str, cls: str = "") -> Cell:
    return f'<section id="{ident}" class="{cls}"><h2>{title}</h2>{"".join(body)}</section>'


def _manifestation(s: Signature) -> Cell:
    """Printed name (principal), UTC time, meaning; a signer without one says so."""
    name = f"{_e(s.printed_name)} ({_e(s.principal)})"
    if not s.manifested:
        kind = _e(s.kind or "unregistered signer")
        return f"{name}: {kind}, signs without a manifestation"
    return f"{name}, {_time(s.signed_at)}, meaning: <b>{_e(s.meaning)}</b>"


def _corrected(corrections: Sequence[Correction]) -> Cell:
    return "".join(
        f'<div class="warn">CORRECTED by seq {c.sequence}: {_v(c.field, c.sequence)} '
        f"{_v(c.old_value, c.sequence)} → {_v(c.new_value, c.sequence)} ({_v(c.reason, c.sequence)}, "
        f"by {_v(c.by, c.sequence)})</div>"
        for c in corrections
    )


def _as_corrected(fact: Fact, name: str, corrections: Sequence[Correction], row: int | None = None) -> Cell:
    """The value in force: a correction's new value first, the value it replaced struck through."""
    latest = [c for c in corrections if c.field.value == name]
    if not latest:
        return _v(fact, row)
    c = latest[-1]
    return f"<b>{_v(c.new_value, c.sequence)}</b>{_seq(c.sequence)} (was <s>{_v(fact, row)}</s>)"


# --- sections -----------------------------------------------------------------------------


def _head(g: Genealogy) -> Cell:
    outcome = g.outcome
    if outcome.alarms:
        items = "".join(f"<li>⚠ {_e(a)}</li>" for a in outcome.alarms)
        alarms = (
            f'<div class="alarms" id="alarms"><h2>⚠ {len(outcome.alarms)} ALARM'
            f"{'S' if len(outcome.alarms) > 1 else ''}: read before any sign-off</h2><ul>{items}</ul></div>"
        )
    else:
        alarms = (
            '<p class="quiet" id="alarms">No alarms in these records: no failed test, rejection, '
            "bedside mismatch, excursion, or open hold or deviation.</p>"
        )
    if outcome.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in outcome.notes)
        alarms += (
            f'<div class="notes" id="notes"><h2>Resolved ({len(outcome.notes)}): closed, released or '
            f"corrected on record; check the closing records</h2><ul>{items}</ul></div>"
        )
    tone = "bad" if outcome.stage == "rejected" or outcome.alarms else ""
    v = g.verification
    return (
        f"<header><h1>Batch genealogy report: COI {_e(g.patient.coi.value)}</h1>"
        f'<p class="meta">Asked for: {_e(g.asked)} · exported {_e(g.exported_at)} (UTC) · '
        f"{_e(g.format)} · {len(g.records)} records · checkpoint tree size {v.tree_size} of "
        f"{_e(v.origin)} · identifiers under {_e(g.id_base)}</p>"
        f'<div class="outcome {tone}" id="outcome"><b>Outcome ({_e(outcome.stage)}):</b> '
        f"{_e(outcome.summary)}</div>{alarms}{_verdict(g)}</header>"
    )


def _verdict(g: Genealogy) -> Cell:
    v = g.verification
    if v.status == "verified":
        return (
            f'<p class="verify ok">Records verified: every record is proved in the checkpoint at tree '
            f"size {v.tree_size} of {_e(v.origin)}, signed by a trusted key.</p>"
        )
    why = f": {_e(v.failure)}" if v.failure else ""
    return (
        f'<p class="verify bad">⚠ RECORDS {_e(v.status.upper())}{why}. Nothing in this report is '
        "proved against a trusted checkpoint.</p>"
    )


def _checkpoint(g: Genealogy) -> Cell:
    """What the records rest on, on the first page: status, log, tree size, root, trust."""
    v = g.verification
    status = _badge(v.status.upper(), "good" if v.status == "verified" else "bad")
    return _section(
        "checkpoint",
        "Verification",
        _kv(
            [
                ("Status", status + (f" {_e(v.failure)}" if v.failure else "")),
                ("Log (origin)", _e(v.origin)),
                ("Checkpoint tree size", str(v.tree_size)),
                ("Root hash", f"<code>{_e(v.root_hash)}</code>"),
                ("Signed by", _e(v.signed_by)),
                ("Records after the checkpoint (not in this report)", str(v.left_out)),
            ]
        ),
    )


def _verification(g: Genealogy) -> Cell:
    """What was proved and what cannot be, with the signed checkpoint note."""
    v = g.verification
    proved = "".join(f"<li>{_e(p)}</li>" for p in v.proved)
    not_proved = "".join(f"<li>{_e(p)}</li>" for p in v.not_proved)
    return _section(
        "verification",
        "Verification: what was proved",
        f'<div class="columns"><div><b>Proved</b><ul>{proved or "<li>nothing</li>"}</ul></div>'
        f"<div><b>Not proved by this report</b><ul>{not_proved}</ul></div></div>",
        f'<h3>The signed checkpoint</h3><pre class="keep">{_e(v.checkpoint)}</pre>',
    )


def _graph(g: Genealogy) -> Cell:
    edges = len(g.graph.edges)
    return _section(
        "graph",
        "Genealogy",
        f"<figure>{svg.draw(g.graph)}<figcaption>{len(g.graph.nodes)} items and {edges} links, left to "
        "right as the cells travel; each link names the record (seq) that made it. Red dashed boxes "
        "are rejected, quarantined or blocked (a bedside identity MISMATCH: not to be infused), green "
        "released or infused; the status is written in each box."
        "</figcaption></figure>",
        cls="graph",
    )


def _patient(g: Genealogy) -> Cell:
    p = g.patient
    patient = _kv(
        [
            ("COI", _v(p.coi)),
            ("Order", _v(p.order_id)),
            ("Product", _v(p.product)),
            ("Treatment site", _v(p.treatment_site)),
            ("Enrolled", f"{_v(p.enrolled_at)} by {_v(p.enrolled_by)}"),
        ]
    )
    collections = _table(
        ["seq", "DIN", "bag", "product code, facility", "volume (mL)", "collected (UTC)", "site, by"],
        (
            _row(
                "warn" if c.corrections else "",
                c.din.sequence,
                c.din,
                c.bag,
                [c.product_code, c.collection_facility],
                _as_corrected(c.volume_ml, "volume_ml", c.corrections, c.din.sequence)
                + _corrected(c.corrections),
                f"{_v(c.started_at, c.din.sequence)} to {_v(c.ended_at, c.din.sequence)}",
                [c.site, c.collected_by],
            )
            for c in g.collections
        ),
    )
    labels = _table(
        ["label", "DIN", "printed (UTC)", "applied to", "voided"],
        (
            (
                "" if lb.voided is None else "warn",
                [
                    _v(lb.label_id),
                    _v(lb.din),
                    _v(lb.printed_at),
                    _v(lb.applied_to),
                    "" if lb.voided is None else "VOIDED: " + _v(lb.voided),
                ],
            )
            for lb in g.labels
        ),
    )
    return _section(
        "patient",
        "Patient and collection",
        patient,
        "<h3>Collections</h3>",
        collections,
        "<h3>Labels</h3>",
        labels,
    )


def _custody(g: Genealogy) -> Cell:
    rows = (
        _row(
            "warn" if c.corrections else "",
            c.sequence,
            c.occurred_at,
            _e(c.type.replace("_", " ")),
            c.units,
            f"{_v(c.from_custodian, c.sequence)} → {_v(c.to_custodian, c.sequence)}",
            _as_corrected(c.location, "location", c.corrections, c.sequence),
            _as_corrected(c.condition, "condition", c.corrections, c.sequence) + _corrected(c.corrections),
            c.site,
        )
        for c in g.custody
    )
    return _section(
        "custody",
        "Custody timeline",
        _table(["seq", "time (UTC)", "what", "units", "from → to", "location", "condition", "site"], rows),
    )


def _batch(b: Batch) -> Cell:
    s = b.batch_id.sequence
    key = _kv(
        [
            ("Status", _status(b.status)),
            ("Manufacturing site", _v(b.site)),
            ("Cell Shuttle / slot", f"{_v(b.shuttle_id)} / slot {_v(b.slot)}"),
            ("Cartridge", _v(b.cartridge_id)),
            ("Recipe", _v(b.recipe_version)),
            ("Inputs", _vs(b.inputs)),
            ("Started (UTC)", _v(b.started_at)),
            ("Completed (UTC)", _v(b.completed_at)),
            ("QC samples", _vs(b.samples)),
        ]
    )
    steps = _table(
        ["seq", "step", "started (UTC)", "ended (UTC)", "material lots", "alarms", "performed by"],
        (
            _row(
                "bad" if st.alarms else "",
                st.step.sequence,
                st.step,
                st.started_at,
                st.ended_at,
                st.material_lots,
                st.alarms,
                st.performed_by,
            )
            for st in b.steps
        ),
    )
    outputs = _table(
        ["seq", "product unit", "product code", "volume (mL)"],
        (_row("", o.unit_id.sequence, o.unit_id, o.product_code, o.volume_ml) for o in b.outputs),
    )
    qc = _table(
        [
            "seq",
            "sample",
            "test",
            "method",
            "result",
            "specification",
            "verdict",
            "time (UTC)",
            "recorded by",
        ],
        (
            _row(
                "" if q.passed.value else "bad",
                q.test.sequence,
                q.sample_id,
                _v(q.test, q.test.sequence) + (" " + _badge("RETEST", "warn") if q.retest else ""),
                q.method,
                q.result,
                q.specification,
                _badge("PASS", "good") if q.passed.value else _badge("FAIL", "bad"),
                q.occurred_at,
                q.recorded_by,
            )
            for q in b.qc
        ),
        cls="qc",
    )
    retests = _table(
        ["seq", "test", "deviation", "authorised (UTC)", "by", "reason"],
        (
            _row("warn", r.test.sequence, r.test, r.deviation_id, r.authorised_at, r.authorised_by, r.reason)
            for r in b.retests
        ),
    )
    return _section(
        f"batch-{_e(b.batch_id.value)}",
        f"Batch {_e(b.batch_id.value)} {_status(b.status)}{_seq(s)}",
        key,
        "<h3>Manufacturing steps</h3>",
        steps,
        "<h3>Outputs</h3>",
        outputs,
        "<h3>QC results against specification</h3>",
        qc,
        "<h3>Retests</h3>" + retests if b.retests else "",
        "<h3>QA disposition</h3>",
        _disposition(b),
    )


def _disposition(b: Batch) -> Cell:
    d = b.disposition
    if d is None:
        return '<p class="quiet warn">No disposition: QA has not released or rejected this batch.</p>'
    decision = str(d.decision.value)
    seq = d.decision.sequence
    signed = "".join(f"<li>{_manifestation(s)}{_seq(s.sequence)}</li>" for s in d.signatures)
    rows = [
        ("Decision", _badge(decision.upper(), "good" if decision == "released" else "bad") + _seq(seq)),
        ("Time (UTC)", _v(d.occurred_at)),
        ("Reason", _v(d.reason)),
        ("Signed", f"<ul>{signed}</ul>" if signed else '<span class="bad">no signature</span>'),
    ]
    return f'<div class="keep">{_kv(rows)}</div>'


def _products(g: Genealogy) -> Cell:
    rows = (
        (
            "bad" if svg.tone(p.status) == "bad" or p.holds or p.bedside == "MISMATCH" else "",
            [
                str(p.status_sequence),
                _v(p.unit_id),
                _e(p.batch_id),
                _status(p.status),
                _e(", ".join(p.holds)) if p.holds else NONE,
                _e(p.custodian),
                _e(p.site),
                _e(p.shipment_id),
                _status(p.bedside),
            ],
        )
        for p in g.products
    )
    return _section(
        "products",
        "Final product units",
        _table(["seq", "unit", "batch", "status", "holds", "custodian", "site", "shipment", "bedside"], rows),
        "<p>Where each unit stands now, as the rules hold it; seq is the record that set its status.</p>",
    )


def _shipment(s: Shipment) -> Cell:
    key = _kv(
        [
            ("Units", _vs(s.units)),
            ("Dry shipper / data logger", f"{_v(s.shipper_id)} / {_v(s.data_logger_id)}"),
            ("From → to", f"{_v(s.origin_site)} → {_v(s.destination_site)}"),
            ("Dispatched (UTC)", _v(s.dispatched_at)),
            ("Received (UTC)", _v(s.received_at)),
            ("Received at, condition", f"{_v(s.received_location)}, {_v(s.received_condition)}"),
            ("Logger reviewed", _v(s.logger_reviewed)),
        ]
    )
    readings = _table(
        ["seq", "time (UTC)", "logger", "°C", "excursion"],
        (
            _row(
                "bad" if r.excursion else "",
                r.celsius.sequence,
                r.occurred_at,
                r.logger_id,
                r.celsius,
                f"{_badge('EXCURSION', 'bad')} limit {_v(r.limit_celsius, r.celsius.sequence)} °C for "
                f"{_v(r.duration_s, r.celsius.sequence)} s"
                if r.excursion
                else "in range",
            )
            for r in s.temperatures
        ),
    )
    return _section(
        f"shipment-{_e(s.shipment_id.value)}",
        f"Shipment {_e(s.shipment_id.value)}{_seq(s.shipment_id.sequence)}",
        key,
        "<h3>Temperature record</h3>",
        readings,
    )


def _bedside(g: Genealogy) -> Cell:
    checks = _table(
        ["seq", "unit", "outcome", "time (UTC)", "checked by", "witness", "signed"],
        (
            _row(
                "bad" if b.outcome == "MISMATCH" else "",
                b.sequence,
                b.unit_id,
                _badge(b.outcome, "bad" if b.outcome == "MISMATCH" else "good")
                + (" infusion blocked" if b.outcome == "MISMATCH" else ""),
                b.occurred_at,
                b.checked_by,
                b.witness,
                "<br>".join(_manifestation(s) for s in b.signatures) or NONE,
            )
            for b in g.bedside
        ),
    )
    infusions = _table(
        ["seq", "unit", "thaw started (UTC)", "infused (UTC)", "by", "site"],
        (
            _row(
                "good", i.unit_id.sequence, i.unit_id, i.thaw_started_at, i.occurred_at, i.infused_by, i.site
            )
            for i in g.infusions
        ),
    )
    if not g.infusions:
        infusions = '<p class="quiet bad">No infusion recorded.</p>'
    return _section("bedside", "Bedside check and infusion", checks, "<h3>Infusions</h3>", infusions)


def _register(g: Genealogy) -> Cell:
    rows = []
    for r in g.register:
        tone = (
            ("bad" if r.closed_sequence is None else "warn")
            if r.kind in ("hold", "deviation", "excursion")
            else "bad"
            if (r.outcome or "").lower() in _ALARM_WORDS
            else ""
        )
        closed = (
            _badge("OPEN", "bad")
            if r.closed_sequence is None
            else f"{_time(r.closed_at)} by {_e(r.closed_by)}{_seq(r.closed_sequence)}: {_e(r.outcome)}"
        )
        rows.append(
            (
                tone,
                [
                    str(r.opened_sequence),
                    _e(r.kind),
                    _e(r.item_id),
                    _e(r.summary),
                    f"{_time(r.opened_at)} by {_e(r.opened_by)} at {_e(r.site)}",
                    _e(r.reason),
                    closed,
                ],
            )
        )
    corrections = _table(
        ["seq", "corrects", "field", "old → new", "reason", "by", "time (UTC)"],
        (
            _row(
                "warn",
                c.sequence,
                f"seq {c.corrects}",
                c.field,
                f"{_v(c.old_value, c.sequence)} → {_v(c.new_value, c.sequence)}",
                c.reason,
                c.by,
                c.occurred_at,
            )
            for c in g.corrections
        ),
    )
    return _section(
        "register",
        "Register: holds, deviations, excursions, corrections, dispositions",
        _table(["seq", "kind", "id", "what", "opened (UTC)", "reason", "closed (UTC)"], rows),
        "<h3>Corrections (the old value stays on record)</h3>",
        corrections,
    )


def _signatures(g: Genealogy) -> Cell:
    rows = (
        (
            "" if s.manifested else "warn",
            [
                str(s.sequence),
                _e(s.printed_name),
                _e(s.principal),
                _e(s.kind),
                _time(s.signed_at) if s.manifested else "signs without a manifestation",
                f"<b>{_e(s.meaning)}</b>" if s.manifested else NONE,
                f"<code>{_e(s.keyid)}</code>",
            ],
        )
        for s in g.signatures
    )
    return _section(
        "signatures",
        "Signatures (Part 11 manifestation)",
        "<p>Printed name, time and meaning as the signed record holds them; a device or site system "
        "signs without a manifestation: its name and kind are its registration's.</p>",
        _table(["seq", "printed name", "principal", "kind", "signed (UTC)", "meaning", "key"], rows),
    )


def _records(g: Genealogy) -> Cell:
    rows = (
        (
            "bad" if r.outcome in ("FAIL", "MISMATCH", "REJECTED", "EXCURSION") else "",
            [
                str(r.sequence),
                _e(r.type.replace("_", " ")),
                _time(r.occurred_at),
                _e(r.site),
                _e(r.actor),
                _e(r.outcome),
                _e(r.reason) + "".join(f"<div>{_e(f)}</div>" for f in r.flags),
                _e(r.leaf_index),
            ],
        )
        for r in g.records
    )
    return _section(
        "records",
        f"The {len(g.records)} records this report was made from",
        _table(["seq", "type", "occurred (UTC)", "site", "actor", "outcome", "reason, flags", "leaf"], rows),
    )


def _end(g: Genealogy) -> Cell:
    v = g.verification
    return (
        f'<div class="end-of-report" id="end">End of report: COI {_e(g.patient.coi.value)}, '
        f"{len(g.records)} records, checkpoint tree size {v.tree_size} ({_e(v.origin)}), "
        f"{_e(v.status)}; exported {_e(g.exported_at)}.</div>"
    )
