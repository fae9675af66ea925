"""`coi verify`: re-check everything the ledger ever stored, from the raw rows.

For every record, in global sequence order: its bytes against the Merkle leaf committed for
it, every site signature against the key state (replayed from the registry records before
it) at its `occurred_at`, and its chain link to the previous record of the same aggregate.
Each record is judged by the policy in force at its place (aggregates/policy.py): the policy
records are replayed by the rules that accepted them, so a lowered version fails, and key
validity is judged at occurred_at before the first boundary (version 0) and at recorded_at,
with the rotation grace in force, from version 1 on.
Every record is also judged again by the domain rules, as the ledger judged it
(ledger/audit/replay.py): a genuinely signed record the ledger would have refused is named
with its reason code. Records stored but not yet in the Merkle log are counted.
The tree is recomputed from the records; every stored node and every checkpoint root must
match, and every checkpoint must carry a valid signature by a trusted ledger key. Checkpoints
saved outside the ledger (ledger/audit/saved.py) are held against the roots recomputed at
their sizes during the same walk. The first record that fails is named. Incremental mode
resumes from the last checkpoint a previous run verified, kept in a state file outside the
database.

Records are read and checked in chunks on the calling thread; worker processes verify the
signatures of one chunk while the next is read. They come from a record source
(ledger/audit/source.py): the verifier imports no database driver and no event store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from aggregates import principal, site
from aggregates.base import ClaimsTable
from aggregates.policy import PolicyContext, PolicyState
from aggregates.policy import decide as decide_policy
from aggregates.policy import evolve as evolve_policy
from aggregates.principal import (
    GENESIS,
    PrincipalState,
    can_administer,
    genesis_problem,
    key_problem,
    signing_key,
    unbound,
)
from aggregates.site import SiteState
from ledger.audit import saved as kept
from ledger.audit.replay import Claimed, Item, Refusal, Replayer, refusal, registry_problem
from ledger.audit.signatures import BackgroundVerifier, TaggedJob
from ledger.audit.source import RecordSource, StoredCheckpoint
from ledger.audit.witnessing import ClockCheck, Witnessing, quorum_problem, witnessed_times
from ledger.transparency import checkpoint as notes
from ledger.transparency import merkle
from ledger.transparency.records import FIRST_PREV, Record, canonical, payload_of
from ledger.wire import events as ev
from ledger.wire.dsse import PAYLOAD_TYPE, Opened, open_envelope, pae
from ledger.wire.files import write_private
from ledger.wire.rejection import Rejected

CHUNK = 4000
# A run of fewer records than this checks signatures and replays the rules in the calling
# process (an offline bundle of one patient): forking the workers would cost more than it saves.
INLINE_BELOW = 256
_REGISTRY = ev.REGISTRY_TYPES
_REGISTRY_TAGS = frozenset(t.__struct_config__.tag for t in _REGISTRY)
_DECODED_TAGS = _REGISTRY_TAGS | {ev.PolicyAdopted.__struct_config__.tag}


class _Header(msgspec.Struct):
    """What the checks need from a body outside the registry. The ledger checked the whole
    schema (patterns, DIN check characters) when it accepted the body; checking it again for
    every body would be over a quarter of the verifier's own work, and is not what
    verification proves: that these are the bytes that were signed, chained and logged."""

    type: str
    occurred_at: ev.UtcTime


class _Claiming(_Header):
    """With the rules replayed: what the replay decides across patients before it replays
    each one (replay.py). Read only then: the event id alone costs a few percent."""

    event_id: UUID
    coi: str | None = None
    din: str | None = None
    cartridge_id: str | None = None


_header = msgspec.json.Decoder(_Header)
_claiming = msgspec.json.Decoder(_Claiming)
_body = msgspec.json.Decoder(ev.StoredEvent)  # as accepted then, not as the door checks now


def _decode(body: bytes, replay: bool = False) -> ev.Event | _Header:
    """Registry and policy records in full, to replay key state and policy; the others' header."""
    header = (_claiming if replay else _header).decode(body)
    return _body.decode(body) if header.type in _DECODED_TAGS else header


@dataclass(frozen=True)
class Failure:
    sequence: int | None  # None when no record can be named (e.g. a checkpoint beyond the log)
    reason: str

    def __str__(self) -> str:
        where = f"sequence {self.sequence}" if self.sequence is not None else "the log"
        return f"{where}: {self.reason}"


@dataclass
class Report:
    records: int = 0
    leaves: int = 0
    checkpoints: int = 0
    streams: int = 0
    resumed_from: int = 0
    saved: int = 0  # checkpoints saved outside the ledger that it was held against
    unsealed: int = 0  # records after the latest checkpoint: no signed checkpoint covers them yet
    unsealed_from: int | None = None  # the first of them
    latest_note: str | None = None  # the latest checkpoint's note, verified when there is no failure
    failure: Failure | None = None
    replayed: bool = False  # the domain rules were replayed over every record checked
    unlogged: int = 0  # records stored after the last leaf: not yet in the Merkle log
    unlogged_from: int | None = None  # the first of them


class State(msgspec.Struct):
    """What an incremental run resumes from: the last verified checkpoint and everything the
    checks need about the records before it."""

    size: int
    root: str
    last_sequence: int
    edge: list[str]
    streams: dict[str, tuple[int, str]]
    registry: list[str]  # the registry envelopes, in order, to rebuild key state
    policies: list[str] = []  # the policy envelopes, in order, to rebuild the policy in force
    latest_recorded_at: str | None = None  # for the clock check (absent in older state files)


@dataclass
class _Run:
    tree: merkle.CompactRange
    streams: dict[str, tuple[int, str]]
    registry: list[str]
    principals: dict[str, PrincipalState] = field(default_factory=dict)
    sites: dict[str, SiteState] = field(default_factory=dict)  # the registered sites, by code
    claims: ClaimsTable = field(default_factory=ClaimsTable)  # the genesis, once claimed
    policy: PolicyState = field(default_factory=PolicyState)  # in force at the current record
    policies: list[str] = field(default_factory=list)
    last_sequence: int = 0
    clock: ClockCheck = field(default_factory=lambda: ClockCheck([]))
    first_unsealed: int | None = None  # the first record after the last checkpoint that matched
    first_uncovered: int | None = None  # the first record after the latest checkpoint
    saved_roots: dict[int, bytes] = field(default_factory=dict)  # recomputed, at the saved notes' sizes
    snapshot: State | None = None
    unlogged: int = 0  # records after the last leaf
    unlogged_from: int | None = None
    claimed: Claimed = field(default_factory=Claimed)  # the replay's claims across patients
    replay: list[Item] = field(default_factory=list)  # the chunk's journey records, for the workers


class LedgerVerifier:
    def __init__(
        self,
        source: RecordSource,
        trusted: list[notes.NoteVerifier],
        progress: Callable[[Report], None] | None = None,
        workers: int | None = None,
        saved: list[kept.SavedNote] | None = None,
        cosigned: list[str] | None = None,
        witnessing: Witnessing | None = None,
        replay: bool = True,
        records: int | None = None,
    ) -> None:
        """`records`: how many records the run checks, where the source's log size does not say
        (a bundle's records are not a whole log)."""
        self.source = source
        self.records = records
        self.trusted = trusted
        self.progress = progress
        self.workers = workers
        self.saved = saved or []
        self._saved_sizes = {s.checkpoint.size for s in self.saved}
        self._latest = 0  # the latest checkpoint's tree size
        self.cosigned = cosigned or []  # checkpoint notes with witnesses' cosignatures
        self.witnessing = witnessing
        self.replay = replay

    def run(self, state_file: Path | None = None) -> Report:
        report = Report()
        self._run(report, state_file)
        return report

    # ------------------------------------------------------------------ steps

    def _run(self, report: Report, state_file: Path | None) -> None:
        checkpoints = self.source.checkpoints()
        report.checkpoints = len(checkpoints)
        self._latest = checkpoints[-1].size if checkpoints else 0
        report.latest_note = checkpoints[-1].note if checkpoints else None
        failure = self._check_notes(checkpoints)
        run = self._resume(state_file, checkpoints, report) if failure is None else None
        if failure is None and run is not None:
            failure = self._witnessed(run, checkpoints)
        if failure is None and run is not None:
            failure = self._check_records(run, checkpoints, report, keep_state=state_file is not None)
        if failure is None and run is not None:
            failure = self._check_coverage(run, checkpoints)
        if failure is None and run is not None and self.saved:
            failure = self._check_saved(run, checkpoints, report)
        if failure is None and run is not None:
            failure = self._check_sealed(run, report)
        if failure is None and self.witnessing is not None:
            latest = checkpoints[-1].size if checkpoints else None
            problem = quorum_problem(latest, self.cosigned, self.witnessing)
            failure = None if problem is None else Failure(None, problem)
        report.failure = failure
        if failure is None and run is not None and run.snapshot is not None and state_file is not None:
            write_private(state_file, msgspec.json.encode(run.snapshot))

    def _check_notes(self, checkpoints: list[StoredCheckpoint]) -> Failure | None:
        previous = 0
        for stored in checkpoints:
            try:
                parsed, _ = notes.verify(stored.note, self.trusted)
            except notes.NoteError as exc:  # no record is at fault: the checkpoint is named
                return Failure(
                    None, f"the checkpoint at tree size {stored.size}: {exc}{self._signed_by(stored)}"
                )
            if (parsed.size, parsed.root) != (stored.size, stored.root):
                return Failure(
                    self.source.leaf_sequence(previous),
                    f"checkpoint at tree size {stored.size}: its row does not match its signed note",
                )
            previous = stored.size
        return None

    def _signed_by(self, stored: StoredCheckpoint) -> str:
        """Which keys that could be the ledger's signed a checkpoint no trusted key signed (not
        the witnesses' cosignatures), and which were trusted."""
        try:
            origin = notes.parse(stored.note)[0].origin
        except notes.NoteError:
            return ""
        signed = ", ".join(f"key {kid.hex()}" for kid in kept.ledger_key_ids(stored.note)) or "no ledger key"

        def named(name: str, kid: bytes) -> str:
            return f"key {kid.hex()}" + ("" if name == origin else f" of the log {name}")

        trusted = ", ".join(named(k.name, k.key_id) for k in self.trusted) or "none"
        return f" (signed by {signed}; trusted: {trusted})"

    def _witnessed(self, run: _Run, checkpoints: list[StoredCheckpoint]) -> Failure | None:
        """The witnessed checkpoints' cosignature times, for the clock check."""
        keys = self.witnessing.keys if self.witnessing is not None else []
        times, problem = witnessed_times(self.cosigned, {c.size: c.root for c in checkpoints}, keys)
        run.clock = ClockCheck(times, last=run.clock.last)  # last: from an incremental state
        return None if problem is None else Failure(None, problem)

    def _resume(self, state_file: Path | None, checkpoints: list[StoredCheckpoint], report: Report) -> _Run:
        if state_file is None or not state_file.exists():
            return _fresh()
        state = msgspec.json.decode(state_file.read_bytes(), type=State)
        if any(size <= state.size for size in self._saved_sizes):
            # Roots below the resume point are not recomputed: saved notes there need a full walk.
            return _fresh()
        stored = next((c for c in checkpoints if c.size == state.size), None)
        if stored is None or stored.root.hex() != state.root:
            raise StateMismatchError(
                f"the checkpoint at tree size {state.size} this verifier verified before is "
                f"{'gone' if stored is None else 'changed'}: the ledger was changed since"
            )
        run = _Run(
            merkle.CompactRange(state.size, [bytes.fromhex(h) for h in state.edge]),
            dict(state.streams),
            list(state.registry),
            last_sequence=state.last_sequence,
        )
        for envelope in run.registry:
            self._apply_registry(run, _body.decode(payload_of(envelope)), envelope)
        for envelope in state.policies:
            _replay_policy(run, envelope)
        if state.latest_recorded_at is not None:
            run.clock.last = datetime.fromisoformat(state.latest_recorded_at)
        report.resumed_from = state.size
        report.leaves = state.size
        return run

    def _check_records(
        self, run: _Run, checkpoints: list[StoredCheckpoint], report: Report, keep_state: bool
    ) -> Failure | None:
        """Checks chunk after chunk on this thread, while worker processes verify the
        signatures of the chunk before; stops at the first failure in sequence order."""
        roots = {c.size: c.root for c in checkpoints}
        latest = checkpoints[-1].size if checkpoints else 0
        records = self.records if self.records is not None else self.source.size() - run.tree.size
        inline = records < INLINE_BELOW
        signatures = BackgroundVerifier(self.workers, inline)
        # A resumed run has not the patients' states: a full run replays the rules.
        replayer = Replayer(signatures.workers, inline) if self.replay and not report.resumed_from else None
        report.replayed = replayer is not None
        try:
            while True:
                rows, leaves, stored_nodes = self.source.chunk(run.last_sequence, run.tree.size, CHUNK)
                jobs: list[TaggedJob] = []
                failure = None
                for row in rows:
                    failure = self._check_one(run, row, leaves, stored_nodes, roots, jobs, replayer)
                    if failure is not None:
                        break
                    report.records += 1
                    if keep_state and run.tree.size == latest and run.snapshot is None:
                        self._snapshot(run, roots)
                signatures.submit(jobs)
                if replayer is not None:
                    replayer.submit(run.replay)
                    run.replay = []
                report.leaves = run.tree.size
                report.streams = len(run.streams)
                report.unlogged, report.unlogged_from = run.unlogged, run.unlogged_from
                forged: int | None = None
                refused: Refusal | None = None
                if failure is None and rows:
                    # The workers check this chunk while the next chunk is checked here.
                    forged = signatures.first_invalid(pending=1)
                    refused = replayer.first_refusal(pending=1) if replayer is not None else None
                    if forged is None and refused is None:
                        if self.progress:
                            self.progress(report)
                        continue
                # The first failure in sequence order wins, whichever check found it.
                if forged is None:
                    forged = signatures.first_invalid()
                if replayer is not None:
                    refused = replayer.first_refusal()
                found = [failure, None if forged is None else _forged(forged)]
                found.append(None if refused is None else Failure(*refused))
                return min((f for f in found if f is not None), key=_place, default=None)
        finally:
            signatures.close()
            if replayer is not None:
                replayer.close()

    def _check_one(
        self,
        run: _Run,
        row: Any,
        leaves: dict[int, int],
        stored_nodes: list[dict[int, bytes]],
        roots: dict[int, bytes],
        jobs: list[TaggedJob],
        replayer: Replayer | None,
    ) -> Failure | None:
        sequence = self.source.sequence(row)
        index = run.tree.size
        if index == self._latest and run.first_uncovered is None:
            run.first_uncovered = sequence
        expected = leaves.get(index)
        if expected is not None and expected != sequence:
            if expected < sequence:
                return Failure(
                    expected, f"record missing: leaf {index} commits to it but the store has no such row"
                )
            return Failure(sequence, f"record not in the log: leaf {index} commits to sequence {expected}")
        try:
            record = self.source.record(row)
            opened = open_envelope(record.envelope)
            body = _decode(opened.body, replayer is not None)
        except (msgspec.MsgspecError, Rejected, KeyError, ValueError) as exc:
            return Failure(sequence, f"the stored row cannot be read as a record ({exc})")
        leaf = merkle.leaf_hash(canonical(record))
        run.last_sequence = sequence
        if expected is None:
            run.unlogged += 1
            run.unlogged_from = run.unlogged_from or sequence
        else:
            if run.first_unsealed is None:
                run.first_unsealed = sequence
            for level, idx, h in run.tree.append(leaf):
                stored = stored_nodes[level].get(idx)
                if stored is None:
                    what = "leaf hash" if level == 0 else f"tree node ({level}, {idx})"
                    return Failure(sequence, f"the Merkle log's {what} for it is missing: its table was cut")
                if stored != h:
                    what = (
                        "record's bytes differ from"
                        if level == 0
                        else f"tree node ({level}, {idx}) differs from"
                    )
                    return Failure(sequence, f"the {what} what the Merkle log committed")
            if run.tree.size in self._saved_sizes:
                run.saved_roots[run.tree.size] = run.tree.root()
            if run.tree.size in roots:
                if roots[run.tree.size] != run.tree.root():
                    # Name the first record the bad checkpoint claims beyond the last good one.
                    return Failure(
                        run.first_unsealed,
                        f"the signed checkpoint at tree size {run.tree.size} is not consistent with the "
                        "records (nor with the checkpoints before it)",
                    )
                run.first_unsealed = None
        # After the leaf check: a rewritten recorded_at is changed bytes before it is a clock fault.
        problem = run.clock.problem(index, datetime.fromisoformat(record.recorded_at))
        if problem is not None:
            return Failure(sequence, problem)
        failure = self._check_chain(run, record, leaf, sequence)
        if failure is None:
            failure = self._check_signers(run, record, opened, body, sequence, jobs)
        if failure is None and replayer is not None:
            failure = _replay(run, replayer, record, opened, body, sequence)
        if failure is None and isinstance(body, _REGISTRY):
            run.registry.append(record.envelope)
            self._apply_registry(run, body, record.envelope)
            if replayer is not None and isinstance(body, ev.SiteRegistered):
                replayer.site(body.code)
            elif replayer is not None and isinstance(body, ev.PrincipalRegistered | ev.PrincipalSitesBound):
                replayer.registered(run.principals[body.principal_id])
        if failure is None and isinstance(body, ev.PolicyAdopted):
            failure = _check_policy(run, record, opened, body, sequence)
        return failure

    @staticmethod
    def _check_chain(run: _Run, record: Record, leaf: bytes, sequence: int) -> Failure | None:
        stream, version = record.stream, record.version
        last_version, head = run.streams.get(stream, (0, FIRST_PREV))
        if version != last_version + 1:
            return Failure(
                sequence,
                f"aggregate {stream} goes from version {last_version} to {version}: "
                "a record is missing or moved",
            )
        if record.prev != head:
            return Failure(sequence, f"chain broken: prev does not name the previous record of {stream}")
        run.streams[stream] = (version, leaf.hex())  # the next record's prev: this one's leaf hash
        return None

    def _check_signers(
        self,
        run: _Run,
        record: Record,
        opened: Opened,
        body: ev.Event | _Header,
        sequence: int,
        jobs: list[TaggedJob],
    ) -> Failure | None:
        """Each signature by a key the registry held, valid when the ledger received the
        record (its recorded_at) for a principal registered at its occurred_at."""
        message = pae(PAYLOAD_TYPE, opened.body)
        signed = False
        received = datetime.fromisoformat(record.recorded_at)
        policy = run.policy.policy
        # Before the first boundary (version 0) keys were judged at occurred_at, the rule
        # before "Hardening"; from version 1 on, at the ledger's receipt.
        judged_at = body.occurred_at if policy.version == 0 else received
        for keyid, sig in opened.signatures:
            state = run.principals.get(keyid.split(":", 1)[0])
            public = signing_key(state, body, keyid, run.claims)
            if public is None:
                if not run.principals:
                    return Failure(sequence, "the first record is not a self-signed administrator")
                return Failure(
                    sequence, f"signed by key {keyid}, which the registry did not hold at that point"
                )
            if state is None:
                assert isinstance(body, ev.PrincipalRegistered)  # a genesis key: see signing_key
                problem = genesis_problem(body)
            else:
                problem = key_problem(state, keyid, body.occurred_at, judged_at, policy)
            if problem is not None:
                return Failure(sequence, f"{problem.code}: {problem.message}")
            jobs.append((sequence, public, sig, message))
            signed = True
        if not signed:
            return Failure(sequence, "the stored envelope carries no signature")
        return None

    @staticmethod
    def _apply_registry(run: _Run, body: ev.Event, envelope: str) -> None:
        if isinstance(body, ev.SiteRegistered):
            site.evolve(run.sites, body)
            return
        assert isinstance(body, ev.PRINCIPAL_TYPES)
        if not run.principals:  # the first administrator claims the genesis, as the ledger does
            run.claims = ClaimsTable({GENESIS: body.principal_id})
        run.principals[body.principal_id] = principal.evolve(run.principals.get(body.principal_id), body)

    def _snapshot(self, run: _Run, roots: dict[int, bytes]) -> None:
        if run.tree.size not in roots:
            return
        run.snapshot = State(
            size=run.tree.size,
            root=roots[run.tree.size].hex(),
            last_sequence=run.last_sequence,
            edge=[h.hex() for h in run.tree.edge],
            streams=dict(run.streams),
            registry=list(run.registry),
            policies=list(run.policies),
            latest_recorded_at=run.clock.last.isoformat() if run.clock.last is not None else None,
        )

    def _check_coverage(self, run: _Run, checkpoints: list[StoredCheckpoint]) -> Failure | None:
        """Every checkpoint must be covered by records; leaves beyond the records are missing."""
        size = run.tree.size
        stored_size = self.source.size()
        if stored_size > size:
            return Failure(
                self.source.leaf_sequence(size),
                f"record missing: leaf {size} commits to it but no row is left",
            )
        if checkpoints and checkpoints[-1].size > size:
            return Failure(
                self.source.leaf_sequence(size),
                f"the log holds {size} records but a signed checkpoint commits to {checkpoints[-1].size}: "
                "records were removed from its tail",
            )
        return None

    def _check_sealed(self, run: _Run, report: Report) -> Failure | None:
        """Records no signed checkpoint covers: counted; when none is covered and keys are
        trusted, a failure (they are proved by nothing but their own signatures: the
        checkpoints were deleted, or none was ever signed)."""
        report.unsealed = report.records - (self._latest - report.resumed_from)
        report.unsealed_from = run.first_uncovered
        if self._latest or not report.unsealed or not self.trusted:
            return None  # without trusted keys it checks the records alone (a bundle's: see bundle.py)
        return Failure(
            run.first_uncovered,
            f"no signed checkpoint covers the log: {_count(report.unsealed, 'record')}, from sequence "
            f"{run.first_uncovered}, {'is' if report.unsealed == 1 else 'are'} proved by nothing but "
            "their own signatures (its checkpoints were deleted, or none was ever signed: coi "
            "checkpoint --sign where the ledger key is)",
        )

    def _check_saved(self, run: _Run, checkpoints: list[StoredCheckpoint], report: Report) -> Failure | None:
        """The recomputed roots against the checkpoints saved outside the ledger, of its log
        (the origin its own latest checkpoint names, which a trusted key signed)."""
        origin = notes.parse(checkpoints[-1].note)[0].origin if checkpoints else None
        saved = kept.of_log(self.saved, origin)
        report.saved = len(saved)
        if not saved:
            others = sorted({s.checkpoint.origin for s in self.saved})
            return Failure(
                None,
                f"none of the checkpoints saved outside the ledger is of its log ({origin}): "
                f"they are of {', '.join(others)}",
            )
        records = report.resumed_from + report.records  # before the resume point, every record is a leaf
        found = kept.check(
            saved, run.tree.size, records, lambda size: run.saved_roots.get(size, merkle.EMPTY_ROOT)
        )
        if found is None:
            return None
        if found.among is not None:
            first, last = (self.source.leaf_sequence(leaf) for leaf in found.among)
            return Failure(None, f"{found.reason} (sequences {first} to {last})")
        return Failure(self._sequence_at(found.leaf), found.reason)

    def _sequence_at(self, leaf: int | None) -> int | None:
        """The sequence leaf `leaf` holds; beyond the log's leaves, the one after its last (the
        first record removed from its tail)."""
        if leaf is None:
            return None
        sequence = self.source.leaf_sequence(leaf)
        if sequence is None and leaf > 0:
            last = self.source.leaf_sequence(leaf - 1)
            sequence = None if last is None else last + 1
        return sequence


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def _fresh() -> _Run:
    return _Run(merkle.CompactRange(), {}, [])


class StateMismatchError(Exception):
    """The incremental state no longer matches the store."""


def _forged(sequence: int) -> Failure:
    return Failure(sequence, "a signature does not verify over the stored envelope")


def _place(failure: Failure) -> int:
    return failure.sequence or 0


# ---------------------------------------------------------------- the rules replayed


def _replay(
    run: _Run, replayer: Replayer, record: Record, opened: Opened, body: ev.Event | _Header, sequence: int
) -> Failure | None:
    """The record's claims across patients, decided here in sequence order; a registry or
    policy record's authority and registry rules, judged here too; a journey record, queued
    for its patient's worker (replay.py)."""
    assert not isinstance(body, _Header) or isinstance(body, _Claiming)  # read for the replay
    refused = run.claimed.event(sequence, body.event_id.int)
    if refused is not None:
        return Failure(*refused)
    signer_ids = [keyid.split(":", 1)[0] for keyid, _ in opened.signatures]
    if isinstance(body, _Claiming):
        if body.coi is None:
            return Failure(sequence, f"a {body.type} record names no coi: the ledger files it under none")
        claims = run.claimed.consult(body.type, body.coi, body)
        policy = replayer.policy_index(run.policy.policy)
        run.replay.append(
            (sequence, body.coi, record.recorded_at, opened.body, tuple(signer_ids), policy, claims)
        )
        return None
    received = datetime.fromisoformat(record.recorded_at)
    assert isinstance(body, (*_REGISTRY, ev.PolicyAdopted))  # _decode reads these in full
    problem = registry_problem(body, signer_ids, run, received, run.policy.policy)
    return None if problem is None else Failure(*refusal(sequence, problem))


# ---------------------------------------------------------------- the policy in force


def _check_policy(
    run: _Run, record: Record, opened: Opened, body: ev.PolicyAdopted, sequence: int
) -> Failure | None:
    """A boundary is replayed by the rules that accepted it (aggregates/policy.py): a version
    lower than the one in force, a setting out of bounds or a missing administrator fails."""
    received = datetime.fromisoformat(record.recorded_at)
    signers = {keyid.split(":", 1)[0] for keyid, _ in opened.signatures}
    admins = frozenset(p for p in signers if "admin" in run.principals[p].roles)
    everyone = run.principals.values()
    ctx = PolicyContext(
        admins,
        sum(1 for p in everyone if can_administer(p, received)),
        unbound(everyone, run.sites, received),
    )
    problem = decide_policy(run.policy, body, ctx)
    if problem is not None:
        return Failure(sequence, f"policy record refused: {problem.code}: {problem.message}")
    _adopt(run, body, record.envelope)
    return None


def _replay_policy(run: _Run, envelope: str) -> None:
    """A boundary verified before (an incremental run's state)."""
    body = _body.decode(payload_of(envelope))
    assert isinstance(body, ev.PolicyAdopted)
    _adopt(run, body, envelope)


def _adopt(run: _Run, body: ev.PolicyAdopted, envelope: str) -> None:
    run.policy = evolve_policy(run.policy, body)
    run.policies.append(envelope)  # kept in the incremental state
