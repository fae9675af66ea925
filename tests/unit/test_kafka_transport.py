"""The Kafka transport settings (ledger/site/transport.py): what each combination gives
kafka-python, every setting that cannot work refused by name, and the password never said.
TLS through a real terminator: tests/system/test_kafka_tls.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from kafka.net.sasl import get_sasl_mechanism

from ledger import cli
from ledger.app.config import redact
from ledger.site import kafka
from ledger.site.transport import security
from ledger.wire.config import ConfigError
from tests.tls import Pki, common_name, make_pki

SECRET = "s3cret-Passw0rd"
SSL, SASL = {"SECURITY_PROTOCOL": "SSL"}, {"SECURITY_PROTOCOL": "SASL_SSL", "USERNAME": "relay"}
SCRAM = {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "SCRAM-SHA-256", "USERNAME": "relay"}
SETTINGS = (
    "COI_KAFKA_SECURITY_PROTOCOL", "COI_KAFKA_CA", "COI_KAFKA_CERT", "COI_KAFKA_KEY",
    "COI_KAFKA_SASL_MECHANISM", "COI_KAFKA_USERNAME", "COI_KAFKA_PASSWORD", "COI_KAFKA_PASSWORD_FILE",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def given(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"COI_KAFKA_{name}", value)


def test_without_settings_the_clients_speak_plaintext() -> None:
    assert security() == {"security_protocol": "PLAINTEXT"}


def test_tls_loads_the_authority_and_the_client_certificate(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in pki.client_env().items():
        monkeypatch.setenv(name, value)
    settings = security()
    assert settings["security_protocol"] == "SSL"
    context = settings["ssl_context"]
    assert [common_name(ca["subject"]) for ca in context.get_ca_certs()] == ["coi test CA"]
    assert context.check_hostname and context.minimum_version.name == "TLSv1_2"


def test_tls_without_an_authority_trusts_the_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    given(monkeypatch, SECURITY_PROTOCOL="ssl")
    settings = security()
    assert settings["security_protocol"] == "SSL" and "ssl_context" in settings


def _encrypted_key(pki: Pki, folder: Path) -> Path:
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
    path = folder / "encrypted.key"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key passphrase"),
    ))  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"SECURITY_PROTOCOL": "TLS"}, "COI_KAFKA_SECURITY_PROTOCOL 'TLS'"),
        ({"CA": "{ca}"}, "COI_KAFKA_CA is set but COI_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CA": "{ca}"}, "COI_KAFKA_CA is set"),
        ({**SSL, "PASSWORD": SECRET}, "COI_KAFKA_PASSWORD is set"),
        ({**SSL, "SASL_MECHANISM": "SCRAM-SHA-256"}, "COI_KAFKA_SASL_MECHANISM is set"),
        ({**SSL, "CA": "{tmp}/nowhere.pem"}, "COI_KAFKA_CA '.*nowhere.pem': no such file"),
        ({**SSL, "CA": "{tmp}/password"}, "COI_KAFKA_CA .*: not a PEM certificate"),
        ({**SSL, "CERT": "{cert}"}, "COI_KAFKA_CERT and COI_KAFKA_KEY go together"),
        ({**SSL, "CERT": "{cert}", "KEY": "{server_key}"}, "COI_KAFKA_CERT .* and COI_KAFKA_KEY"),
        ({**SSL, "CERT": "{cert}", "KEY": "{encrypted}"}, "unencrypted private key"),
        ({**SASL, "PASSWORD": SECRET}, "COI_KAFKA_SASL_MECHANISM ''"),
        ({**SASL, "SASL_MECHANISM": "PLAIN", "PASSWORD": SECRET},
         "COI_KAFKA_SASL_MECHANISM 'PLAIN': expected one of SCRAM-SHA-256, SCRAM-SHA-512"),
        ({**SCRAM, "USERNAME": "", "PASSWORD": SECRET},
         "COI_KAFKA_USERNAME is required"),
        (SCRAM,
         "COI_KAFKA_PASSWORD or COI_KAFKA_PASSWORD_FILE is required"),
        ({**SCRAM, "PASSWORD": SECRET, "PASSWORD_FILE": "{tmp}/password"}, "not both"),
        ({**SCRAM, "PASSWORD_FILE": "{tmp}/nowhere"}, "COI_KAFKA_PASSWORD_FILE '.*nowhere': cannot read it"),
        ({**SCRAM, "PASSWORD_FILE": "{tmp}/empty"}, "COI_KAFKA_PASSWORD_FILE .*: the file is empty"),
    ],
)  # fmt: skip
def test_a_setting_that_cannot_work_is_refused_by_name(
    settings: dict[str, str], named: str, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text(SECRET + "\n")
    (tmp_path / "empty").write_text("")
    files = {"ca": pki.ca, "cert": pki.client_cert, "server_key": pki.server_key, "tmp": tmp_path,
             "encrypted": _encrypted_key(pki, tmp_path)}  # fmt: skip
    given(monkeypatch, **{name: value.format(**files) for name, value in settings.items()})
    with pytest.raises(ConfigError, match=named) as refused:
        security()
    assert SECRET not in str(refused.value)


def test_coi_says_a_bad_setting_in_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    given(monkeypatch, BOOTSTRAP="127.0.0.1:9", SECURITY_PROTOCOL="SASL_SSL", SASL_MECHANISM="SCRAM-SHA-1",
          USERNAME="relay", PASSWORD=SECRET)  # fmt: skip
    monkeypatch.setenv("COI_DATA_DIR", str(tmp_path))
    (tmp_path / "envelopes.jsonl").write_text("{}\n")
    assert cli.main(["publish", str(tmp_path / "envelopes.jsonl")], io.StringIO()) == 2
    [said] = capsys.readouterr().err.splitlines()
    assert said.startswith("coi: COI_KAFKA_SASL_MECHANISM 'SCRAM-SHA-1'") and SECRET not in said


@pytest.mark.parametrize("from_file", [False, True])
def test_redact_hides_the_kafka_password(
    from_file: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if from_file:
        (tmp_path / "password").write_text(SECRET + "\n")
        given(monkeypatch, PASSWORD_FILE=str(tmp_path / "password"))
    else:
        given(monkeypatch, PASSWORD=SECRET)
    said = redact(f"authentication failed for relay:{SECRET} at broker")
    assert said == "authentication failed for relay:*** at broker"


# ---------------------------------------------------------------- SCRAM reaches kafka-python
# No broker here does SCRAM (Tansu has no SASL): the settings are read back from the clients
# the project makes, and the client side of the exchange kafka-python builds from them is
# run against a SCRAM server (RFC 5802) that knows the right password. Against a real
# cluster: tests/system/test_kafka_tls.py, when COI_KAFKA_BOOTSTRAP says SASL.


def scram_server(mechanism: str, password: str, client: Any) -> None:
    """Authenticate `client` (kafka-python's SaslMechanismScram) as a broker would; raises
    PermissionError when its proof is not of `password`."""
    digest = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}[mechanism]
    salt, iterations = os.urandom(16), 4096
    salted = hashlib.pbkdf2_hmac(digest().name, password.encode(), salt, iterations)
    stored_key = digest(hmac.digest(salted, b"Client Key", digest)).digest()
    client_first = client.auth_bytes()
    assert client_first.startswith(b"n,,")
    bare = client_first[3:]
    nonce = dict(p.split(b"=", 1) for p in bare.split(b","))[b"r"] + base64.b64encode(os.urandom(12))
    server_first = b"r=" + nonce + b",s=" + base64.b64encode(salt) + b",i=" + str(iterations).encode()
    client.receive(server_first)
    client_final = client.auth_bytes()
    without_proof, _, proof = client_final.rpartition(b",p=")
    auth_message = bare + b"," + server_first + b"," + without_proof
    signature = hmac.digest(stored_key, auth_message, digest)
    claimed_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
    if digest(claimed_key).digest() != stored_key:
        raise PermissionError("wrong password")
    server_key = hmac.digest(salted, b"Server Key", digest)
    client.receive(b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, digest)))
    assert client.is_done()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_settings_reach_kafka_pythons_clients(
    mechanism: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text(SECRET + "\n")
    given(monkeypatch, SECURITY_PROTOCOL="SASL_PLAINTEXT", SASL_MECHANISM=mechanism.lower(),
          USERNAME="relay", PASSWORD_FILE=str(tmp_path / "password"))  # fmt: skip
    # A given api_version spares the clients their first contact with the (absent) broker.
    consumer = kafka.consumer("127.0.0.1:9", api_version=(3, 9, 0))
    producer = kafka.producer("127.0.0.1:9", api_version=(3, 9, 0))
    try:
        for config in (consumer.config, producer.config):
            assert (config["security_protocol"], config["sasl_mechanism"]) == ("SASL_PLAINTEXT", mechanism)
            assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("relay", SECRET)
            scram = get_sasl_mechanism(config["sasl_mechanism"])
            scram_server(mechanism, SECRET, scram(host="127.0.0.1", **config))
            with pytest.raises(PermissionError):
                scram_server(mechanism, "another password", scram(host="127.0.0.1", **config))
    finally:
        consumer.close()
        producer.close()
