"""Sites as registered things: where an event may happen, and who may sign there.

A site is registered once by an administrator (`site_registered`); principals are bound to
sites when registered (`principal_registered.sites`) or later (`principal_sites_bound`).
From the version the log adopts with SITES_ADOPTED on (aggregates/policy.py), an event's
`site` must be registered and everyone who signs it bound to it; for a custody hand-off,
the site of either custodian. The ledger and the verifier both call `site_problem` through
aggregates/principal.py authorize.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aggregates.policy import SITES_ADOPTED, Policy
from ledger.wire.events import CustodyTransferred, Event, PrincipalKeyRotated, SiteRegistered
from ledger.wire.rejection import ReasonCode, Rejected

if TYPE_CHECKING:
    from aggregates.principal import PrincipalState


# The roles of the ledger's service principal, which signs for the ledger as a whole.
LEDGER_ONLY = frozenset({"ledger"})


@dataclass(frozen=True)
class SiteState:
    code: str
    name: str
    country: str
    time_zone: str
    kind: str
    registered_at: datetime  # the site record's occurred_at


Sites = Mapping[str, SiteState]  # by code: the registry of sites


@lru_cache(maxsize=1024)
def known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    """The ISO 3166-1 alpha-2 codes of the IANA time zone database's iso3166.tab (the system's,
    else the tzdata package's): the same source as the time zones, so a machine that can
    check one can check the other."""
    import importlib.resources
    import zoneinfo
    from pathlib import Path

    for folder in zoneinfo.TZPATH:
        table = Path(folder) / "iso3166.tab"
        if table.is_file():
            text = table.read_text(encoding="utf-8")
            break
    else:
        try:
            text = importlib.resources.files("tzdata").joinpath("zoneinfo", "iso3166.tab").read_text("utf-8")
        except (ModuleNotFoundError, FileNotFoundError):
            text = ""
    return frozenset(line[:2] for line in text.splitlines() if line[:1] != "#" and line[:2].isupper())


def decide(sites: Sites, body: SiteRegistered) -> Rejected | None:
    """A new site: a code not registered before, in an ISO 3166-1 country and an IANA time
    zone this system knows."""
    if body.code in sites:
        return Rejected(ReasonCode.SITE_EXISTS, f"site {body.code} is already registered", "code")
    if body.country not in _countries():
        return Rejected(
            ReasonCode.INVALID_VALUE,
            f"country {body.country!r} is not an ISO 3166-1 alpha-2 code (e.g. US, NL, JP)"
            + ("" if _countries() else "; this system has no IANA time zone database: install tzdata"),
            "country",
        )
    if not known_zone(body.time_zone):
        return Rejected(
            ReasonCode.INVALID_VALUE,
            f"time_zone {body.time_zone!r} is not an IANA time zone name (e.g. Europe/Amsterdam)",
            "time_zone",
        )
    return None


def evolve(sites: dict[str, SiteState], body: SiteRegistered) -> dict[str, SiteState]:
    """The registry after `body` (changed in place, as the principals are)."""
    sites[body.code] = SiteState(
        body.code, body.name, body.country, body.time_zone, body.kind, body.occurred_at
    )
    return sites


def unknown_sites(codes: Iterable[str], sites: Collection[str], field: str) -> Rejected | None:
    """A binding to a site nobody registered."""
    unknown = sorted(set(codes) - set(sites))
    if not unknown:
        return None
    return Rejected(
        ReasonCode.UNKNOWN_SITE,
        f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a registered site: "
        "register it with coi sites add first",
        field,
    )


def site_problem(
    body: Event, signers: Mapping[str, PrincipalState], sites: Collection[str], policy: Policy
) -> Rejected | None:
    """From the adopted version SITES_ADOPTED on: the event's site is registered and each
    signer is bound to it; in a custody hand-off the site is either custodian's, and the
    custodians are held to that instead. The holder co-signing a routine rotation of their own
    key signs where the administrator acts, wherever they work (dual control). The ledger's
    own service principal (role `ledger` alone) is at no site: it records what the ledger
    itself does about an event at a registered site, such as the deviation a bedside mismatch
    opens there."""
    if policy.adopted < SITES_ADOPTED:
        return None
    problem = unknown_sites([body.site], sites, "site")
    if problem is not None:
        return problem
    exempt: tuple[str, ...] = ()
    if isinstance(body, CustodyTransferred):
        exempt = (body.from_custodian, body.to_custodian)
        if not any(body.site in signers[c].sites for c in exempt if c in signers):
            return Rejected(
                ReasonCode.SITE_NOT_BOUND,
                f"a hand-off happens at a site of either custodian; neither {body.from_custodian} "
                f"nor {body.to_custodian} is bound to {body.site}",
                "site",
            )
    if isinstance(body, PrincipalKeyRotated):
        exempt = (body.principal_id,)
    for pid, signer in signers.items():
        if pid not in exempt and body.site not in signer.sites and signer.roles != LEDGER_ONLY:
            return Rejected(
                ReasonCode.SITE_NOT_BOUND,
                f"{pid} signed at {body.site} but is bound to {', '.join(sorted(signer.sites)) or 'no site'}",
                "actor" if pid == body.actor else "signatures",
            )
    return None
