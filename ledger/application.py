"""The ledger application: verify, authorise, apply the domain rules, store.

Each accepted envelope is stored verbatim as one event of one aggregate (a therapy, or a
principal for registry changes), next to claim aggregates that keep event ids, DINs and
cartridges globally unique. Appends are committed in batches: one transaction per batch.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from aggregates.claims import Claim, claim_id
from aggregates.principal import Principal, authorize, principal_uuid, public_key_raw
from aggregates.therapy import Therapy, therapy_uuid
from ledger import events as ev
from ledger.config import database_url, persistence_env
from ledger.decoding import decode_body
from ledger.dsse import PAYLOAD_TYPE, Opened, open_envelope, pae, verify
from ledger.keys import keyid_for
from ledger.rejection import Rejected

GENESIS = ("genesis", "administrator")


class Outcome(msgspec.Struct, omit_defaults=True):
    """What became of one submitted envelope; `sequence` is its place in the global log."""

    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    type: str | None = None
    coi: str | None = None
    sequence: int | None = None
    code: str | None = None
    message: str | None = None
    field: str | None = None


@dataclass
class _Batch:
    """Aggregates changed by a batch of envelopes, saved in one transaction."""

    aggregates: dict[UUID, Aggregate] = field(default_factory=dict)
    outcomes: list[tuple[Outcome, UUID | None, int]] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    accepted: int = 0


class LedgerApplication(Application):
    name = "CoiLedger"
    # One writer per store: cached aggregates are current because every change goes
    # through this object. Deep copies would cost more than the rules themselves.
    env = {  # noqa: RUF012 - the eventsourcing configuration hook
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }

    def __init__(self, url: str | None = None, batch_size: int = 50) -> None:
        super().__init__(env=persistence_env(url or database_url()))
        self.batch_size = batch_size

    # ---------------------------------------------------------------- submitting

    def submit(self, raw: bytes, now: datetime | None = None) -> Outcome:
        return next(iter(self.submit_many([raw], now=now)))

    def submit_many(self, raws: Iterable[bytes], now: datetime | None = None) -> Iterator[Outcome]:
        """Outcomes in input order; accepted envelopes are stored before they are reported."""
        batch = _Batch()
        for raw in raws:
            self._take(raw, batch, now or datetime.now(UTC))
            if batch.accepted >= self.batch_size:
                yield from self._flush(batch, now)
                batch = _Batch()
        yield from self._flush(batch, now)

    def _take(self, raw: bytes, batch: _Batch, now: datetime) -> None:
        batch.raws.append(raw)
        try:
            opened = open_envelope(raw)
            body = decode_body(opened.body, now)
        except Rejected as rejected:
            batch.outcomes.append((_rejection(Outcome("rejected"), rejected), None, 0))
            return
        outcome = Outcome(
            "accepted", str(body.event_id), str(type(body).__struct_config__.tag), getattr(body, "coi", None)
        )
        try:
            target = self._decide(raw, opened, body, batch)
        except Rejected as rejected:
            batch.outcomes.append((_rejection(outcome, rejected), None, 0))
            return
        if target is None:
            outcome.status = "duplicate"
            batch.outcomes.append((outcome, None, 0))
        else:
            batch.accepted += 1
            batch.outcomes.append((outcome, target.id, target.version))

    def _flush(self, batch: _Batch, now: datetime | None) -> Iterator[Outcome]:
        if batch.aggregates:
            try:
                recordings = self.save(*batch.aggregates.values())
            except Exception:
                # Someone else wrote first (or the store failed): drop what this batch
                # assumed and take its envelopes again one at a time on fresh state.
                self._evict(batch)
                if len(batch.raws) == 1:
                    raise
                for raw in batch.raws:
                    yield from self.submit_many([raw], now=now)
                return
            sequence = {
                (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
                for r in recordings
            }
            for outcome, aggregate_id, version in batch.outcomes:
                if aggregate_id is not None:
                    outcome.sequence = sequence[(aggregate_id, version)]
        for outcome, _, _ in batch.outcomes:
            yield outcome

    def _evict(self, batch: _Batch) -> None:
        cache = self.repository.cache
        for aggregate_id in batch.aggregates:
            if cache is not None:
                with contextlib.suppress(KeyError):
                    cache.get(aggregate_id, evict=True)

    def _get(self, aggregate_id: UUID, batch: _Batch) -> Aggregate | None:
        found = batch.aggregates.get(aggregate_id)
        if found is not None:
            return found
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _decide(self, raw: bytes, opened: Opened, body: ev.Event, batch: _Batch) -> Aggregate | None:
        """The aggregate that records this envelope, None for an exact duplicate."""
        coi = getattr(body, "coi", None)
        digest = hashlib.sha256(raw).hexdigest()
        signers = self._signers(opened.body, opened.signatures, body, batch)

        claimed = self._get(claim_id("event", str(body.event_id)), batch)
        if isinstance(claimed, Claim):
            if claimed.digest != digest:
                raise Rejected(
                    "duplicate_conflict",
                    f"event_id {body.event_id} was already recorded with different content; "
                    "give a new event a new event_id",
                    "event_id",
                )
            return None

        authorize(body, signers)
        envelope = raw.decode()
        claims = [Claim.make("event", str(body.event_id), coi or "registry", digest)]
        if isinstance(body, ev.PrincipalRegistered | ev.PrincipalKeyRotated | ev.PrincipalRevoked):
            target = self._registry_change(body, envelope, batch, claims)
        else:
            target = self._journey_step(body, signers[body.actor].roles, envelope, batch, claims)
        for claim in claims:
            batch.aggregates[claim.id] = claim
        batch.aggregates[target.id] = target
        return target

    def _signers(
        self, body_bytes: bytes, signatures: list[tuple[str, bytes]], body: ev.Event, batch: _Batch
    ) -> dict[str, Principal]:
        """Verify every signature and the key's state at occurred_at; return the signers."""
        message = pae(PAYLOAD_TYPE, body_bytes)
        signers: dict[str, Principal] = {}
        for i, (keyid, sig) in enumerate(signatures):
            principal = self._principal(keyid.split(":", 1)[0], batch)
            genesis = self._genesis_key(body, keyid, batch) if principal is None else None
            if genesis is not None:
                public = genesis
            elif principal is not None and keyid in principal.keys:
                public = principal.keys[keyid].public_raw
            else:
                raise Rejected(
                    "unknown_key", f"key {keyid!r} is not registered; register it with coi principals",
                    f"signatures[{i}].keyid",
                )  # fmt: skip
            if not verify(public, sig, message):
                raise Rejected(
                    "bad_signature", f"signature by {keyid} does not verify over this payload",
                    f"signatures[{i}].sig",
                )  # fmt: skip
            if principal is None:
                continue  # the genesis administrator is checked when it is created
            problem = principal.key_problem(keyid, body.occurred_at)
            if problem is not None:
                raise problem
            signers[principal.principal_id] = principal
        if isinstance(body, ev.PrincipalRegistered) and not signers:
            signers[body.principal_id] = self._new_genesis(body)
        return signers

    def _principal(self, principal_id: str, batch: _Batch) -> Principal | None:
        found = self._get(principal_uuid(principal_id), batch)
        return found if isinstance(found, Principal) else None

    def _genesis_key(self, body: ev.Event, keyid: str, batch: _Batch) -> bytes | None:
        """The self-signed first administrator is the one key the registry cannot vouch for."""
        if not isinstance(body, ev.PrincipalRegistered) or body.actor != body.principal_id:
            return None
        if self._get(claim_id(*GENESIS), batch) is not None:
            return None
        raw = public_key_raw(body.public_key)
        return raw if keyid == keyid_for(body.principal_id, raw) else None

    def _new_genesis(self, body: ev.PrincipalRegistered) -> Principal:
        if "admin" not in body.roles or body.kind != "person":
            raise Rejected(
                "no_administrator", "the first principal must be a person with the admin role", "roles"
            )
        if body.occurred_at < body.valid_from:
            raise Rejected("key_not_yet_valid", "valid_from is after occurred_at", "valid_from")
        # A provisional object to authorise against; the stored one is made from the envelope.
        principal = Principal.__new__(Principal)
        principal.mutate(body)
        return principal

    def _registry_change(
        self, body: ev.RegistryEvent, envelope: str, batch: _Batch, claims: list[Claim]
    ) -> Aggregate:
        existing = self._principal(body.principal_id, batch)
        if isinstance(body, ev.PrincipalRegistered) and existing is None:
            if self._get(claim_id(*GENESIS), batch) is None:
                claims.append(Claim.make(*GENESIS, owner=body.principal_id))
            return Principal.open(principal_uuid(body.principal_id), envelope)
        if existing is None:
            raise Rejected(
                "unknown_principal", f"principal {body.principal_id} is not registered", "principal_id"
            )
        existing.check(body)
        existing.record(envelope)
        return existing

    def _journey_step(
        self,
        body: ev.JourneyEvent,
        roles: frozenset[str],
        envelope: str,
        batch: _Batch,
        claims: list[Claim],
    ) -> Aggregate:
        therapy = self._get(therapy_uuid(body.coi), batch)
        if therapy is None and not isinstance(body, ev.Enrolled):
            raise Rejected("not_enrolled", f"{body.coi} has not been enrolled", "coi")
        if isinstance(body, ev.ApheresisCollected):
            claims.append(self._claim("din", body.din, body.coi, batch))
        if isinstance(body, ev.LabelPrinted):
            self._claim("din", body.din, body.coi, batch, same_owner_ok=True)
        if isinstance(body, ev.ManufacturingStarted):
            claims.append(self._claim("cartridge", body.cartridge_id, body.coi, batch))
        if therapy is None:
            return Therapy.open(therapy_uuid(body.coi), envelope)
        assert isinstance(therapy, Therapy)
        therapy.check(body, roles)
        therapy.record(envelope)
        return therapy

    def _claim(self, kind: str, value: str, owner: str, batch: _Batch, same_owner_ok: bool = False) -> Claim:
        existing = self._get(claim_id(kind, value), batch)
        if isinstance(existing, Claim) and not (same_owner_ok and existing.owner == owner):
            raise Rejected(f"{kind}_in_use", f"{kind} {value} already belongs to {existing.owner}", kind)
        return Claim.make(kind, value, owner)

    # ------------------------------------------------------------------ reading

    def records(self, start: int = 1) -> Iterator[tuple[int, datetime, str]]:
        """(sequence, recorded_at, envelope) of every stored envelope, in log order."""
        decoder = msgspec.json.Decoder(dict[str, object])
        while True:
            notifications = self.recorder.select_notifications(start=start, limit=500)
            if not notifications:
                return
            for n in notifications:
                if n.topic.endswith((".Opened", ".Recorded")):
                    state = decoder.decode(n.state)
                    stamp = state["timestamp"]
                    assert isinstance(stamp, dict)
                    yield n.id, datetime.fromisoformat(str(stamp["_data_"])), str(state["envelope"])
            start = notifications[-1].id + 1


def _rejection(outcome: Outcome, rejected: Rejected) -> Outcome:
    outcome.status = "rejected"
    outcome.code = rejected.code
    outcome.message = rejected.message
    outcome.field = rejected.field
    return outcome
