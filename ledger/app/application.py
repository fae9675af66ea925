"""The ledger application: verify, authorise, apply the domain rules, store.

Each accepted envelope is stored verbatim as one event of one aggregate (a therapy, or a
principal for registry changes); claims that keep event ids, DINs and cartridges globally
unique are written in the same transaction (ledger/store/recorders.py). Appends are committed in
batches: one transaction per batch.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import itertools
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID, uuid4

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from aggregates import principal, site, therapy
from aggregates.base import Administrators, Context
from aggregates.policy import LEGACY, Policy, PolicyContext, PolicyState, judging, policy_of
from aggregates.policy import decide as decide_policy
from aggregates.principal import (
    GENESIS,
    PrincipalState,
    authorize,
    can_administer,
    genesis_problem,
    key_problem,
    principal_uuid,
    signing_key,
    unbound,
)
from aggregates.security import DEVIATION_NOT_RECORDED, LOCK_NOT_RECORDED, counts_against_key, lock_due
from aggregates.site import Sites
from aggregates.therapy import therapy_uuid
from ledger.app.config import database_url, persistence_env
from ledger.app.servicekey import SERVICE_PRINCIPAL, service_key, service_key_path
from ledger.audit.signatures import AheadVerifier, Job
from ledger.site.signing import sign_json
from ledger.store.logstore import LogStore
from ledger.store.migrations import PAYLOAD_DIGESTS, migrate_ledger
from ledger.store.recorders import ClaimRow
from ledger.store.security import SecurityLog
from ledger.store.sources import open_source
from ledger.store.streams import POLICY_STREAM, SITES_STREAM, PolicyStream, Principal, SiteStream, Therapy
from ledger.store.topics import PRINCIPAL_OPENED
from ledger.wire import events as ev
from ledger.wire.decoding import decode_body
from ledger.wire.dsse import PAYLOAD_TYPE, Opened, check_size, open_envelope, pae, verify
from ledger.wire.files import ExposedFileError
from ledger.wire.keys import KeyFileError, LoadedKey
from ledger.wire.messages import SecurityEntry
from ledger.wire.rejection import ReasonCode, Rejected

Clock = Callable[[], datetime]
_log = logging.getLogger("coi.security")
_NEVER = datetime.min.replace(tzinfo=UTC)
_CONFLICT_RETRIES = 8  # one envelope retried against other writers before giving up


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = ["PAYLOAD_DIGESTS", "LedgerApplication", "Outcome"]


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
    security: SecurityEntry | None = None  # a refusal: as the security log keeps it


def local_source(kind: str = "local") -> str:
    """A security log source for a submission made in this process: "KIND:USER@HOST"."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = str(os.getuid())
    return f"{kind}:{user}@{socket.gethostname()}"


@dataclass
class _Claims:
    """The rules' claims port: a batch's own claims, then those it looked up, then the table."""

    recorder: Any
    pending: dict[tuple[str, str], ClaimRow] = field(default_factory=dict)  # made by the batch
    known: dict[tuple[str, str], tuple[str, str] | None] = field(default_factory=dict)  # looked up

    def claimed(self, kind: str, value: str) -> tuple[str, str] | None:
        """(owner, digest) of a claimed value, this batch's claims included."""
        pending = self.pending.get((kind, value))
        if pending is not None:
            return pending[2], pending[3]
        if (kind, value) in self.known:
            return self.known[(kind, value)]
        return self.recorder.claims([(kind, value)]).get((kind, value))  # type: ignore[no-any-return]  # the ledger's recorders (ledger/store/recorders.py) add claims()

    def owner(self, kind: str, value: str) -> str | None:
        found = self.claimed(kind, value)
        return None if found is None else found[0]


@dataclass
class _Registry:
    """The rules' registry port: the administrators, read from the store when a rule asks."""

    app: LedgerApplication
    batch: _Batch

    def administrators(self) -> Iterator[PrincipalState]:
        return self.app._administrators(self.batch)


@dataclass
class _Batch:
    """Aggregates changed by a batch of envelopes, saved in one transaction."""

    claims: _Claims  # the claims the batch makes and consults
    aggregates: dict[UUID, Aggregate] = field(default_factory=dict)
    verdicts: dict[int, dict[int, tuple[bytes, bool]]] = field(default_factory=dict)  # envelope, sig
    outcomes: list[tuple[Outcome, UUID | None, int]] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # each raw's source, for the security log
    verified: bool = False  # every signature of the envelope being decided verified
    received: datetime = _NEVER  # the ledger's clock: recorded_at
    parsed: list[tuple[Opened, ev.Event] | Rejected] = field(default_factory=list)
    # the signature checks started by _prepare: (envelope, signature) places, public keys,
    # and what waits for the verdicts (no closure over the batch: that would be a cycle,
    # freed only by a full garbage collection)
    places: list[tuple[int, int]] = field(default_factory=list)
    publics: list[bytes] = field(default_factory=list)
    pending: Callable[[], list[bool]] = list
    # the policy the batch's records are judged by (refused: the log is under newer rules)
    policy: Policy | Rejected = LEGACY
    sites: Sites = field(default_factory=dict)  # the registered sites, the batch's own included
    # deviations the ledger opens once the batch is stored (aggregates/therapy.py bedside_deviation)
    deviations: list[dict[str, Any]] = field(default_factory=list)


class LedgerApplication(Application[UUID]):
    name = "CoiLedger"
    # Cached aggregates are kept current by this object's own writes; another writer (a
    # second ingest in the group) is noticed per batch (see _notice_other_writers). Deep
    # copies would cost more than the rules themselves.
    env = {  # noqa: RUF012 - the eventsourcing configuration hook
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }

    def __init__(
        self,
        url: str | None = None,
        batch_size: int = 50,
        verify_workers: int | None = None,
        clock: Clock = utc_now,
        writer: bool = True,
        source: str | None = None,
    ) -> None:
        """A writer migrates the store on start (ledger/store/migrations.py: `migrations`
        names what it applied); a reader changes nothing, and refuses a store it cannot read
        (SchemaError: run coi migrate, or coi init)."""
        url = url or database_url()
        env = persistence_env(url, writer)  # checks the URL first
        if not writer:
            open_source(url).close()
        super().__init__(env=env)
        # The event store's own table first, under the same lock as the migrations.
        # (create_table: the SQL recorders' own; eventsourcing's base class does not declare it)
        self.migrations = migrate_ledger(url, self.recorder.create_table) if writer else []  # type: ignore[attr-defined]
        self.batch_size = batch_size
        self.clock = clock  # the clock of record: receipt times, key validity, recorded_at
        self.verifier = AheadVerifier(verify_workers)
        # Refusals go to the security log (a reader refuses nothing); `source` names where
        # submissions without a source of their own come from.
        self.security_log = SecurityLog(url) if writer else None
        self.source = source or local_source()
        self._top = self.recorder.max_notification_id() or 0  # the log's end as we last saw it
        self._principals: set[UUID] = set()  # principals this object has read
        # The rules new records are judged by (aggregates/policy.py).

    def start_workers(self) -> None:
        """Fork the signature-checking workers now, before the caller starts threads of its own
        (they start on the first large batch otherwise)."""
        self.verifier.start()

    def close(self) -> None:
        self.verifier.close()
        if self.security_log is not None:
            self.security_log.close()
        super().close()

    # ---------------------------------------------------------------- submitting

    def submit(self, raw: bytes, now: datetime | None = None) -> Outcome:
        return next(iter(self.submit_many([raw], now=now)))

    def submit_many(
        self, raws: Iterable[bytes], now: datetime | None = None, sources: Iterable[str] | None = None
    ) -> Iterator[Outcome]:
        """Outcomes in input order; accepted envelopes are stored before they are reported,
        refused ones logged in the security log, from `sources` (one per envelope; default:
        this application's `source`). Envelopes are taken in batches of up to `batch_size`:
        one claims lookup and one transaction each; worker processes check the next batch's
        signatures while this one is decided and stored."""
        ahead: _Batch | None = None
        given = itertools.repeat(self.source) if sources is None else sources
        for chunk in _chunks(zip(raws, given, strict=sources is not None), self.batch_size):
            batch = self._prepare(chunk, now)
            if ahead is not None:
                yield from self._finish(ahead, now)
            ahead = batch
        if ahead is not None:
            yield from self._finish(ahead, now)

    def _notice_other_writers(self) -> None:
        """Someone else appended since our last look: forget the principals we cached, so a
        key rotated or revoked through another writer counts here from the next batch on.
        (Therapies need no such care: a stale one fails its save and is taken again.)"""
        top = self.recorder.max_notification_id() or 0
        if top != self._top and self.repository.cache is not None:
            for principal_id in self._principals:
                with contextlib.suppress(KeyError):
                    self.repository.cache.get(principal_id, evict=True)
            self._principals.clear()
            for stream in (POLICY_STREAM, SITES_STREAM):  # a policy or site record, too
                with contextlib.suppress(KeyError):
                    self.repository.cache.get(stream, evict=True)
        self._top = top

    def _prepare(self, chunk: list[tuple[bytes, str]], now: datetime | None) -> _Batch:
        """Decode a batch and start checking its signatures by the keys known now. A key
        rotated, revoked or registered before the batch is decided is harmless: a verdict
        counts only for the public key it was made with, and key validity is decided later."""
        at = now or self.clock()
        # The skew in force as this batch is read: a policy record in the batch before it
        # counts from the next batch on.
        skew = self.policy_in_force().policy.skew
        raws = [raw for raw, _ in chunk]
        parsed = [self._parse(raw, at, skew) for raw in raws]
        batch = _Batch(_Claims(self.recorder), raws=raws, received=at, parsed=parsed)
        batch.sources = [source for _, source in chunk]
        jobs: list[Job] = []
        places: list[tuple[int, int]] = []
        for index, p in enumerate(batch.parsed):
            if isinstance(p, Rejected):
                continue
            opened, _ = p
            message = pae(PAYLOAD_TYPE, opened.body)
            for i, (keyid, sig) in enumerate(opened.signatures):
                signer = self._principal(keyid.split(":", 1)[0], batch)
                key = None if signer is None else signer.state.keys.get(keyid)
                if key is not None:
                    jobs.append((key.public_raw, sig, message))
                    places.append((index, i))
        batch.places, batch.publics = places, [job[0] for job in jobs]
        batch.pending = self.verifier.submit(jobs)
        return batch

    def _finish(self, batch: _Batch, now: datetime | None, retried: int = 0) -> Iterator[Outcome]:
        """Decide each envelope of a prepared batch in order and store the batch."""
        self._notice_other_writers()
        batch.policy = judging(self.policy_in_force(batch).policy)
        batch.sites = self.sites(batch)
        keys = [key for p in batch.parsed if not isinstance(p, Rejected) for key in _claim_keys(p[1])]
        found = self.recorder.claims(keys)  # type: ignore[attr-defined]  # the ledger's recorders add claims()
        batch.claims.known = {key: found.get(key) for key in keys}
        for (index, i), public, ok in zip(batch.places, batch.publics, batch.pending(), strict=True):
            batch.verdicts.setdefault(index, {})[i] = (public, ok)
        for index, (raw, p) in enumerate(zip(batch.raws, batch.parsed, strict=True)):
            self._take(index, raw, p, batch)
        yield from self._flush(batch, now, retried)

    @staticmethod
    def _parse(raw: bytes, now: datetime, skew: timedelta) -> tuple[Opened, ev.Event] | Rejected:
        try:
            check_size(raw)
            opened = open_envelope(raw)
            return opened, decode_body(opened.body, now, skew)
        except Rejected as rejected:
            return rejected

    def _take(
        self, index: int, raw: bytes, parsed: tuple[Opened, ev.Event] | Rejected, batch: _Batch
    ) -> None:
        batch.verified = False
        if isinstance(parsed, Rejected):
            outcome = _rejection(Outcome("rejected"), parsed)
            outcome.security = self._refusal(index, parsed, None, batch)
            batch.outcomes.append((outcome, None, 0))
            return
        opened, body = parsed
        outcome = Outcome(
            "accepted", str(body.event_id), str(type(body).__struct_config__.tag), getattr(body, "coi", None)
        )
        try:
            target = self._decide(raw, opened, body, batch, batch.verdicts.get(index, {}))
        except Rejected as rejected:
            if self._stored_meanwhile(opened, body):
                outcome.status = "duplicate"
                batch.outcomes.append((outcome, None, 0))
                return
            outcome.security = self._refusal(index, rejected, body, batch)
            batch.outcomes.append((_rejection(outcome, rejected), None, 0))
            return
        if target is None:
            outcome.status = "duplicate"
            batch.outcomes.append((outcome, None, 0))
        else:
            batch.outcomes.append((outcome, target.id, target.version))

    def _stored_meanwhile(self, opened: Opened, body: ev.Event) -> bool:
        """This very envelope was stored by another writer after the batch looked for it: the
        rules then judge it against the state it made (already enrolled, label in use), and it
        is a duplicate, not a rejection. Claims are written only with what is accepted."""
        key = ("event", str(body.event_id))
        found = _Claims(self.recorder).claimed(*key)  # from the table: the batch's look is stale
        return found is not None and found[1] == hashlib.sha256(opened.body).hexdigest()

    def _flush(self, batch: _Batch, now: datetime | None, retried: int = 0) -> Iterator[Outcome]:
        if batch.aggregates:
            try:
                recordings = self._store(batch)
            except IntegrityError:
                # Another writer stored a version or a claim this batch assumed free: forget
                # what the batch assumed and take its envelopes again, one at a time, on
                # fresh state (a concurrent duplicate then shows up as one). A busy writer
                # beside this one can win again, so a few times.
                self._evict(batch)
                if retried >= _CONFLICT_RETRIES:
                    raise
                for one in zip(batch.raws, batch.sources, strict=True):
                    yield from self._finish(self._prepare([one], now), now, retried + 1)
                return
            except BaseException:
                self._evict(batch)  # cached aggregates hold changes that were not stored
                raise
            sequence = {
                (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
                for r in recordings
            }
            self._top = max(self._top, *sequence.values())
            for outcome, aggregate_id, version in batch.outcomes:
                if aggregate_id is not None:
                    outcome.sequence = sequence[(aggregate_id, version)]
        if self.security_log is not None:
            refused = [o.security for o, _, _ in batch.outcomes if o.security is not None]
            self.security_log.add(refused)
            locked = self._lock_keys(refused, batch, now)
            for outcome, _, _ in batch.outcomes:  # the signer learns it here, not at the next try
                if outcome.security is not None and outcome.security.keyid in locked:
                    outcome.message = (
                        f"{outcome.message}; key {outcome.security.keyid} is now LOCKED (key_locked) "
                        "until an administrator runs coi security unlock"
                    )
            for deviation in batch.deviations:
                self._open_deviation(deviation, now)
        for outcome, _, _ in batch.outcomes:
            yield outcome

    def _lock_keys(self, refused: list[SecurityEntry], batch: _Batch, now: datetime | None) -> set[str]:
        """Lock each key whose authenticated failures, counted over the security log since its
        last lock or unlock, reach the policy's threshold (aggregates/security.py), by a
        registry record the ledger's service principal signs (ledger/app/servicekey.py); the
        keys locked."""
        assert self.security_log is not None
        locked: set[str] = set()
        if isinstance(batch.policy, Rejected):
            return locked
        for keyid in sorted({e.keyid for e in refused if e.keyid is not None and counts_against_key(e)}):
            stream = self._principal(keyid.split(":", 1)[0], batch)
            key = None if stream is None else stream.state.keys.get(keyid)
            if key is None or key.locked:
                continue
            failures = list(self.security_log.entries(keyid=keyid, since=key.lock_changed_at))
            if lock_due(failures, keyid, batch.policy):
                digests = {f.payload_sha256 for f in failures if counts_against_key(f) and f.payload_sha256}
                if self._lock(keyid, sorted(digests), now):
                    locked.add(keyid)
        return locked

    def locker(self) -> tuple[LoadedKey | None, str]:
        """The service key that signs the ledger's own records (locks, deviations) and the site
        it signs locks at (where its principal was registered), or None and why there is none."""
        log_origin = LogStore(self.recorder).origin()
        where = service_key_path(log_origin)
        try:
            found = service_key(log_origin)
        except (KeyFileError, ExposedFileError) as exc:  # said like a missing key: a refusal must not fail
            return None, str(exc)
        if found is None:
            return (
                None,
                f"no service key at {where or '(none: the log has no origin yet)'}: run coi security service",
            )
        stream = self._principal(found.principal_id, _Batch(_Claims(self.recorder)))
        if stream is None:
            return None, f"{found.principal_id} of {where} is not registered: run coi security service"
        return found, stream.state.registered_site

    def _lock(self, keyid: str, digests: list[str], now: datetime | None) -> bool:
        """Whether the lock record was stored."""
        at = now or self.clock()
        principal_id = keyid.split(":", 1)[0]
        body = {
            "type": "principal_key_locked", "event_id": str(uuid4()), "occurred_at": at.isoformat(),
            "principal_id": principal_id, "keyid": keyid, "failures": digests[-100:],
            "reason": f"{len(digests)} authenticated failures (coi security log --principal {principal_id})",
        }  # fmt: skip
        why = self._append_as_service(body, at, now)
        if why is not None:
            message = f"{keyid} reached the lock threshold but is NOT locked: {why}"
            self._not_recorded(LOCK_NOT_RECORDED, message, at, principal_id, keyid)
        return why is None

    def _open_deviation(self, deviation: dict[str, Any], now: datetime | None) -> None:
        """Open the deviation a bedside mismatch calls for, signed by the service principal."""
        at = now or self.clock()
        body = {"event_id": str(uuid4()), "occurred_at": at.isoformat(), **deviation}
        why = self._append_as_service(body, at, now)
        if why is not None:
            message = (
                f"{deviation['coi']}: a bedside identity mismatch calls for deviation "
                f"{deviation['deviation_id']}, which is NOT opened: {why}"
            )
            self._not_recorded(DEVIATION_NOT_RECORDED, message, at, SERVICE_PRINCIPAL, None)

    def _append_as_service(self, body: dict[str, Any], at: datetime, now: datetime | None) -> str | None:
        """Sign `body` with the service key (its actor; its site, unless the body names one) and
        submit it: None once stored, else why not (no usable key, or the ledger refused it)."""
        service, site = self.locker()
        if service is None:
            return site
        try:
            envelope = sign_json({"site": site, **body, "actor": service.principal_id}, [service], at)
        except Rejected as why:  # a refusal is never turned into a failure of its batch
            return why.message
        for outcome in self.submit_many([envelope], now, sources=["ledger"]):
            if outcome.status == "rejected":
                return f"the ledger refused it: {outcome.code}: {outcome.message}"
        return None

    def _not_recorded(self, code: str, message: str, at: datetime, principal: str, keyid: str | None) -> None:
        """Said loudly: in the log, and in the security log, where `coi security log` shows it."""
        assert self.security_log is not None
        _log.error("security: %s", message)
        said = SecurityEntry(
            code=code, message=message, at=at.astimezone(UTC).isoformat(), source="ledger",
            authenticated=True, envelope_sha256="", principal=principal, keyid=keyid,
        )  # fmt: skip
        self.security_log.add([said])

    def _refusal(self, index: int, rejected: Rejected, body: ev.Event | None, batch: _Batch) -> SecurityEntry:
        """The security log's entry for a refused envelope: who and which key it claims (the
        actor and the actor's signature, else the first signature's), and whether the
        signatures proved it (aggregates/security.py)."""
        raw, parsed = batch.raws[index], batch.parsed[index]
        opened: Opened | None = None if isinstance(parsed, Rejected) else parsed[0]
        if opened is None:  # a body the schema refused may still sit in a well-formed envelope
            with contextlib.suppress(Rejected):
                opened = open_envelope(raw)
        keyids = [] if opened is None else [keyid for keyid, _ in opened.signatures]
        principal = body.actor if body is not None else (keyids[0].split(":", 1)[0] if keyids else None)
        keyid = next((k for k in keyids if k.split(":", 1)[0] == principal), keyids[0] if keyids else None)
        return SecurityEntry(
            code=str(rejected.code),
            message=rejected.message,
            at=batch.received.astimezone(UTC).isoformat(),
            source=batch.sources[index],
            authenticated=batch.verified,
            envelope_sha256=hashlib.sha256(raw).hexdigest(),
            payload_sha256=None if opened is None else hashlib.sha256(opened.body).hexdigest(),
            principal=principal,
            keyid=keyid,
            event_id=None if body is None else str(body.event_id),
            field=rejected.field,
        )

    def _store(self, batch: _Batch) -> list[Recording[UUID]]:
        """Application.save for a batch, minus its per-object runtime Protocol checks, which
        cost more than the domain rules with dozens of aggregates per save."""
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in batch.aggregates.values():
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs["claims"] = list(batch.claims.pending.values())
        recordings = self._record(processing)
        self._notify(recordings)
        return recordings

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

    def _decide(
        self,
        raw: bytes,
        opened: Opened,
        body: ev.Event,
        batch: _Batch,
        verdicts: dict[int, tuple[bytes, bool]],
    ) -> Aggregate | None:
        """The aggregate that records this envelope, None for an exact duplicate."""
        coi = getattr(body, "coi", None)
        digest = hashlib.sha256(opened.body).hexdigest()
        signers = self._signers(opened, body, batch, verdicts)
        batch.verified = True

        claimed = batch.claims.claimed("event", str(body.event_id))
        if claimed is not None:
            if claimed[1] != digest:
                raise Rejected(
                    ReasonCode.DUPLICATE_CONFLICT,
                    f"event_id {body.event_id} was already recorded with different content; "
                    "give a new event a new event_id",
                    "event_id",
                )
            return None

        sites = batch.sites
        problem = authorize(body, signers, batch.received, _judging(batch), sites)
        if problem is not None:
            raise problem
        envelope = raw.decode()
        claims: list[ClaimRow] = [("event", str(body.event_id), coi or "registry", digest)]
        if isinstance(body, ev.SiteRegistered):
            target = self._site_change(body, envelope, batch)
        elif isinstance(body, ev.PRINCIPAL_TYPES):
            target = self._registry_change(body, signers, sites, envelope, batch, claims)
        elif isinstance(body, ev.PolicyAdopted):
            target = self._policy_change(body, signers, envelope, batch)
        else:
            target = self._journey_step(body, signers, sites, envelope, batch, claims)
        for claim in claims:
            batch.claims.pending[claim[:2]] = claim
        batch.aggregates[target.id] = target
        return target

    def _signers(
        self, opened: Opened, body: ev.Event, batch: _Batch, verdicts: dict[int, tuple[bytes, bool]]
    ) -> dict[str, PrincipalState]:
        """Verify every signature (or take the batch's verdict for it, if made with the same key)
        and the key's state (aggregates/principal.py); return the signers."""
        signers: dict[str, PrincipalState] = {}
        for i, (keyid, sig) in enumerate(opened.signatures):
            stream = self._principal(keyid.split(":", 1)[0], batch)
            state = None if stream is None else stream.state
            public = signing_key(state, body, keyid, batch.claims)
            if public is None:
                raise Rejected(
                    ReasonCode.UNKNOWN_KEY,
                    f"key {keyid!r} is not registered; register it with coi principals",
                    f"signatures[{i}].keyid",
                )
            verdict = verdicts.get(i)
            # The PAE message only for a signature the batch has no verdict for (a key
            # registered or rotated within it): _prepare already built it for the others.
            ok = (
                verdict[1]
                if verdict is not None and verdict[0] == public
                else verify(public, sig, pae(PAYLOAD_TYPE, opened.body))
            )
            if not ok:
                raise Rejected(
                    ReasonCode.BAD_SIGNATURE,
                    f"signature by {keyid} does not verify over this payload",
                    f"signatures[{i}].sig",
                )
            if state is None:
                continue  # the genesis administrator, judged below
            problem = key_problem(state, keyid, body.occurred_at, batch.received, _judging(batch))
            if problem is not None:
                raise problem
            signers[state.principal_id] = state
        if isinstance(body, ev.PrincipalRegistered) and not signers:
            problem = genesis_problem(body)
            if problem is not None:
                raise problem
            # A provisional state to authorise against; the stored one is made from the envelope.
            signers[body.principal_id] = principal.evolve(None, body)
        return signers

    def _principal(self, principal_id: str, batch: _Batch) -> Principal | None:
        found = self._get(principal_uuid(principal_id), batch)
        if isinstance(found, Principal):
            self._principals.add(found.id)
            return found
        return None

    def _registry_change(
        self,
        body: ev.RegistryEvent,
        signers: dict[str, PrincipalState],
        sites: Sites,
        envelope: str,
        batch: _Batch,
        claims: list[ClaimRow],
    ) -> Aggregate:
        existing = self._principal(body.principal_id, batch)
        roles = {pid: signer.roles for pid, signer in signers.items()}
        ctx = Context(batch.received, _judging(batch), batch.claims, _Registry(self, batch), roles, sites)
        problem = principal.decide(None if existing is None else existing.state, body, ctx)
        if problem is not None:
            raise problem
        if existing is None:
            if batch.claims.owner(*GENESIS) is None:
                claims.append((*GENESIS, body.principal_id, ""))
            return Principal.open(principal_uuid(body.principal_id), envelope, batch.received)
        existing.record(envelope, body, batch.received)
        return existing

    def _administrators(self, batch: _Batch) -> Iterator[PrincipalState]:
        """Every principal with the admin role. Read only when an administrator is revoked,
        authority granted or a policy adopted, which is rare: the registry keeps no index of
        roles."""
        return (p for p in self.registered(batch) if "admin" in p.roles)

    def registered(self, batch: _Batch | None = None) -> Iterator[PrincipalState]:
        """Every registered principal as it stands, in registration order."""
        batch = batch or _Batch(_Claims(self.recorder))
        start = 1
        while True:
            found = self.recorder.select_notifications(start=start, limit=500, topics=[PRINCIPAL_OPENED])
            for n in found:
                stream = self._get(UUID(str(n.originator_id)), batch)
                if isinstance(stream, Principal):
                    yield stream.state
            if len(found) < 500:
                return
            start = found[-1].id + 1

    # ------------------------------------------------------------------ sites

    def sites(self, batch: _Batch | None = None) -> Sites:
        """The registered sites, this batch's records included (cached like the policy)."""
        found = self._get(SITES_STREAM, batch or _Batch(_Claims(self.recorder)))
        return found.state if isinstance(found, SiteStream) else {}

    def _site_change(self, body: ev.SiteRegistered, envelope: str, batch: _Batch) -> Aggregate:
        stream = self._get(SITES_STREAM, batch)
        problem = site.decide(stream.state if isinstance(stream, SiteStream) else {}, body)
        if problem is not None:
            raise problem
        if isinstance(stream, SiteStream):
            stream.record(envelope, body, batch.received)
        else:
            stream = SiteStream.open(SITES_STREAM, envelope, batch.received)
        batch.sites = stream.state  # from the next record of the batch on
        return stream

    def registry_records(self, principal_id: str) -> list[tuple[datetime, str]]:
        """(recorded_at, envelope) of every registry record of one principal, oldest first."""
        return [
            (e.timestamp, e.envelope)
            for e in self.repository.event_store.get(principal_uuid(principal_id))
            if isinstance(e, Principal.Opened | Principal.Recorded)
        ]

    # ------------------------------------------------------------------ policy

    def policy_in_force(self, batch: _Batch | None = None) -> PolicyState:
        """The policy in force (LEGACY before the first policy record), this batch's records
        included; cached like the principals, and forgotten when another writer appends."""
        found = self._get(POLICY_STREAM, batch or _Batch(_Claims(self.recorder)))
        return found.state if isinstance(found, PolicyStream) else PolicyState()

    def _policy_change(
        self, body: ev.PolicyAdopted, signers: dict[str, PrincipalState], envelope: str, batch: _Batch
    ) -> Aggregate:
        """A new boundary, by the rules of aggregates/policy.py; from the next record of the
        batch on, its settings are in force."""
        at = batch.received
        admins = frozenset(pid for pid, p in signers.items() if "admin" in p.roles)
        everyone = list(self.registered(batch))
        ctx = PolicyContext(
            admins,
            sum(1 for a in everyone if can_administer(a, at)),
            unbound(everyone, batch.sites, at),
        )
        stream = self._get(POLICY_STREAM, batch)
        state = stream.state if isinstance(stream, PolicyStream) else PolicyState()
        problem = decide_policy(state, body, ctx)
        if problem is not None:
            raise problem
        if isinstance(stream, PolicyStream):
            stream.record(envelope, body, at)
        else:
            stream = PolicyStream.open(POLICY_STREAM, envelope, at)
        batch.policy = judging(policy_of(body))
        return stream

    def _journey_step(
        self,
        body: ev.JourneyEvent,
        signers: dict[str, PrincipalState],
        sites: Sites,
        envelope: str,
        batch: _Batch,
        claims: list[ClaimRow],
    ) -> Aggregate:
        stream = self._get(therapy_uuid(body.coi), batch)
        assert stream is None or isinstance(stream, Therapy)
        roles = {pid: signer.roles for pid, signer in signers.items()}
        bound = {pid: signer.sites for pid, signer in signers.items()}
        ctx = Context(batch.received, _judging(batch), batch.claims, _NO_REGISTRY, roles, sites, bound)
        problem = therapy.decide(None if stream is None else stream.state, body, ctx)
        if problem is not None:
            raise problem
        if isinstance(body, ev.ApheresisCollected):
            claims.append(("din", body.din, body.coi, ""))
        if isinstance(body, ev.ManufacturingStarted):
            claims.append(("cartridge", body.cartridge_id, body.coi, ""))
        if stream is None:
            return Therapy.open(therapy_uuid(body.coi), envelope, batch.received)
        stream.record(envelope, body, batch.received)
        deviation = therapy.bedside_deviation(stream.state, body)
        if deviation is not None:  # opened once the batch is stored
            batch.deviations.append(deviation)
        return stream

    # ------------------------------------------------------------------ reading

    def records(self, start: int = 1, topics: list[str] | None = None) -> Iterator[tuple[int, datetime, str]]:
        """(sequence, recorded_at, envelope) of every stored envelope (of the events filed
        under `topics`, if given), in log order (every stored event is one envelope: the
        claims index lives outside the event store)."""
        decoder = msgspec.json.Decoder(dict[str, object])
        while True:
            notifications = self.recorder.select_notifications(start=start, limit=500, topics=topics or ())
            if not notifications:
                return
            for n in notifications:
                state = decoder.decode(n.state)
                stamp = state["timestamp"]
                assert isinstance(stamp, dict)
                yield n.id, datetime.fromisoformat(str(stamp["_data_"])), str(state["envelope"])
            start = notifications[-1].id + 1


_NO_REGISTRY = Administrators()  # a journey step consults no administrator


def _judging(batch: _Batch) -> Policy:
    """The policy this batch's records are judged by; refused as a whole when the log is under
    newer rules than this code knows."""
    if isinstance(batch.policy, Rejected):
        raise batch.policy
    return batch.policy


def _chunks(raws: Iterable[tuple[bytes, str]], most: int) -> Iterator[list[tuple[bytes, str]]]:
    """Chunks of 64, 256, 1024 ... up to `most`: the first batch's signatures are the only
    ones nobody overlaps with work, so it is small; checking a batch's signatures on two
    cores takes about as long as deciding and storing a batch a quarter its size, and each
    batch costs a commit, so they grow fast."""
    size = min(64, most)
    chunk: list[tuple[bytes, str]] = []
    for raw in raws:
        chunk.append(raw)
        if len(chunk) >= size:
            yield chunk
            chunk = []
            size = min(4 * size, most)
    if chunk:
        yield chunk


def _claim_keys(body: ev.Event) -> list[tuple[str, str]]:
    """The claims deciding on `body` will consult, so a batch looks them up in one query."""
    keys = [("event", str(body.event_id))]
    if isinstance(body, ev.ApheresisCollected | ev.LabelPrinted):
        keys.append(("din", body.din))
    elif isinstance(body, ev.ManufacturingStarted):
        keys.append(("cartridge", body.cartridge_id))
    elif isinstance(body, ev.PrincipalRegistered):
        keys.append(GENESIS)
    return keys


def _rejection(outcome: Outcome, rejected: Rejected) -> Outcome:
    outcome.status = "rejected"
    outcome.code = rejected.code
    outcome.message = rejected.message
    outcome.field = rejected.field
    return outcome
