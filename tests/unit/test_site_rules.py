"""The site rule's one exemption for the ledger itself (aggregates/site.py): its service
principal, holding the `ledger` role alone, is at no site; anyone else is held to theirs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aggregates.policy import SITES_ADOPTED, Policy
from aggregates.principal import PrincipalState
from aggregates.site import site_problem
from ledger.wire import events as ev
from ledger.wire.rejection import ReasonCode

AT = datetime(2026, 1, 5, 9, tzinfo=UTC)
SITES = {"US-SSF", "JP-KAS"}
POLICY = Policy(SITES_ADOPTED, adopted=SITES_ADOPTED)


def _signer(roles: set[str]) -> PrincipalState:
    return PrincipalState(
        "ledger.service", "site_system", "Ledger service", frozenset(roles), AT, sites=frozenset({"US-SSF"})
    )


def _deviation(site: str) -> ev.DeviationOpened:
    return ev.DeviationOpened(
        event_id=uuid.uuid4(), occurred_at=AT, site=site, actor="ledger.service", coi="CHJ07882600IF7V",
        deviation_id="D-1", description="bedside mismatch", severity="critical",
    )  # fmt: skip


def test_the_ledgers_service_principal_signs_at_any_registered_site() -> None:
    assert site_problem(_deviation("JP-KAS"), {"ledger.service": _signer({"ledger"})}, SITES, POLICY) is None
    unknown = site_problem(_deviation("NL-LEI"), {"ledger.service": _signer({"ledger"})}, SITES, POLICY)
    assert unknown is not None and unknown.code == ReasonCode.UNKNOWN_SITE


def test_a_signer_with_another_role_beside_ledger_is_held_to_its_sites() -> None:
    problem = site_problem(_deviation("JP-KAS"), {"ledger.service": _signer({"ledger", "qa"})}, SITES, POLICY)
    assert problem is not None and (problem.code, problem.field) == (ReasonCode.SITE_NOT_BOUND, "actor")
