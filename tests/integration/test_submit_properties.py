"""Anything sent to the ledger's submit path (hypothesis, bounded; SQLite in tmp): random bytes,
genuine envelopes with bytes changed, and genuine bodies with a field changed, dropped or
added, signed again by their signers, among the journeys' own steps. Each is accepted, a
duplicate, or refused with a reason code, never an exception; exactly the accepted ones are
stored, with their claims; and `coi verify`, replaying the rules, accepts every record."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.app.application import LedgerApplication, Outcome
from ledger.app.log import MerkleLog
from ledger.audit.replay import AT_THE_DOOR
from ledger.demo.journeys import VARIANTS, Cast, Step, compressed_run
from ledger.demo.kit import register_cast
from ledger.store.recorders import CLAIMS_TABLE
from ledger.transparency.checkpoint import NoteSigner
from ledger.wire.dsse import open_envelope
from ledger.wire.rejection import ReasonCode
from tests.stores import verify_ledger
from tests.support import body_dict, new_journey, signed

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@dataclass
class Fuzz:
    """The ledger, its journeys and how far each has been sent as it was signed."""

    app: LedgerApplication
    db: sqlite3.Connection
    cast: Cast
    journeys: list[list[Step]]
    sent: list[int] = field(default_factory=list)  # each journey's next genuine step
    stored: list[bytes] = field(default_factory=list)  # the envelopes accepted
    codes: Counter[str] = field(default_factory=Counter)  # the refusals' reason codes

    def next_step(self, j: int) -> Step:
        return self.journeys[j][min(self.sent[j], len(self.journeys[j]) - 1)]

    def counts(self) -> tuple[int, int, int]:
        """Stored records, their event id claims, the other claims (DINs, cartridges)."""
        (records,) = self.db.execute("SELECT COUNT(*) FROM stored_events").fetchone()
        (events,) = self.db.execute(f"SELECT COUNT(*) FROM {CLAIMS_TABLE} WHERE kind = 'event'").fetchone()
        (others,) = self.db.execute(f"SELECT COUNT(*) FROM {CLAIMS_TABLE} WHERE kind != 'event'").fetchone()
        return records, events, others

    def submit(self, raws: list[bytes]) -> list[Outcome]:
        """One batch, judged by the properties: every outcome a known one, and the store
        grown by exactly the accepted records (nothing of a refused one)."""
        records, events, others = self.counts()
        outcomes = list(self.app.submit_many(raws))
        assert len(outcomes) == len(raws)
        for outcome in outcomes:
            assert outcome.status in ("accepted", "duplicate", "rejected"), outcome
            if outcome.status == "rejected":
                assert outcome.code in set(ReasonCode) and outcome.message, outcome
                self.codes[outcome.code] += 1
        accepted = sum(o.status == "accepted" for o in outcomes)
        self.stored += [raw for raw, o in zip(raws, outcomes, strict=True) if o.status == "accepted"]
        now = self.counts()
        assert now[:2] == (records + accepted, events + accepted), (now, outcomes)
        assert accepted or now[2] == others, "a refused envelope left a claim"
        return outcomes


def _signers(cast: Cast, raw: bytes) -> list[Any]:
    return [cast[keyid.split(":", 1)[0]] for keyid, _ in open_envelope(raw).signatures]


# What to send, drawn apart from the ledger's state (which the draws must not depend on):
# random bytes; a journey's next genuine step; that step with up to three bytes replaced at a
# place (a fraction of its length); or its body with a field (by index, or one it does not
# have) dropped, or set to any JSON or to another of its own values, signed again.
FRACTION = st.integers(0, 999)
JOURNEY = st.integers(0, len(VARIANTS) - 1)
SENDING = st.lists(
    st.tuples(st.just("bytes"), st.binary(max_size=200))
    | st.tuples(st.just("next"), JOURNEY)
    | st.tuples(st.just("bytes_of"), JOURNEY, FRACTION, st.integers(0, 3), st.binary(max_size=3))
    | st.tuples(st.just("field"), JOURNEY, FRACTION, st.booleans(), JSON, st.none() | FRACTION),
    max_size=6,
)


def _raw(fuzz: Fuzz, what: tuple[Any, ...]) -> bytes:
    """The envelope `what` (an item of SENDING) says, for the ledger as it now stands."""
    if what[0] == "bytes":
        return bytes(what[1])
    j = what[1]
    step = fuzz.next_step(j)
    if what[0] == "next":
        fuzz.sent[j] += 1
        return step.envelope
    if what[0] == "bytes_of":
        _, _, place, cut, replacement = what
        raw = bytearray(step.envelope)
        at = place * len(raw) // 1000
        raw[at : at + cut] = replacement
        return bytes(raw)
    _, _, which, drop, value, own = what
    body = body_dict(step)
    names = [*sorted(body), "extra"]
    name = names[which * len(names) // 1000]
    if drop and name in body:
        del body[name]
    elif own is not None:
        values = list(body.values())
        body[name] = values[own * len(values) // 1000]
    else:
        body[name] = value
    return signed(body, *_signers(fuzz.cast, step.envelope))


@pytest.fixture
def fuzz(tmp_path: Path, cast: Cast) -> Iterator[Fuzz]:
    app = LedgerApplication(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    register_cast(app, cast, compressed_run(datetime.now(UTC)).registered_at)
    journeys = [list(new_journey(cast, variant, index=i).steps()) for i, variant in enumerate(VARIANTS)]
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    yield Fuzz(app, db, cast, journeys, [0] * len(journeys))
    db.close()
    app.close()


def test_whatever_is_submitted_is_judged_and_only_what_is_accepted_is_stored(fuzz: Fuzz) -> None:
    @settings(max_examples=150, deadline=None)
    @given(SENDING)
    def send(sending: list[tuple[Any, ...]]) -> None:
        fuzz.submit([_raw(fuzz, what) for what in sending])

    send()
    # The journeys' remaining steps, so the replay below goes to their ends.
    for j, steps in enumerate(fuzz.journeys):
        fuzz.submit([s.envelope for s in steps[fuzz.sent[j] :]])
    assert len(fuzz.stored) >= sum(len(steps) for steps in fuzz.journeys) // 2
    # Both the door and the rules behind it were reached.
    assert set(fuzz.codes) & AT_THE_DOOR and set(fuzz.codes) - AT_THE_DOOR, fuzz.codes
    # Whatever was accepted, sent again, is a duplicate and stores nothing.
    assert {o.status for o in fuzz.submit(fuzz.stored)} == {"duplicate"}

    signer = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
    MerkleLog(fuzz.app).checkpoint(signer, signer.name, memory=None)
    report = verify_ledger(fuzz.app, [signer.verifier])
    assert report.failure is None, report.failure
    assert report.replayed
