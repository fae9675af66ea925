"""Every kind of bad input is refused with its own reason code, nothing is stored, and the
next good event is still accepted. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast, Journey
from ledger.site.signing import Member, envelope
from ledger.wire import events as ev
from ledger.wire.dsse import MAX_ENVELOPE_BYTES
from tests.support import advance, body_dict, new_journey, signed


@dataclass
class World:
    app: LedgerApplication
    cast: Cast
    journey: Journey  # batch completed and QC'd, awaiting QA disposition
    product: str
    bag: str

    def at(self, seconds_ago: float = 0) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=seconds_ago)

    def good(self) -> bytes:
        """A valid next event for this patient."""
        return envelope(
            ev.LabelPrinted, self.cast["nurse.bdw"], self.at(), coi=self.journey.coi,
            label_id=f"L-{uuid.uuid4().hex[:8]}", din=self.journey.din,
        )  # fmt: skip

    def event(self, cls: type[ev.Body], actor: str, *cosigners: str, **fields: object) -> bytes:
        members = tuple(self.cast[c] for c in cosigners)
        return envelope(cls, self.cast[actor], self.at(), members, coi=self.journey.coi, **fields)


@pytest.fixture
def world(registered: LedgerApplication, cast: Cast) -> World:
    journey = new_journey(cast)
    advance(registered, journey, before="disposition")
    return World(registered, cast, journey, f"P-{journey.coi}-1", f"BAG-{journey.coi}")


def _with(w: World, **changes: object) -> bytes:
    """A label_printed body with fields changed, signed by the nurse (bytes as given)."""
    body = body_dict(w.good())
    body.update(changes)
    return signed({k: v for k, v in body.items() if v is not None}, w.cast["nurse.bdw"])


def _revoked(w: World) -> bytes:
    temp = Member.new("temp.nurse", "Tess Temp", "person", ("collection",), "US-BDW")
    admin = w.cast.admin
    setup = [
        envelope(ev.PrincipalRegistered, admin, w.at(2), principal_id=temp.principal_id, kind="person",
                 printed_name=temp.printed_name, roles=["collection"], public_key=temp.public_key,
                 valid_from=w.at(2)),
        envelope(ev.PrincipalRevoked, admin, w.at(1), principal_id=temp.principal_id,
                 effective_at=w.at(1), reason="badge lost"),
    ]  # fmt: skip
    assert [o.status for o in w.app.submit_many(setup)] == ["accepted", "accepted"]
    return envelope(ev.LabelPrinted, temp, w.at(), coi=w.journey.coi, label_id="L-temp", din=w.journey.din)


def _not_yet_valid(w: World) -> bytes:
    # The cast was registered a couple of minutes ago.
    return envelope(
        ev.LabelPrinted, w.cast["nurse.bdw"], w.at(3600), coi=w.journey.coi, label_id="L-old",
        din=w.journey.din,
    )  # fmt: skip


def _bad_signature(w: World) -> bytes:
    env = msgspec.json.decode(w.good())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return msgspec.json.encode(env)


def _envelope_with(w: World, **changes: object) -> bytes:
    env = msgspec.json.decode(w.good())
    env.update(changes)
    return msgspec.json.encode(env)


def _oversize(w: World) -> bytes:
    """The issue's case: one valid signature repeated until the envelope passes the limit."""
    env = msgspec.json.decode(w.good())
    env["signatures"] *= MAX_ENVELOPE_BYTES // len(msgspec.json.encode(env["signatures"][0])) + 1
    return msgspec.json.encode(env)


def _held(w: World) -> bytes:
    hold = w.event(ev.HoldPlaced, "qa.ssf", hold_id="H-1", unit_ids=[w.product], reason="suspect label")
    assert w.app.submit(hold).status == "accepted"
    return w.event(
        ev.CustodyTransferred, "recv.ssf", "courier.wc", unit_ids=[w.product], from_custodian="recv.ssf",
        to_custodian="courier.wc", location="dock", condition="intact",
    )  # fmt: skip


def _conflict(w: World) -> bytes:
    first = w.good()
    assert w.app.submit(first).status == "accepted"
    body = body_dict(first)
    body["label_id"] = "L-different"
    return signed(body, w.cast["nurse.bdw"])


CASES: dict[str, tuple[str, Callable[[World], bytes]]] = {
    "malformed JSON": ("malformed_json", lambda w: b'{"payloadType": '),
    "bad base64": ("bad_base64", lambda w: _envelope_with(w, payload="not*base64!")),
    "missing signature": ("missing_signature", lambda w: _envelope_with(w, signatures=[])),
    "bad signature": ("bad_signature", _bad_signature),
    "unknown key": (
        "unknown_key",
        lambda w: envelope(
            ev.LabelPrinted,
            Member.new("nurse.bdw", "Impostor", "person", ("collection",), "US-BDW"),
            w.at(),
            coi=w.journey.coi,
            label_id="L-x",
            din=w.journey.din,
        ),
    ),
    "key revoked at occurred_at": ("key_revoked", _revoked),
    "key not yet valid at occurred_at": ("key_not_yet_valid", _not_yet_valid),
    "role not allowed": (
        "role_not_allowed",
        lambda w: w.event(ev.Disposition, "cellq.ssf", batch_id=f"B-{w.journey.coi}", decision="released"),
    ),
    "unknown field": ("unknown_field", lambda w: _with(w, colour="blue")),
    "wrong type": ("wrong_type", lambda w: _with(w, label_id=42)),
    "naive timestamp": ("naive_timestamp", lambda w: _with(w, occurred_at="2026-01-01T10:00:00")),
    "far-future timestamp": ("future_timestamp", lambda w: _with(w, occurred_at="2099-01-01T10:00:00Z")),
    "DIN with a wrong check character": (
        "invalid_din",
        lambda w: _with(w, din=w.journey.din[:13] + ("A" if w.journey.din[13] != "A" else "B")),
    ),
    "shipment before QA release": (
        "out_of_sequence",
        lambda w: w.event(
            ev.ShipmentDispatched,
            "recv.ssf",
            shipment_id="SH-early",
            unit_ids=[w.product],
            shipper_id="DS-1",
            data_logger_id="LOG-1",
            destination_site="US-BDW",
        ),
    ),
    "infusion before receipt": (
        "out_of_sequence",
        lambda w: w.event(ev.Infused, "nurse.bdw", unit_id=w.product, thaw_started_at=w.at(2)),
    ),
    "transfer by someone who is not the custodian": (
        "not_custodian",
        lambda w: w.event(
            ev.CustodyTransferred,
            "courier.wc",
            "nurse.bdw",
            unit_ids=[w.product],
            from_custodian="courier.wc",
            to_custodian="nurse.bdw",
            location="dock",
            condition="intact",
        ),
    ),
    "action on a held unit": ("unit_on_hold", _held),
    "envelope over the size limit": ("oversize", _oversize),
    "duplicate with different bytes": ("duplicate_conflict", _conflict),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_its_code_and_nothing_is_stored(world: World, case: str) -> None:
    code, make = CASES[case]
    bad = make(world)
    stored_before = world.app.recorder.max_notification_id()
    outcome = world.app.submit(bad)
    assert (outcome.status, outcome.code) == ("rejected", code), outcome
    assert outcome.message
    assert world.app.recorder.max_notification_id() == stored_before
    assert world.app.submit(world.good()).status == "accepted"


def test_rejections_name_the_field(world: World) -> None:
    outcome = world.app.submit(_with(world, label_id=42))
    assert outcome.field == "label_id"
    assert "label_id" in (outcome.message or "")


def test_reason_codes_are_distinct_per_case() -> None:
    codes = [code for code, _ in CASES.values()]
    # Two sequence cases share "out_of_sequence" by design; every other case has its own code.
    assert len(set(codes)) == len(codes) - 1
