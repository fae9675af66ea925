"""Wire-format rules through the ledger: what a store keeps of a body, re-encoded envelopes,
envelope digests migrated on start."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from ledger.app.application import PAYLOAD_DIGESTS, LedgerApplication
from ledger.demo.journeys import Cast
from tests.support import advance, body_dict, new_journey, signed
from tests.unit.test_wire import _step


def test_an_enrolled_coi_with_a_newline_enrols_nobody(registered: LedgerApplication, cast: Cast) -> None:
    journey = new_journey(cast)
    advance(registered, journey, before="label_printed")
    body = body_dict(_step(journey, "enrolled"))
    body.update(coi=body["coi"] + "\n", event_id=str(uuid.uuid4()))
    outcome = registered.submit(signed(body, cast[body["actor"]]))
    assert (outcome.status, outcome.code, outcome.field) == ("rejected", "control_character", "coi")


@pytest.mark.parametrize("how", ["url-safe base64", "re-spaced", "keys and signatures reordered"])
def test_a_re_encoded_envelope_and_its_original_are_one_event(
    registered: LedgerApplication, cast: Cast, how: str
) -> None:
    for index in range(50):  # an envelope with no + or / in its base64 is its own url-safe form
        journey = new_journey(cast, index=index)
        rest = advance(registered, journey, before="custody_transferred")
        original = rest[0].envelope  # two signatures: the releasing and the receiving custodian
        copy = _re_encodings(original)[how]
        if copy != original:
            break
    assert copy != original
    assert registered.submit(copy).status == "accepted"
    assert registered.submit(original).status == "duplicate"
    assert registered.submit(copy).status == "duplicate"


def test_a_store_of_envelope_digests_is_migrated_on_start(store_url: str, cast: Cast) -> None:
    """A ledger written when claims held the digest of the envelope bytes: after the upgrade,
    the original and any re-encoding of it are duplicates."""
    app = LedgerApplication(store_url)
    journey = new_journey(cast)
    raws = [*cast.registrations(journey.clock), *(s.envelope for s in list(journey.steps())[:3])]
    assert {o.status for o in app.submit_many(raws)} == {"accepted"}
    _make_old(app, store_url, raws)
    app.close()

    app = LedgerApplication(store_url)
    done = _migrations(app)
    assert PAYLOAD_DIGESTS in done
    for raw in raws[-3:]:
        assert app.submit(raw).status == "duplicate"
        assert app.submit(_re_encodings(raw)["url-safe base64"]).status == "duplicate"
    app.close()
    again = LedgerApplication(store_url)  # runs once: a second start changes nothing
    assert _migrations(again) == done
    again.close()


def _make_old(app: LedgerApplication, store_url: str, raws: list[bytes]) -> None:
    """What an earlier version wrote: no migrations table, event claims keyed by envelope digest."""
    rows = [(hashlib.sha256(raw).hexdigest(), str(body_dict(raw)["event_id"])) for raw in raws]
    mark = "?" if store_url.startswith("sqlite") else "%s"
    with app.recorder.datastore.transaction(commit=True) as c:  # type: ignore[attr-defined]
        c.executemany(f"UPDATE coi_claims SET digest = {mark} WHERE kind = 'event' AND value = {mark}", rows)
        c.execute("DROP TABLE IF EXISTS coi_schema")


def test_a_body_of_every_type_passes_the_checks(registered: LedgerApplication, cast: Cast) -> None:
    """The whole demo journey still goes through, with the new checks on every envelope."""
    journey = new_journey(cast)
    assert advance(registered, journey) == []


def _re_encodings(raw: bytes) -> dict[str, bytes]:
    env = json.loads(raw)
    urlsafe = {
        "payloadType": env["payloadType"],
        "payload": env["payload"].translate(_URLSAFE),
        "signatures": [{"keyid": s["keyid"], "sig": s["sig"].translate(_URLSAFE)} for s in env["signatures"]],
    }
    reordered = {
        "signatures": env["signatures"][::-1],
        "payload": env["payload"],
        "payloadType": env["payloadType"],
    }
    return {
        "url-safe base64": json.dumps(urlsafe, separators=(",", ":")).encode(),
        "re-spaced": json.dumps(env, indent=2).encode(),
        "keys and signatures reordered": json.dumps(reordered).encode(),
    }


_URLSAFE = str.maketrans("+/", "-_")


def _migrations(app: LedgerApplication) -> list[str]:
    with app.recorder.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
        c.execute("SELECT name FROM coi_schema ORDER BY name")
        return [row[0] if isinstance(row, tuple | list) else row["name"] for row in c.fetchall()]
