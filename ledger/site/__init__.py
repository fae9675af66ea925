"""The site kit: what a site system (an MES, a QC instrument, a courier app) needs to take
part, and nothing of the ledger's server side.

    from ledger.site import SitePublisher, Topics, load_key, sign_json

    key = load_key(Path("nurse.bdw.key"), passphrase)       # the principal's key file
    envelope = sign_json(body, [key], datetime.now(UTC))     # checked strictly, then signed
    publisher = SitePublisher(bootstrap, Topics(), Path("outbox.sqlite"))
    publisher.publish(envelope); publisher.wait()            # durable until the ledger answers

Each name is imported when first used, so signing alone loads no Kafka client.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that holds it: the declared API; everything else here is internal.
_API = {
    "sign_json": "ledger.site.signing",
    "load_key": "ledger.wire.keys",
    "LoadedKey": "ledger.wire.keys",
    "SitePublisher": "ledger.site.publisher",
    "Topics": "ledger.wire.kafka_topics",
    "Rejected": "ledger.wire.rejection",
    "ReasonCode": "ledger.wire.rejection",
    "json_schema": "ledger.wire.events",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"ledger.site has no {name!r}; the site kit is {', '.join(__all__)}")
    return getattr(importlib.import_module(_API[name]), name)
