"""How the ledger's Kafka clients reach the broker: TLS and SASL/SCRAM from the environment
(README, Configuration). Every client the project makes takes its settings from `security()`,
so none connects in the clear by oversight; a setting that would be ignored is refused, so
no one believes a connection is encrypted or authenticated when it is not.

Imports no Kafka client: `redact` (ledger/app/config.py) reads the password from here.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from ledger.wire.config import ConfigError

PROTOCOL = "COI_KAFKA_SECURITY_PROTOCOL"
CA, CERT, KEY = "COI_KAFKA_CA", "COI_KAFKA_CERT", "COI_KAFKA_KEY"
MECHANISM = "COI_KAFKA_SASL_MECHANISM"
USERNAME, PASSWORD, PASSWORD_FILE = "COI_KAFKA_USERNAME", "COI_KAFKA_PASSWORD", "COI_KAFKA_PASSWORD_FILE"

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# SCRAM only: PLAIN would hand the password itself to the broker (and, without TLS, to the
# network).
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def protocol() -> str:
    chosen = os.environ.get(PROTOCOL, "").strip().upper() or "PLAINTEXT"
    if chosen not in PROTOCOLS:
        raise ConfigError(f"{PROTOCOL} {chosen!r}: expected one of {', '.join(PROTOCOLS)}")
    return chosen


def security() -> dict[str, Any]:
    """kafka-python's keyword arguments for the configured transport (for KafkaProducer,
    KafkaConsumer and KafkaAdminClient alike); ConfigError names a setting that is missing,
    unreadable, or set where the protocol would ignore it."""
    chosen = protocol()
    settings: dict[str, Any] = {"security_protocol": chosen}
    tls, sasl = chosen in ("SSL", "SASL_SSL"), chosen.startswith("SASL_")
    _refuse_unused((CA, CERT, KEY), tls, chosen, "SSL or SASL_SSL")
    _refuse_unused((MECHANISM, USERNAME, PASSWORD, PASSWORD_FILE), sasl, chosen, "SASL_SSL or SASL_PLAINTEXT")
    if tls:
        settings["ssl_context"] = _tls_context()
    if sasl:
        mechanism = os.environ.get(MECHANISM, "").strip().upper()
        if mechanism not in MECHANISMS:
            raise ConfigError(f"{MECHANISM} {mechanism!r}: expected one of {', '.join(MECHANISMS)}")
        username = os.environ.get(USERNAME, "")
        if not username:
            raise ConfigError(f"{USERNAME} is required with {PROTOCOL}={chosen}")
        password = sasl_password()
        if password is None:
            raise ConfigError(f"{PASSWORD} or {PASSWORD_FILE} is required with {PROTOCOL}={chosen}")
        settings |= {
            "sasl_mechanism": mechanism, "sasl_plain_username": username, "sasl_plain_password": password,
        }  # fmt: skip
    return settings


def sasl_password() -> str | None:
    """The SASL password: COI_KAFKA_PASSWORD, or the first line of COI_KAFKA_PASSWORD_FILE (a
    container secret), or None. Never put in a message."""
    given, file = os.environ.get(PASSWORD, ""), os.environ.get(PASSWORD_FILE, "")
    if given and file:
        raise ConfigError(f"set {PASSWORD} or {PASSWORD_FILE}, not both")
    if not file:
        return given or None
    try:
        lines = Path(file).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{PASSWORD_FILE} {file!r}: cannot read it ({type(exc).__name__})") from None
    if not lines or not lines[0]:
        raise ConfigError(f"{PASSWORD_FILE} {file!r}: the file is empty")
    return lines[0]


def _refuse_unused(names: tuple[str, ...], used: bool, chosen: str, needs: str) -> None:
    if used:
        return
    for name in names:
        if os.environ.get(name):
            raise ConfigError(f"{name} is set but {PROTOCOL} is {chosen}: it is used with {needs} only")


def _tls_context() -> ssl.SSLContext:
    """The client's TLS context (kafka-python's own choices: TLS 1.2 or later, the broker's
    name checked against its certificate), built here so a bad file is named at start-up,
    not retried for ever as a broker that does not answer. Without COI_KAFKA_CA the system's
    trusted authorities are used."""
    ca, cert, key = (os.environ.get(name, "") for name in (CA, CERT, KEY))
    for name, value in ((CA, ca), (CERT, cert), (KEY, key)):
        if value and not Path(value).is_file():
            raise ConfigError(f"{name} {value!r}: no such file")
    if bool(cert) != bool(key):
        raise ConfigError(f"{CERT} and {KEY} go together: the client certificate and its private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca:
            context.load_verify_locations(cafile=ca)
        else:
            context.load_default_certs()
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{CA} {ca!r}: not a PEM certificate file ({exc})") from None
    if cert:
        try:
            # A key with a passphrase would make load_cert_chain ask on the terminal.
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{CERT} {cert!r} and {KEY} {key!r}: not a PEM certificate and its unencrypted "
                f"private key ({exc})"
            ) from None
    return context


def _no_passphrase() -> str:
    raise ssl.SSLError("the private key is encrypted")
