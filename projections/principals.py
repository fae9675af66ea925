"""The principal registry as it stands: who may sign what, with every key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import msgspec

from aggregates.base import body_of
from aggregates.principal import PrincipalState, principal_uuid
from ledger.app.application import LedgerApplication
from ledger.store.streams import Principal
from ledger.store.topics import PRINCIPAL_OPENED
from ledger.wire import events as ev
from projections.display import MINUTE, utc


class PrincipalView(msgspec.Struct):
    principal_id: str
    kind: str
    printed_name: str
    roles: list[str]
    keys: list[str]
    sites: list[str] = []  # the sites it is bound to


class LockedKey(msgspec.Struct):
    principal_id: str
    keyid: str
    locked_at: datetime | None


def _states(app: LedgerApplication) -> Iterator[PrincipalState]:
    """Every registered principal as it stands, in registration order."""
    for _, _, envelope in app.records(topics=[PRINCIPAL_OPENED]):
        body = body_of(envelope)
        assert isinstance(body, ev.PrincipalRegistered)
        stream: object = app.repository.get(principal_uuid(body.principal_id))
        assert isinstance(stream, Principal)
        yield stream.state


def locked_keys(app: LedgerApplication) -> list[LockedKey]:
    """Every key locked now (aggregates/security.py), with when it was locked."""
    return [
        LockedKey(p.principal_id, keyid, k.lock_changed_at)
        for p in _states(app)
        for keyid, k in p.keys.items()
        if k.locked
    ]


def principals(app: LedgerApplication) -> list[PrincipalView]:
    """Every registered principal, in registration order; keys with their validity."""
    views = []
    for p in _states(app):
        keys = [
            f"{keyid} from {utc(k.valid_from, MINUTE)}"
            + (f" until {utc(k.valid_until, MINUTE)}" if k.valid_until else "")
            + (f" REVOKED {utc(k.revoked_at, MINUTE)}" if k.revoked_at else "")
            + (" LOCKED" if k.locked else "")
            for keyid, k in p.keys.items()
        ]
        views.append(
            PrincipalView(p.principal_id, p.kind, p.printed_name, sorted(p.roles), keys, sorted(p.sites))
        )
    return views
