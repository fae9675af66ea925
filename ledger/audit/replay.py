"""`coi verify`'s replay of the domain rules: every stored record judged again by the pure
rules the ledger judged it by (aggregates/), under the policy in force at its place, so a
genuinely signed record the ledger would have refused is named by its sequence and reason.

What crosses patients is decided here, in the verifying process, in sequence order: the
registry (who signed, with what roles), the policy records, and the claims (an event id, a
DIN, a cartridge belongs to one record or one patient). Each patient's journey is then
replayed in a worker process (`Replayer`), sharded by COI, beside the signature workers:
each worker holds the states of its patients and judges their records in sequence order,
with the claims each one consulted as they stood when it was recorded.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol, cast

import msgspec

from aggregates import principal, site, therapy
from aggregates.base import Administrators, Claims, ClaimsTable, Context
from aggregates.policy import Policy
from aggregates.principal import PrincipalState, authorize
from aggregates.site import SiteState
from ledger.wire import events as ev
from ledger.wire.rejection import ReasonCode, Rejected

# (sequence, COI, recorded_at, body bytes, signer ids, policy index, claims consulted)
Item = tuple[int, str, str, bytes, tuple[str, ...], int, tuple[tuple[str, str, str], ...]]
# (sequence, reason): the first record a worker's rules refused
Refusal = tuple[int, str]

_body = msgspec.json.Decoder(ev.StoredEvent)  # as accepted then, not as the door checks now
_NO_CLAIMS = ClaimsTable()
_NO_REGISTRY = Administrators()  # a journey step consults no administrator

# Which codes a stored record can carry only through a rule, and where `coi verify` checks it.
# tests/unit/test_replay_coverage.py holds every ReasonCode to this list.
REPLAYED = "replayed (ledger/audit/replay.py)"
CHECKED_ELSEWHERE: Mapping[ReasonCode, str] = {
    ReasonCode.UNKNOWN_KEY: "key state (verification.py _check_signers: signing_key)",
    ReasonCode.BAD_SIGNATURE: "signatures (ledger/audit/signatures.py, every signature)",
    ReasonCode.KEY_REVOKED: "key state (verification.py _check_signers: key_problem)",
    ReasonCode.KEY_EXPIRED: "key state (verification.py _check_signers: key_problem)",
    ReasonCode.KEY_LOCKED: "key state (verification.py _check_signers: key_problem)",
    ReasonCode.KEY_NOT_YET_VALID: "key state (verification.py _check_signers: key_problem, genesis_problem)",
    ReasonCode.NO_ADMINISTRATOR: "the genesis (verification.py _check_signers: genesis_problem)",
    ReasonCode.POLICY_DOWNGRADE: "policy records (verification.py _check_policy)",
    ReasonCode.POLICY_VERSION_UNKNOWN: "policy records (verification.py _check_policy)",
    ReasonCode.DUPLICATE_CONFLICT: "event id claims (replay.py Claimed, in sequence order)",
}
# Refusals of an envelope as sent, before any rule: a stored body is read by the schema it was
# accepted under (its bytes are proven by its signatures and the log), not judged again by them.
# (missing_field is the door's too, and a rule's: an enrolment without its patient key.)
AT_THE_DOOR = frozenset(
    {
        ReasonCode.MALFORMED_JSON,
        ReasonCode.MALFORMED_ENVELOPE,
        ReasonCode.WRONG_PAYLOAD_TYPE,
        ReasonCode.BAD_BASE64,
        ReasonCode.MISSING_SIGNATURE,
        ReasonCode.OVERSIZE,
        ReasonCode.DUPLICATE_KEY,
        ReasonCode.REPEATED_SIGNATURE,
        ReasonCode.UNKNOWN_EVENT_TYPE,
        ReasonCode.UNKNOWN_FIELD,
        ReasonCode.WRONG_TYPE,
        ReasonCode.NAIVE_TIMESTAMP,
        ReasonCode.INVALID_DIN,
        ReasonCode.CONTROL_CHARACTER,
        ReasonCode.PHI_SUSPECTED,
        ReasonCode.FUTURE_TIMESTAMP,
    }
)


def refusal(sequence: int, problem: Rejected) -> Refusal:
    return sequence, f"the ledger would have refused it: {problem.code}: {problem.message}"


@dataclass
class Claimed:
    """The claims that cross patients, as the records made them, in sequence order: each event
    id once in the whole log, each DIN and cartridge for one patient (aggregates/therapy.py
    CLAIMS)."""

    events: set[int] = field(default_factory=set)  # event ids, as 128-bit integers
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, value) -> COI

    def event(self, sequence: int, event_id: int) -> Refusal | None:
        if event_id in self.events:
            return sequence, (
                f"{ReasonCode.DUPLICATE_CONFLICT}: its event_id was already recorded by an earlier record"
            )
        self.events.add(event_id)
        return None

    def consult(self, tag: str, coi: str, body: object) -> tuple[tuple[str, str, str], ...]:
        """The claims a record of type `tag` consults, as they stand before it; records the
        ones it makes."""
        found: list[tuple[str, str, str]] = []
        for kind, name, makes in therapy.CLAIMS.get(tag, ()):
            value = getattr(body, name, None)
            if not isinstance(value, str):
                continue
            owner = self.owners.get((kind, value))
            if owner is not None:
                found.append((kind, value, owner))
            elif makes:
                self.owners[(kind, value)] = coi
        return tuple(found)


class Registered(Protocol):
    """The registry as the verifier has replayed it up to a record."""

    @property
    def principals(self) -> Mapping[str, PrincipalState]: ...
    @property
    def sites(self) -> Mapping[str, SiteState]: ...
    @property
    def claims(self) -> Claims: ...


def registry_problem(
    body: ev.Event, signer_ids: list[str], registered: Registered, received: datetime, policy: Policy
) -> Rejected | None:
    """A registry or policy record judged as the ledger judged it: its signers' authority
    (aggregates/principal.py authorize), then, for a registry change, the registry's rules.
    (A policy record's own rules are replayed by the verifier's _check_policy.)"""
    principals, sites = registered.principals, registered.sites
    signers = {p: principals[p] for p in signer_ids if p in principals}
    if isinstance(body, ev.PrincipalRegistered) and not signers:
        signers[body.principal_id] = principal.evolve(None, body)  # the genesis, provisionally
    problem = authorize(body, signers, received, policy, sites)
    if problem is not None or isinstance(body, ev.PolicyAdopted):
        return problem
    if isinstance(body, ev.SiteRegistered):
        return site.decide(sites, body)
    assert isinstance(body, ev.PRINCIPAL_TYPES)
    admins = Administrators(tuple(p for p in principals.values() if "admin" in p.roles))
    roles = {pid: state.roles for pid, state in signers.items()}
    ctx = Context(received, policy, registered.claims, admins, roles, sites=sites)
    return principal.decide(principals.get(body.principal_id), body, ctx)


# ------------------------------------------------------------------ the worker processes


class Replayer:
    """Worker processes replaying the journeys, each the patients its COIs hash to. Each
    `submit` sends every worker its share of a chunk; each worker answers every chunk with
    its first refusal so far, and judges nothing after it."""

    def __init__(self, workers: int, inline: bool = False) -> None:
        """`inline`: replay in the calling process (a run too small to be worth the workers)."""
        self.workers = max(1, workers)
        self._inline = _Journeys() if inline else None
        self._links: list[Connection] = []
        self._processes: list[BaseProcess] = []
        self._sent = 0  # chunks sent
        self._answered = 0  # chunks every worker has answered
        self._principals: dict[str, PrincipalState] = {}  # registered or bound since the last chunk
        self._sites: set[str] = set()  # registered since the last chunk
        self.policies: list[Policy] = []
        self._refused: list[Refusal] = []

    def _start(self) -> None:
        # fork: the workers start at once with everything imported (see signatures.py).
        context = multiprocessing.get_context("fork")
        for _ in range(self.workers):
            ours, theirs = context.Pipe()
            process = context.Process(target=_work, args=(theirs, ours), daemon=True, name="coi-replay")
            process.start()
            theirs.close()
            self._links.append(ours)
            self._processes.append(process)

    def registered(self, state: PrincipalState) -> None:
        """A principal the next chunk's records may be signed by (or its new sites)."""
        self._principals[state.principal_id] = state

    def site(self, code: str) -> None:
        """A site the next chunk's records may happen at."""
        self._sites.add(code)

    def policy_index(self, policy: Policy) -> int:
        """The index the workers know `policy` by (the one in force at a record)."""
        if not self.policies or self.policies[-1] is not policy:
            self.policies.append(policy)
        return len(self.policies) - 1

    def submit(self, items: list[Item]) -> None:
        """Send a chunk's journey records, in sequence order; returns once every worker took it."""
        if not items:
            return
        if self._inline is not None:
            self._inline.principals.update(self._principals)
            self._inline.sites |= self._sites
            self._principals, self._sites = {}, set()
            refused = self._inline.replay(items, self.policies)
            if refused is not None and not self._refused:
                self._refused.append(refused)
            return
        if not self._links:
            self._start()
        shares: list[list[Item]] = [[] for _ in self._links]
        for item in items:
            shares[zlib.crc32(item[1].encode()) % len(shares)].append(item)
        for link, share in zip(self._links, shares, strict=True):
            link.send((self._principals, self._sites, self.policies, share))
        self._principals, self._sites = {}, set()
        self._sent += 1

    def first_refusal(self, pending: int = 0) -> Refusal | None:
        """Wait until at most `pending` chunks are unanswered; the earliest refusal answered."""
        while self._sent - self._answered > pending:
            for link in self._links:
                answer = link.recv()
                if answer is not None:
                    self._refused.append(answer)
            self._answered += 1
        return min(self._refused, default=None)

    def close(self) -> None:
        for link in self._links:
            link.close()  # the worker reads end-of-file and exits
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        self._links, self._processes = [], []


@dataclass
class _Journeys:
    """The patients a worker (or the calling process) replays, and its first refusal."""

    principals: dict[str, PrincipalState] = field(default_factory=dict)
    sites: set[str] = field(default_factory=set)
    states: dict[str, therapy.TherapyState] = field(default_factory=dict)
    refused: Refusal | None = None

    def replay(self, items: list[Item], policies: list[Policy]) -> Refusal | None:
        """Judge a chunk (nothing after the first refusal); the first refusal so far."""
        if self.refused is None:
            self.refused = _replay(items, self, policies)
        return self.refused


def _work(link: Connection, parents: Connection) -> None:
    """A worker: the journeys of its COIs, chunk after chunk, until end-of-file."""
    parents.close()  # only the parent's end keeps this pipe open
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    journeys = _Journeys()
    while True:
        try:
            registered, sites, policies, items = link.recv()
        except EOFError:
            return
        journeys.principals.update(registered)
        journeys.sites |= sites
        # The patients' states live to the end: the collector need not walk them again (over
        # a million records it otherwise costs a quarter of the replay).
        gc.freeze()
        link.send(journeys.replay(items, policies))


def _replay(items: list[Item], journeys: _Journeys, policies: list[Policy]) -> Refusal | None:
    for item in items:
        try:
            problem = _judge(item, journeys, policies)
        except msgspec.MsgspecError as exc:
            return item[0], f"the stored body cannot be read by the schema it was accepted under ({exc})"
        except Exception as exc:  # state no accepted record could have left: named, not a crash
            return item[0], f"the rules cannot be replayed over it ({exc!r})"
        if problem is not None:
            return refusal(item[0], problem)
    return None


def _judge(item: Item, journeys: _Journeys, policies: list[Policy]) -> Rejected | None:
    """One journey record judged, and applied if accepted. (Its signers' sites are those of
    the chunk's end: bindings only grow, so a record accepted before is never refused for
    that.)"""
    _, coi, recorded_at, raw, signer_ids, policy, claims = item
    body = cast("ev.JourneyEvent", _body.decode(raw))  # the verifier sends only records with a COI
    signers = {p: journeys.principals[p] for p in signer_ids}
    states = journeys.states
    received, judged_by = datetime.fromisoformat(recorded_at), policies[policy]
    problem = authorize(body, signers, received, judged_by, journeys.sites)
    if problem is None:
        table = ClaimsTable({(kind, value): owner for kind, value, owner in claims}) if claims else _NO_CLAIMS
        roles = {p: s.roles for p, s in signers.items()}
        bound = {p: s.sites for p, s in signers.items()}
        ctx = Context(received, judged_by, table, _NO_REGISTRY, roles, journeys.sites, bound)
        problem = therapy.decide(states.get(coi), body, ctx)
    if problem is None:
        states[coi] = therapy.evolve(states.get(coi), body)
    return problem
