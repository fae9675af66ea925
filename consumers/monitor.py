"""`coi run monitor`: keeps every checkpoint the ledger signs, outside it (consumers/archive.py),
and stops with exit 1 on a fork or a rollback.

Following the broker, it reads `coi.checkpoints` from the start; the relay publishes each
checkpoint with a consistency proof from the one it published before. Polling (`--poll`), it
reads the ledger itself, read-only, every few seconds, and computes each proof from the
ledger's tree. Either way each note is held to the last one kept for its log; polling, the
ledger's tree is also held to the largest note kept, at every poll.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psycopg
from kafka import TopicPartition

from consumers.archive import Archive, ForkError, Prove, UntrustedError
from consumers.broker import ensure_topics
from consumers.service import configure_logging, run_forever, stop_on_signals
from ledger.app.config import ConfigError
from ledger.audit.roots import Roots
from ledger.site import kafka
from ledger.store.sources import SqlSource
from ledger.transparency import merkle
from ledger.transparency.checkpoint import parse
from ledger.wire.kafka_topics import Topics
from ledger.wire.messages import SignedCheckpoint, decode

log = logging.getLogger("coi.monitor")

POLL_SECONDS = 5.0
IDLE_MS = 1000


@dataclass(frozen=True)
class Options:
    state: Path
    roots: Roots  # chosen as coi verify chooses them; what the monitor learns is added
    once: bool = False
    interval: float = POLL_SECONDS


class LedgerPoller:
    """Reads the ledger's checkpoints and holds each to the archive, proofs from its tree."""

    def __init__(self, connect: Callable[[], SqlSource], archive: Archive, where: str) -> None:
        self.connect = connect
        self.source = connect()  # the first failure to open it is the caller's to report
        self.archive = archive
        self.where = where

    def step(self) -> None:
        stored = self.source.checkpoints()
        self.archive.learn([(c.size, c.note) for c in stored], self.source.ledger_keys())
        current = None
        for checkpoint in stored:
            current = self.archive.keep(checkpoint.note, self._prover(checkpoint.size))
        origin = parse(stored[-1].note)[0].origin if stored else self._only_origin()
        if origin is not None:
            self.archive.check_size(origin, self.source.size(), self.where, current)
            # The tree now, not only its checkpoints: a rewrite may come with none.
            self.archive.check_root(origin, lambda size: merkle.root(size, self.source.nodes), self.where)

    def _prover(self, size: int) -> Prove:
        # LookupError when the ledger no longer holds the nodes: the archive counts it a failure.
        return lambda old: merkle.consistency_proof(old, size, self.source.nodes)

    def _only_origin(self) -> str | None:
        """With no checkpoint in the ledger, the log the archive keeps, if it keeps only one."""
        return next(iter(self.archive.logs)) if len(self.archive.logs) == 1 else None

    def run(self, stop: threading.Event, interval: float) -> None:
        """Polls until `stop`; a database that goes away is waited for, as a broker is."""
        log.info("monitor: polling %s every %.0f s", self.where, interval)
        while True:
            try:
                self.step()
            except (sqlite3.Error, psycopg.Error, ConfigError) as exc:
                log.warning("monitor: cannot read %s (%s); trying again in %.0f s", self.where, exc, interval)
                self._reconnect()
            if stop.wait(interval):
                return

    def _reconnect(self) -> None:
        with contextlib.suppress(sqlite3.Error, psycopg.Error):
            self.source.close()
        with contextlib.suppress(sqlite3.Error, psycopg.Error, ConfigError):
            self.source = self.connect()

    def close(self) -> None:
        self.source.close()


class TopicFollower:
    """Reads coi.checkpoints from the start (a monitor keeps every note, and notes it kept
    already are passed over) and holds each to the archive with the relay's proof."""

    def __init__(self, bootstrap: str, topics: Topics, archive: Archive) -> None:
        self.bootstrap = bootstrap
        self.topic = topics.checkpoints
        self.archive = archive
        ensure_topics(bootstrap, topics)
        self.consumer = kafka.consumer(bootstrap)
        partitions = self.consumer.partitions_for_topic(self.topic) or {0}
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)

    def run(self, stop: threading.Event, once: bool) -> None:
        log.info("monitor: following %s on %s", self.topic, self.bootstrap)
        end = self.consumer.end_offsets(self.partitions) if once else {}
        try:
            while not stop.is_set():
                for batch in self.consumer.poll(timeout_ms=IDLE_MS).values():
                    for message in batch:
                        self._take(message.value)
                if once and all(self.consumer.position(tp) >= end[tp] for tp in self.partitions):
                    return
        finally:
            self.consumer.close(timeout_ms=2000)

    def _take(self, value: bytes | None) -> None:
        try:
            message = decode(value or b"", SignedCheckpoint)
            proof = [base64.b64decode(h, validate=True) for h in message.consistency]
        except (msgspec.MsgspecError, binascii.Error, ValueError) as exc:
            log.warning("monitor: a message on %s that is not a checkpoint, passed over: %s", self.topic, exc)
            return

        def prove(old: int) -> list[bytes] | None:
            return proof if message.proof_from == old else None

        self.archive.keep(message.note, prove)


def run(options: Options, bootstrap: str | None, poll: Callable[[], SqlSource] | None) -> int:
    """The monitor in the foreground until SIGINT/SIGTERM (or, with `once`, what is there),
    following the broker at `bootstrap`, or polling the ledger `poll` opens; 1 on a fork or a
    rollback, or a checkpoint of its log that no trusted key signed."""
    configure_logging()
    stop = stop_on_signals()
    log.info("monitor: trusted roots: %s", options.roots.described)
    try:
        archive = Archive(options.state, options.roots)  # a fork kept before still stands
        kept = sum(len(sizes) for sizes in archive.logs.values())
        log.info("monitor: %d checkpoints kept in %s", kept, options.state)
        if poll is not None:
            _poll(archive, poll, options, stop)
        else:
            assert bootstrap is not None
            _follow(archive, bootstrap, options, stop)
    except (ForkError, UntrustedError) as exc:
        log.error("monitor: %s", exc)
        return 1
    return 0


def _poll(
    archive: Archive, connect: Callable[[], SqlSource], options: Options, stop: threading.Event
) -> None:
    poller = LedgerPoller(connect, archive, "the ledger")
    try:
        if options.once:
            poller.step()
        else:
            poller.run(stop, options.interval)
    finally:
        poller.close()


def _follow(archive: Archive, bootstrap: str, options: Options, stop: threading.Event) -> None:
    topics = Topics.from_env()
    if options.once:
        TopicFollower(bootstrap, topics, archive).run(stop, once=True)
        return

    class Following:
        def run(self, stop: threading.Event) -> None:
            TopicFollower(bootstrap, topics, archive).run(stop, once=False)

    run_forever("monitor", Following, stop)
