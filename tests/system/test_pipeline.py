"""The pipeline under faults, with real processes and a real Kafka-protocol broker (an
external cluster when COI_KAFKA_BOOTSTRAP is set, else testcontainers or Tansu)."""

from __future__ import annotations

import base64
import io
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from kafka.partitioner.default import DefaultPartitioner

from consumers.broker import TansuBroker, ensure_topics, free_port
from ledger import cli
from ledger.app.application import LedgerApplication
from ledger.audit.trust import TrustStore
from ledger.demo.harness import Services, alive, children, stopped, wait_until
from ledger.demo.journeys import Cast, Step, compressed_run
from ledger.demo.kit import cohort, workload
from ledger.site import kafka
from ledger.site.kafka import consumer
from ledger.site.publisher import SitePublisher
from ledger.site.signing import Member, envelope
from ledger.transparency.checkpoint import verify as verify_note
from ledger.wire import events as ev
from ledger.wire.dsse import MAX_ENVELOPE_BYTES
from ledger.wire.kafka_topics import Topics
from ledger.wire.messages import Rejection, SecurityEntry, SignedCheckpoint
from projections.rebuild import rebuild
from projections.store import ProjectionStore
from tests.support import body_dict, signed

M = TypeVar("M", bound=msgspec.Struct)


@pytest.fixture
def stack(tmp_path: Path, bootstrap: str) -> Iterator[Services]:
    s = Services(tmp_path, bootstrap, Topics(f"t{uuid.uuid4().hex[:8]}."), COI_CHECKPOINT_SECONDS="2")
    s.create().close()  # the ledger and the relay's key, as coi init makes them
    ensure_topics(bootstrap, s.topics)
    yield s
    s.stop()


def test_keys_land_where_the_default_partitioner_puts_them(stack: Services) -> None:
    """The ledger's producers cache the key hash; a patient's events must still land on the
    partition any other Kafka client would choose for that COI."""
    ours = kafka.producer(stack.bootstrap)
    default = kafka.producer(stack.bootstrap, partitioner=DefaultPartitioner())
    try:
        keys = [f"COI-{i:04d}".encode() for i in range(64)] * 2  # the second round hits the cache
        placed = [
            [p.send(stack.topics.ledger, key=k, value=b"x").get(timeout=30).partition for k in keys]
            for p in (ours, default)
        ]
    finally:
        ours.close()
        default.close()
    assert placed[0] == placed[1]
    assert len(set(placed[0])) > 1


def journeys(cast: Cast, patients: int) -> list[Step]:
    """Every accepted step of `patients` happy journeys (those of tests/support.py
    `new_journey`), interleaved as live sites send them."""
    run = compressed_run(datetime.now(UTC), patients=1000)
    happy = cohort(cast, run.first_start, run.stagger, hour=run.hour)
    return [s for _, s in workload(itertools.islice(happy, patients))]


def publisher(stack: Services, resend_after: float = 30.0) -> SitePublisher:
    return SitePublisher(
        stack.bootstrap, stack.topics, stack.root / "outbox.sqlite", resend_after=resend_after
    )


def registered(stack: Services, cast: Cast, resend_after: float = 30.0) -> SitePublisher:
    """A site publisher through which the cast has been registered (the ingest and relay run)."""
    site = publisher(stack, resend_after)
    ids = site.publish_many(cast.registrations(compressed_run(datetime.now(UTC)).registered_at))
    entries = site.wait(ids, 90)
    # A string, not a tuple: pytest shortens the repr of anything else, and CI needs the logs.
    assert all(e.status == "accepted" for e in entries), (
        f"{entries}\nstored: {stack.stored()}\n{stack.logs()}"
    )
    return site


def ingesting(stack: Services, cast: Cast, resend_after: float = 30.0) -> SitePublisher:
    """The ingest and relay started, and the cast registered through a site publisher."""
    stack.start("ingest", "relay")
    return registered(stack, cast, resend_after)


def assert_exactly_once(stack: Services, steps: list[Step], registrations: int) -> None:
    app = LedgerApplication(stack.ledger_url)
    envelopes = [env for _, _, env in app.records()]
    assert len(envelopes) == len(set(envelopes)) == registrations + len(steps)
    assert {s.envelope.decode() for s in steps} <= set(envelopes)


def test_publish_ingest_relay_project_end_to_end(stack: Services, cast: Cast) -> None:
    for service in ("ingest", "relay", "projector"):
        stack.start(service)
    site = registered(stack, cast)
    steps = journeys(cast, 3)
    entries = site.wait(site.publish_many(s.envelope for s in steps), 120)
    assert all(e.status == "accepted" and e.sequence for e in entries), stack.logs()
    assert_exactly_once(stack, steps, len(cast.members))
    projections = ProjectionStore(stack.projections_url)
    wait_until(lambda: len(projections.snapshot().timeline) > 0 and _caught_up(stack, projections), 60,
               "the projector", stack)  # fmt: skip
    live = projections.snapshot()
    rebuilt = ProjectionStore(f"sqlite:///{stack.root / 'rebuilt.sqlite'}")
    rebuild(LedgerApplication(stack.ledger_url), rebuilt)
    assert live == rebuilt.snapshot()
    # The relay signs tree heads by policy (every 2 s here) and publishes each one once.
    total = stack.stored()
    seen = consumer(stack.bootstrap, stack.topics.checkpoints)
    heads: list[SignedCheckpoint] = []
    wait_until(lambda: _drain(seen, heads, SignedCheckpoint) > 0 and heads[-1].tree_size == total, 30,
               "a checkpoint of the whole log on coi.checkpoints", stack)  # fmt: skip
    seen.close()
    sizes = [h.tree_size for h in heads]
    assert sizes == sorted(set(sizes))
    trusted = [e.verifier for e in TrustStore().entries()]  # `register` made the ledger and its key
    assert trusted
    for head in heads:
        signed, _ = verify_note(head.note, trusted)
        assert (signed.origin, signed.size) == (head.origin, head.tree_size)
        assert base64.b64encode(signed.root).decode() == head.root_hash


def test_a_record_over_the_brokers_message_limit_goes_by_reference_and_wedges_nothing(
    stack: Services, cast: Cast
) -> None:
    """The issue's 5.4 MB record made the relay retry MessageSizeTooLargeError for ever. Here
    the relay's broker limit is small instead, so most records are over it: each goes on
    coi.ledger by reference, and the projector reads it from the store."""
    stack.start("ingest")
    stack.start("relay", COI_KAFKA_MAX_MESSAGE_BYTES="1000")
    stack.start("projector")
    site = registered(stack, cast)
    steps = journeys(cast, 2)
    entries = site.wait(site.publish_many(s.envelope for s in steps), 90)
    assert all(e.status == "accepted" for e in entries), f"{entries}\n{stack.logs()}"
    assert "by reference" in (stack.root / "relay.log").read_text()
    projections = ProjectionStore(stack.projections_url)
    wait_until(lambda: _caught_up(stack, projections), 60, "the projector", stack)


def _caught_up(stack: Services, projections: ProjectionStore) -> bool:
    rebuilt = ProjectionStore(f"sqlite:///{stack.root / f'probe-{uuid.uuid4().hex[:6]}.sqlite'}")
    rebuild(LedgerApplication(stack.ledger_url), rebuilt)
    return projections.snapshot() == rebuilt.snapshot()


def test_ingest_killed_mid_batch_stores_every_event_exactly_once(stack: Services, cast: Cast) -> None:
    first = stack.start("ingest")
    stack.start("relay")  # receipts for the registrations
    site = registered(stack, cast)
    stack.kill(first, signal.SIGTERM)
    # A backlog larger than one poll (2,000 messages): the ingest stops itself once it has
    # stored its first poll, before it commits the offsets, and is killed there.
    steps = journeys(cast, 70)
    site.publish_many(s.envelope for s in steps)
    before = stack.stored()
    busy = stack.start("ingest", stop_at="ingest.saved")
    wait_until(lambda: stopped(busy.pid), 60, "the ingest to stop after its first stored poll", stack)
    workers = children(busy.pid)  # its signature-checking processes
    assert workers
    assert before < stack.stored() < before + len(steps)
    stack.kill(busy, signal.SIGKILL)  # stored, not committed
    wait_until(lambda: not any(alive(pid) for pid in workers), 10, "its workers to exit with it", stack)
    stack.start("ingest")
    wait_until(lambda: stack.stored() == len(cast.members) + len(steps), 120, "every event stored", stack)
    assert_exactly_once(stack, steps, len(cast.members))


def test_a_killed_signature_worker_is_replaced_and_nothing_is_lost(stack: Services, cast: Cast) -> None:
    first = stack.start("ingest")
    stack.start("relay")
    site = registered(stack, cast)
    stack.kill(first, signal.SIGTERM)
    steps = journeys(cast, 3)  # a backlog: its batches are large enough for the workers
    site.publish_many(s.envelope for s in steps)
    ingest = stack.start("ingest")
    wait_until(lambda: bool(children(ingest.pid)), 30, "its signature workers", stack)
    os.kill(children(ingest.pid)[0], signal.SIGKILL)  # as the OOM killer would
    wait_until(lambda: stack.stored() == len(cast.members) + len(steps), 120, "every event stored", stack)
    assert ingest.poll() is None, "the service recovers by itself"
    assert_exactly_once(stack, steps, len(cast.members))


def test_projector_killed_midway_equals_a_full_rebuild(stack: Services, cast: Cast) -> None:
    for service in ("ingest", "relay"):
        stack.start(service)
    site = registered(stack, cast)
    steps = journeys(cast, 8)
    site.wait(site.publish_many(s.envelope for s in steps), 120)
    projector = stack.start("projector", stop_at="projector.applied")
    projections = ProjectionStore(stack.projections_url)
    wait_until(
        lambda: stopped(projector.pid), 60, "the projector to stop after its first applied poll", stack
    )
    assert stack.projected()  # its positions, stored with the rows
    stack.kill(projector, signal.SIGKILL)
    stack.start("projector")
    wait_until(lambda: _caught_up(stack, projections), 90, "the projector to catch up", stack)


def test_two_ingest_consumers_share_partitions_and_keep_per_patient_order(
    stack: Services, cast: Cast
) -> None:
    site = ingesting(stack, cast)
    steps = journeys(cast, 16)
    half = len(steps) // 2
    ids = site.publish_many(s.envelope for s in steps[:half])
    stack.start("ingest")  # joins the group: a rebalance while events flow
    log = stack.root / "ingest.log"
    # The group rebalances once the second one has joined: both log their new partitions.
    wait_until(lambda: log.read_text().count("partitions") >= 3, 90, "a rebalance between the two", stack)
    ids += site.publish_many(s.envelope for s in steps[half:])
    entries = site.wait(ids, 180)
    assert all(e.status == "accepted" for e in entries), [e for e in entries if e.status != "accepted"][:3]
    assert_exactly_once(stack, steps, len(cast.members))
    app = LedgerApplication(stack.ledger_url)
    by_coi: dict[str, list[str]] = {}
    for step in steps:  # publish order, per patient
        coi = msgspec.json.decode(base64.b64decode(msgspec.json.decode(step.envelope)["payload"]))["coi"]
        by_coi.setdefault(coi, []).append(step.envelope.decode())
    recorded: dict[str, list[str]] = {}
    for _, _, env in app.records():
        payload = msgspec.json.decode(base64.b64decode(msgspec.json.decode(env)["payload"]))
        if "coi" in payload:
            recorded.setdefault(payload["coi"], []).append(env)
    assert recorded == by_coi


def test_bad_input_goes_to_the_rejected_topic_and_good_events_behind_it_pass(
    stack: Services, cast: Cast
) -> None:
    site = ingesting(stack, cast)
    steps = journeys(cast, 1)
    enrolled = site.wait([site.publish(steps[0].envelope)], 60)[0]
    assert enrolled.status == "accepted"
    coi = msgspec.json.decode(base64.b64decode(msgspec.json.decode(steps[0].envelope)["payload"]))["coi"]
    stranger = Member.new("nurse.bdw", "Impostor", "person", ("collection",), "US-BDW")
    at = datetime.now(UTC)
    good = envelope(ev.DeviationOpened, cast["nurse.bdw"], at, coi=coi, deviation_id="D-1",
                    description="smudged label", severity="minor")  # fmt: skip
    plain = {"payloadType": "text/plain", "payload": "", "signatures": []}
    bad = {
        "malformed_json": b"{not json",
        "oversize": b'{"payloadType": "' + b"x" * 300_000 + b'"}',
        "wrong_payload_type": msgspec.json.encode(plain),
        "unknown_key": envelope(
            ev.DeviationOpened, stranger, at, coi=coi, deviation_id="D-2", description="x", severity="minor"
        ),
        "out_of_sequence": envelope(
            ev.QcSampleTaken, cast["analyst.ssf"], at, coi=coi, batch_id="B-x", sample_id="S"
        ),
    }
    ids = [site.publish(raw) for raw in bad.values()] + [site.publish(good)]
    # The outbox refuses an oversize envelope without sending it; another producer may not.
    raw_producer = kafka.producer(stack.bootstrap)
    raw_producer.send(stack.topics.site_events, key=coi.encode(), value=bad["oversize"]).get(timeout=30)
    raw_producer.close()
    entries = site.wait(ids, 90)
    assert [e.code for e in entries[:-1]] == list(bad), [(e.status, e.code, e.message) for e in entries]
    assert entries[-1].status == "accepted"
    seen = consumer(stack.bootstrap, stack.topics.rejected)
    rejections: list[Rejection] = []
    wait_until(lambda: _drain(seen, rejections, Rejection) >= len(bad), 30, "the rejections on coi.rejected")
    seen.close()
    by_code = {r.code: r for r in rejections}
    assert set(by_code) == set(bad)
    assert base64.b64decode(by_code["malformed_json"].original) == bad["malformed_json"]
    assert by_code["oversize"].original_size == len(bad["oversize"])
    # and each in the security log, on coi.security, with where it was consumed
    seen = consumer(stack.bootstrap, stack.topics.security)
    logged: list[SecurityEntry] = []
    wait_until(lambda: _drain(seen, logged, SecurityEntry) >= len(bad), 30, "the entries on coi.security")
    seen.close()
    by_source = {(r.source_topic, r.source_partition, r.source_offset): r.code for r in rejections}
    assert {(e.source, e.code) for e in logged} == {
        (f"kafka:{topic}/{partition}/{offset}", code)
        for (topic, partition, offset), code in by_source.items()
    }
    assert {e.code: e.principal for e in logged}["unknown_key"] == "nurse.bdw"
    # only the analyst's envelope was signed by a key in force: refused by the journey's rules
    assert {e.code for e in logged if e.authenticated} == {"out_of_sequence"}


def test_coi_publish_prints_each_outcome_with_its_type_and_field_and_refuses_oversize_unsent(
    stack: Services, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = ingesting(stack, cast)
    site.close()
    enrolment = journeys(cast, 1)[0]
    unknown_field = signed({**body_dict(enrolment), "event_id": str(uuid.uuid4()), "wristband": "x"},
                           cast["nurse.bdw"])  # fmt: skip
    oversize = b'{"payloadType": "' + b"x" * MAX_ENVELOPE_BYTES + b'"}'
    lines = stack.root / "envelopes.jsonl"
    lines.write_bytes(b"\n".join([enrolment.envelope, unknown_field, oversize]) + b"\n")
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    assert cli.main(["publish", str(lines), "--wait", "90"], out) == 2, out.getvalue() + stack.logs()
    printed = out.getvalue().splitlines()
    assert re.fullmatch(r"1: accepted  seq=\d+ enrolled \S+", printed[0]), printed
    assert printed[1].startswith("2: rejected  unknown_field: ") and printed[1].endswith("[wristband]"), (
        printed
    )
    assert printed[2].startswith("3: rejected  oversize: "), printed
    seen = consumer(stack.bootstrap, stack.topics.rejected)
    rejections: list[Rejection] = []
    wait_until(lambda: _drain(seen, rejections, Rejection) >= 1, 30, "the rejection on coi.rejected")
    _drain(seen, rejections, Rejection)
    seen.close()
    assert [r.code for r in rejections] == ["unknown_field"]  # the oversize one was never sent


def test_a_resend_neither_reads_the_receipts_again_nor_sends_what_was_refused(
    stack: Services, cast: Cast
) -> None:
    site = ingesting(stack, cast, resend_after=0)
    steps = journeys(cast, 1)
    refused = signed(
        {**body_dict(steps[0]), "event_id": str(uuid.uuid4()), "wristband": "x"}, cast["nurse.bdw"]
    )
    assert [e.status for e in site.wait(site.publish_many([steps[0].envelope, refused]), 60)] == [
        "accepted", "rejected"
    ]  # fmt: skip
    positions = {tp: site.acks.position(tp) for tp in site.acks.assignment()}
    site.publish(steps[1].envelope)
    assert site.resend_due() == 1  # the new one, not the refused one
    assert {tp: site.acks.position(tp) for tp in site.acks.assignment()} == positions
    assert site.wait([site.publish(steps[1].envelope)], 60)[0].status == "accepted"


def _drain(kafka_consumer: object, into: list[M], kind: type[M]) -> int:
    for batch in kafka_consumer.poll(timeout_ms=500).values():  # type: ignore[attr-defined]
        into.extend(msgspec.json.decode(m.value, type=kind) for m in batch)
    return len(into)


def test_broker_restart_loses_messages_and_the_outbox_makes_the_ledger_whole(
    tmp_path: Path, cast: Cast
) -> None:
    port = free_port()
    broker = TansuBroker(port=port, log=tmp_path / "broker.log").start()
    stack = Services(tmp_path, broker.bootstrap, Topics("restart."), COI_CHECKPOINT_SECONDS="2")
    try:
        ensure_topics(broker.bootstrap, stack.topics)
        site = ingesting(stack, cast, resend_after=3)
        steps = journeys(cast, 8)
        ids = site.publish_many(s.envelope for s in steps[: len(steps) // 2])
        wait_until(lambda: stack.stored() > len(cast.members) + 10, 60, "a first part stored", stack)
        broker.stop()  # Tansu keeps messages in memory only: whatever was in flight is gone
        broker = TansuBroker(port=port, log=tmp_path / "broker.log").start()
        ensure_topics(broker.bootstrap, stack.topics)
        ids += site.publish_many(s.envelope for s in steps[len(steps) // 2 :])
        entries = site.wait(ids, 180)
        missing = [e for e in entries if e.status != "accepted"]
        assert not missing, f"{missing[:3]}\n{stack.logs()}"
        assert_exactly_once(stack, steps, len(cast.members))
    finally:
        stack.stop()
        broker.stop()


def test_coi_up_runs_the_demo_and_publish_through_kafka_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """The README's main job: `coi up` in one terminal, `coi demo` and `coi publish` in another."""
    env = {**os.environ, "COI_DATA_DIR": str(tmp_path / "coi-data"), "COI_TOPIC_PREFIX": "readme."}
    for name in ("COI_DATABASE_URL", "COI_PROJECTIONS_URL"):
        env.pop(name, None)
    coi = [sys.executable, "-m", "ledger.cli"]
    services: list[int] = []
    with open(tmp_path / "up.log", "wb") as log:
        up = subprocess.Popen([*coi, "up"], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_until(lambda: (tmp_path / "coi-data" / "pipeline.json").exists(), 30, "coi up to start")
        demo = subprocess.run([*coi, "demo", "--patients", "2"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=240)  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr + (tmp_path / "up.log").read_text()
        assert "through Kafka" in demo.stderr
        published = subprocess.run([*coi, "publish", "-"], env=env, cwd=tmp_path, input="{not json\n",
                                   capture_output=True, text=True, timeout=120)  # fmt: skip
        assert published.returncode == 2, published.stdout + published.stderr
        assert published.stdout.startswith("1: rejected  malformed_json")
        services = children(up.pid)
        # two ingests, relay, projector, and the local broker unless a cluster is configured
        assert len(services) == 4 + ("COI_KAFKA_BOOTSTRAP" not in env)
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        up.wait(60)
    assert up.returncode == 0
    wait_until(lambda: not any(alive(pid) for pid in services), 10, "every service and the broker to stop")
    assert not (tmp_path / "coi-data" / "pipeline.json").exists()
    with sqlite3.connect(tmp_path / "coi-data" / "ledger.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0] > 60  # 2 journeys


def test_coi_up_backs_off_a_crashing_service_and_gives_up_loudly(tmp_path: Path, bootstrap: str) -> None:
    """A service that crashes at once (here: a projection store URL it cannot use) is
    restarted after a growing pause, and after repeated crashes `coi up` stops everything
    and says why, instead of restarting it at once, for ever."""
    env = {**os.environ, "COI_DATA_DIR": str(tmp_path / "coi-data"), "COI_TOPIC_PREFIX": "crash.",
           "COI_KAFKA_BOOTSTRAP": bootstrap, "COI_PROJECTIONS_URL": "mysql://nowhere/x"}  # fmt: skip
    env.pop("COI_DATABASE_URL", None)
    up = subprocess.run([sys.executable, "-m", "ledger.cli", "up", "--ingests", "1"], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert up.returncode == 1, up.stderr[-3000:]
    assert "projector exited with 2; restarting it in 1 s" in up.stderr
    assert "projector exited with 2; restarting it in 4 s" in up.stderr
    assert "coi up: projector crashed 5 times in a row; giving up" in up.stderr
