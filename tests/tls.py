"""TLS for the transport tests: a certificate authority, server and client certificates made
here (cryptography x509), and a TLS terminator in front of a plaintext port (the local Tansu
broker cannot serve TLS), run on an asyncio loop in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


@dataclass(frozen=True)
class Pki:
    """PEM files: the authority's certificate, and a certificate and key for the server
    (127.0.0.1 and localhost) and for a client."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_env(self) -> dict[str, str]:
        """The settings of a client that trusts this authority and shows its certificate."""
        return {
            "COI_KAFKA_SECURITY_PROTOCOL": "SSL",
            "COI_KAFKA_CA": str(self.ca),
            "COI_KAFKA_CERT": str(self.client_cert),
            "COI_KAFKA_KEY": str(self.client_key),
        }

    def server_context(self) -> ssl.SSLContext:
        """A server that requires a client certificate from this authority."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_pki(folder: Path, authority: str = "coi test CA") -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, authority)])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    names = {}
    for role, usage, alt in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("coi-relay.test")]),
    ):  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"coi test {role}")])
        cert = (
            _builder(subject, ca_name, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(folder / f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM))
        _write(folder / f"{role}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))  # fmt: skip
        names[role] = (folder / f"{role}.pem", folder / f"{role}.key")
    return Pki(folder / "ca.pem", *names["server"], *names["client"])


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


class TlsTerminator:
    """Listens with TLS on `port` and passes each connection, decrypted, to a plaintext port;
    records the client certificate's subject of every completed handshake."""

    def __init__(self, port: int, target_port: int, context: ssl.SSLContext) -> None:
        self.port, self.target_port, self.context = port, target_port, context
        self.clients: list[str] = []  # the common name of each client that completed a handshake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self.context)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called only after the handshake, so a client the server context refused never gets here.
        subject = (writer.get_extra_info("peercert") or {}).get("subject", ())
        self.clients.append(common_name(subject))
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    @contextlib.contextmanager
    def running(self) -> Iterator[TlsTerminator]:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        try:
            yield self
        finally:

            async def shut() -> None:
                server.close()
                for task in asyncio.all_tasks() - {asyncio.current_task()}:
                    task.cancel()

            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def common_name(subject: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """The commonName of a subject as the ssl module gives it (a tuple of RDNs of pairs)."""
    return next((v for rdn in subject for k, v in rdn if k == "commonName"), "")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass  # the other side went away: close this one too
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()
