"""The principal registry as it stands: who may sign what, with every key."""

from __future__ import annotations

import msgspec

from aggregates.base import body_of
from aggregates.principal import principal_uuid
from ledger.app.application import LedgerApplication
from ledger.store.streams import Principal
from ledger.wire import events as ev
from projections.display import MINUTE, utc


class PrincipalView(msgspec.Struct):
    principal_id: str
    kind: str
    printed_name: str
    roles: list[str]
    keys: list[str]
    sites: list[str] = []  # the sites it is bound to


def principals(app: LedgerApplication) -> list[PrincipalView]:
    """Every registered principal, in registration order; keys with their validity."""
    views = []
    for _, _, envelope in app.records():
        body = body_of(envelope)
        if not isinstance(body, ev.PrincipalRegistered):
            continue
        stream: object = app.repository.get(principal_uuid(body.principal_id))
        assert isinstance(stream, Principal)
        p = stream.state
        keys = [
            f"{keyid} from {utc(k.valid_from, MINUTE)}"
            + (f" until {utc(k.valid_until, MINUTE)}" if k.valid_until else "")
            + (f" REVOKED {utc(k.revoked_at, MINUTE)}" if k.revoked_at else "")
            for keyid, k in p.keys.items()
        ]
        views.append(
            PrincipalView(p.principal_id, p.kind, p.printed_name, sorted(p.roles), keys, sorted(p.sites))
        )
    return views
