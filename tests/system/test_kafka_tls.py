"""The pipeline over TLS. Tansu cannot serve TLS, so a TLS terminator (tests/tls.py) stands in
front of it, requiring a client certificate from an authority made here, and Tansu advertises
the terminator's port: the topic set-up, the three services and `coi publish` reach the broker
only through the transport settings (ledger/site/transport.py). SASL/SCRAM against a real
cluster when COI_KAFKA_BOOTSTRAP and the SASL settings are given."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError

from consumers.broker import TansuBroker, ensure_topics, free_port
from ledger.demo.harness import Services, wait_until
from ledger.demo.journeys import Cast, compressed_run
from ledger.site import kafka
from ledger.wire.kafka_topics import Topics
from tests.support import COI
from tests.tls import Pki, TlsTerminator, make_pki


@pytest.fixture
def terminated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Pki, TlsTerminator]]:
    """(bootstrap, the authority, the terminator): a Tansu of its own behind TLS, and this
    process's settings those of a client the terminator accepts."""
    pki = make_pki(tmp_path / "pki")
    for name in [n for n in os.environ if n.startswith("COI_KAFKA_")]:  # a configured cluster's
        monkeypatch.delenv(name)
    for name, value in pki.client_env().items():
        monkeypatch.setenv(name, value)
    port = free_port()
    broker = TansuBroker(log=tmp_path / "tansu.log", advertised_port=port).start()
    try:
        with TlsTerminator(port, broker.port, pki.server_context()).running() as terminator:
            yield f"127.0.0.1:{port}", pki, terminator
    finally:
        broker.stop()


def test_the_pipeline_runs_over_tls(
    terminated: tuple[str, Pki, TlsTerminator], cast: Cast, tmp_path: Path
) -> None:
    bootstrap, _, terminator = terminated
    stack = Services(tmp_path, bootstrap, Topics(f"t{uuid.uuid4().hex[:8]}."))
    stack.create().close()  # the ledger and the relay's key, as coi init makes them
    ensure_topics(bootstrap, stack.topics)
    try:
        stack.start("ingest", "relay", "projector")
        envelopes = cast.registrations(compressed_run(datetime.now(UTC)).registered_at)
        source = tmp_path / "registrations.jsonl"
        source.write_bytes(b"\n".join(envelopes) + b"\n")
        published = subprocess.run(
            [*COI, "publish", str(source), "--wait", "120"],
            capture_output=True, text=True, timeout=180, env=stack.env,
        )  # fmt: skip
        assert published.returncode == 0, published.stdout + published.stderr + stack.logs()
        assert published.stdout.count(": accepted ") == len(envelopes), published.stdout
        wait_until(lambda: sum(stack.projected().values()) >= len(envelopes), 60, "the projector", stack)
    finally:
        stack.stop()
    # Every connection came through TLS with our client's certificate: the admin client, the
    # services' producers and consumers, and the publisher's.
    assert set(terminator.clients) == {"coi test client"}
    assert len(terminator.clients) >= 5


@pytest.mark.parametrize("wrong", ["another authority", "no client certificate", "plaintext"])
def test_a_client_the_terminator_would_not_accept_gets_nowhere(
    wrong: str, terminated: tuple[str, Pki, TlsTerminator], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap, _, terminator = terminated
    if wrong == "another authority":
        monkeypatch.setenv("COI_KAFKA_CA", str(make_pki(tmp_path / "other", "another CA").ca))
    elif wrong == "no client certificate":
        monkeypatch.delenv("COI_KAFKA_CERT")
        monkeypatch.delenv("COI_KAFKA_KEY")
    else:
        for name in ("COI_KAFKA_SECURITY_PROTOCOL", "COI_KAFKA_CA", "COI_KAFKA_CERT", "COI_KAFKA_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(kafka, "BOOTSTRAP_TIMEOUT_MS", 3000)
    with pytest.raises(KafkaError):
        producer = kafka.producer(bootstrap)
        try:  # kafka-python may bootstrap lazily: the first send must then fail
            producer.send("coi.nowhere", b"x").get(timeout=5)
        finally:
            producer.close(timeout=2)
    assert terminator.clients == []


@pytest.mark.parametrize("command", [["up"], ["broker", "--port", "0"]])
def test_the_local_broker_is_refused_under_tls_settings(command: list[str], tmp_path: Path) -> None:
    """Tansu speaks PLAINTEXT only: `coi up` and `coi broker` say so instead of starting a
    broker no client could reach."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COI_KAFKA_")}  # no cluster
    env |= {"COI_KAFKA_SECURITY_PROTOCOL": "SSL", "COI_DATA_DIR": str(tmp_path / "coi-data")}
    done = subprocess.run([*COI, *command], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert "COI_KAFKA_SECURITY_PROTOCOL is SSL, but the local broker speaks PLAINTEXT only" in done.stderr
    assert "Traceback" not in done.stderr


def round_trip(bootstrap: str) -> None:
    """One message through a topic of its own, with the project's producer and consumer."""
    topics = Topics(f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, partitions=1)
    value = uuid.uuid4().bytes
    producer = kafka.producer(bootstrap)
    try:
        producer.send(topics.site_events, value=value).get(timeout=30)
    finally:
        producer.close()
    reader = kafka.consumer(bootstrap)
    try:
        reader.assign([TopicPartition(topics.site_events, 0)])
        reader.seek_to_beginning()
        got: list[bytes] = []

        def back() -> bool:
            got.extend(m.value for batch in reader.poll(500).values() for m in batch)
            return value in got

        wait_until(back, 30, "the message back")
    finally:
        reader.close()


def test_a_round_trip_over_tls(terminated: tuple[str, Pki, TlsTerminator]) -> None:
    bootstrap, _, terminator = terminated
    round_trip(bootstrap)
    assert terminator.clients


@pytest.mark.skipif(
    not os.environ.get("COI_KAFKA_BOOTSTRAP")
    or not os.environ.get("COI_KAFKA_SECURITY_PROTOCOL", "").upper().startswith("SASL"),
    reason="SASL against a real cluster: set COI_KAFKA_BOOTSTRAP and the SASL settings (README)",
)
def test_a_round_trip_over_sasl_on_the_configured_cluster(bootstrap: str) -> None:
    round_trip(bootstrap)
