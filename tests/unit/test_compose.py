"""docker-compose.yml read as data (no Docker engine here): only the relay signs, so only the
relay is given the ledger's signing key; no password has a default; plaintext Kafka is not
published beyond the host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

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


def test_the_ingest_and_the_relay_share_the_service_key_and_nothing_else_holds_it() -> None:
    """The ingest signs key locks with the service key `coi init` makes in the relay's
    container; the ingest never holds the checkpoint key (the test above)."""
    services = _services()
    paths = {services[name]["environment"]["COI_SERVICE_KEY"] for name in ("ingest", "relay")}
    (path,) = paths
    holders = {name for name, s in services.items() if any(path.startswith(t + "/") for _, t in _mounts(s))}
    assert holders == {"ingest", "relay"}


def test_the_relay_keeps_the_shared_settings() -> None:
    services = _services()
    assert (
        services["relay"]["environment"]["COI_DATABASE_URL"]
        == services["ingest"]["environment"]["COI_DATABASE_URL"]
    )


# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}: compose's interpolation.
_REFERENCE = re.compile(r"\$\{(?P<name>\w+)(?P<op>:?[-?])?[^}]*\}")


def _settings() -> Iterator[tuple[str, str, str]]:
    """(service, setting, value) for every environment setting, anchors resolved."""
    for name, service in _services().items():
        for setting, value in (service.get("environment") or {}).items():
            yield name, setting, str(value)


def _required(value: str) -> bool:
    """Whether `value` is one required reference: compose refuses to start without it."""
    found = _REFERENCE.fullmatch(value)
    return found is not None and found["op"] in {":?", "?"}


def test_no_password_has_a_default() -> None:
    """Passwords come from the environment of `docker compose`, never from this file: each one
    (a *PASSWORD* setting, or a URL's user:password) is a required reference, no default."""
    passwords = []
    for service, setting, value in _settings():
        if "PASSWORD" in setting and not setting.endswith("_FILE"):
            passwords.append((service, setting, value))
        for url in urlsplit_all(value):
            if url.password is not None:
                passwords.append((service, setting, unquote(url.password)))
    assert passwords  # the stack has a database: its password is somewhere
    for service, setting, value in passwords:
        assert _required(value), f"{service} {setting}: {value!r} is a default password"
    assert {m["name"] for _, _, v in passwords for m in _REFERENCE.finditer(v)} == {"COI_POSTGRES_PASSWORD"}


def urlsplit_all(value: str) -> list[SplitResult]:
    """The URLs in a setting, its ${...} references kept as they are (they hold no '@' or '/')."""
    return [urlsplit(v) for v in re.findall(r"[a-z][a-z0-9+.-]*://\S+", value)]


def test_plaintext_kafka_is_published_on_the_hosts_loopback_only() -> None:
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
