"""The ledger's service principal: the site system `ledger.service` (role `ledger`) whose key
signs the lock records the ledger writes after repeated authenticated failures
(aggregates/security.py).

A lock is a registry record like any other, signed by a registered key, so the standalone
verifier replays key state, locks included, from the records alone and needs no trust in the
ledger's process beyond that key. The key is the ledger's, not a person's: it sits beside the
checkpoint key, 0600 and unencrypted (a service signs unattended), in the signer's folder
(ledger/app/ledgerkey.py), one per log origin; COI_SERVICE_KEY names a file elsewhere.
`coi init` makes it and registers the principal.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.ledgerkey import signer_dir
from ledger.wire.keys import KeyFile, LoadedKey, key_file_for, load_key, write_key_file

SERVICE_PRINCIPAL = "ledger.service"
SERVICE_ROLE = "ledger"
SERVICE_KIND = "site_system"


def service_key_path(log_origin: str | None) -> Path | None:
    """Where the service key of a log is (None: a log with no origin yet, and no COI_SERVICE_KEY)."""
    explicit = os.environ.get("COI_SERVICE_KEY")
    if explicit:
        return Path(explicit)
    return None if log_origin is None else signer_dir() / f"{quote(log_origin, safe='')}.service-key"


def service_key(log_origin: str | None) -> LoadedKey | None:
    """The service key of this log, None when this host holds none."""
    path = service_key_path(log_origin)
    return load_key(path, b"") if path is not None and path.is_file() else None


def create_service_key(log_origin: str | None, printed_name: str) -> tuple[Path, KeyFile]:
    """A new service key for this log, written where `service_key` finds it; where that is."""
    key_file = key_file_for(Ed25519PrivateKey.generate(), SERVICE_PRINCIPAL, printed_name, SERVICE_KIND, None)
    path = service_key_path(log_origin)
    assert path is not None, "a log's origin is known once it is created"
    write_key_file(path, key_file)
    return path, key_file
