"""Every reason code the rules can give a stored record is reachable by `coi verify`'s replay
of them, or listed (ledger/audit/replay.py CHECKED_ELSEWHERE) with the verifier's check that
covers it; the rest are the door's, on an envelope as sent (AT_THE_DOOR)."""

from __future__ import annotations

import ast
from pathlib import Path

from ledger.audit import replay
from ledger.wire.rejection import ReasonCode

ROOT = Path(__file__).resolve().parents[2]
RULES = (
    "aggregates/therapy.py", "aggregates/principal.py", "aggregates/policy.py", "aggregates/roles.py",
    "aggregates/site.py",
)  # fmt: skip
# What the replay calls (replay.py) and what the verifier's other checks call (verification.py).
REPLAY_ENTRIES = {"therapy.decide", "principal.decide", "principal.authorize", "site.decide"}
VERIFIER_ENTRIES = {
    "principal.key_problem",
    "principal.genesis_problem",
    "principal.signing_key",
    "policy.decide",
}


def _functions() -> dict[str, tuple[set[str], set[ReasonCode]]]:
    """module.function -> (module-level functions it names, codes it names), over the rules."""
    found: dict[str, tuple[set[str], set[ReasonCode]]] = {}
    for path in RULES:
        module = Path(path).stem
        tree = ast.parse((ROOT / path).read_text())
        top = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            names, codes = set(), set()
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and inner.id in top:
                    names.add(f"{module}.{inner.id}")
                if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name):
                    if inner.value.id == "ReasonCode":
                        codes.add(ReasonCode[inner.attr])
                    elif inner.value.id in {Path(p).stem for p in RULES}:
                        names.add(f"{inner.value.id}.{inner.attr}")
            found[f"{module}.{node.name}"] = (names, codes)
    return found


def _reachable(entries: set[str]) -> set[ReasonCode]:
    functions = _functions()
    seen: set[str] = set()
    todo = list(entries)
    codes: set[ReasonCode] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        calls, named = functions[name]
        codes |= named
        todo += calls
    return codes


def _codes_in(path: str) -> set[ReasonCode]:
    tree = ast.parse((ROOT / path).read_text())
    return {
        ReasonCode[n.attr]
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "ReasonCode"
    }


def _called(path: str) -> str:
    return (ROOT / path).read_text()


def test_the_entries_are_the_ones_the_verifier_calls() -> None:
    replayer, verifier = _called("ledger/audit/replay.py"), _called("ledger/audit/verification.py")
    for call in ("therapy.decide(", "principal.decide(", "authorize(", "site.decide("):
        assert call in replayer, call
    for call in ("key_problem(", "genesis_problem(", "signing_key(", "decide_policy("):
        assert call in verifier, call


def test_every_code_the_rules_give_is_replayed_or_checked_elsewhere() -> None:
    rules = set().union(*(_codes_in(p) for p in RULES))
    replayed = _reachable(REPLAY_ENTRIES)
    elsewhere = set(replay.CHECKED_ELSEWHERE)
    assert rules - replayed - elsewhere == set()
    # What is listed as checked elsewhere, the verifier's own calls of the rules reach (or the
    # verifier checks it itself: signatures and event id claims, application.py's own codes).
    application = _codes_in("ledger/app/application.py")
    assert elsewhere - _reachable(VERIFIER_ENTRIES) <= application
    assert application - rules <= elsewhere | replay.AT_THE_DOOR


def test_every_reason_code_is_accounted_for() -> None:
    rules = set().union(*(_codes_in(p) for p in RULES))
    accounted = _reachable(REPLAY_ENTRIES) | set(replay.CHECKED_ELSEWHERE) | replay.AT_THE_DOOR
    assert set(ReasonCode) - accounted == set()
    assert replay.AT_THE_DOOR.isdisjoint(rules), "a rule's code listed as the door's"
