"""docker-compose.yml read as data (no Docker engine here): only the relay signs, so only the
relay is given the ledger's signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"


def _services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", [])]  # type: ignore[misc]


def test_only_the_relay_mounts_the_signing_key() -> None:
    services = _services()
    relay = services["relay"]
    signer_dir = relay["environment"]["COI_SIGNER_DIR"]
    (key_volume,) = [source for source, target in _mounts(relay) if target == signer_dir]
    holders = {name for name, s in services.items() if key_volume in {src for src, _ in _mounts(s)}}
    assert holders == {"relay"}
    for name, service in services.items():
        environment = service.get("environment") or {}
        if name != "relay":
            assert "COI_SIGNER_DIR" not in environment and "COI_LEDGER_KEY" not in environment, name
            assert all(not target.startswith(signer_dir) for _, target in _mounts(service)), name


def test_the_relay_keeps_the_shared_settings() -> None:
    services = _services()
    assert (
        services["relay"]["environment"]["COI_DATABASE_URL"]
        == services["ingest"]["environment"]["COI_DATABASE_URL"]
    )
