"""Running one service in the foreground: logging, clean shutdown on SIGINT/SIGTERM, and
reconnection with backoff when the broker goes away."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from typing import Protocol

from kafka.errors import KafkaError

from consumers.broker import BrokerError
from ledger.app.log import SigningRefusedError
from ledger.wire.messages import NewerFormatError

log = logging.getLogger("coi.service")


# A test hook: COI_STOP_AT=NAME, or NAME:N for the Nth pass, makes the service stop itself
# (SIGSTOP) at the named point, so a test kills it exactly there, not at a moment a sleep
# picks. Points: ingest.saved (a poll stored, its offsets not yet committed), projector.applied.
_STOP_AT = os.environ.get("COI_STOP_AT", "")
_passes: dict[str, int] = {}


def stop_point(name: str) -> None:
    if not _STOP_AT.startswith(name):
        return
    _passes[name] = _passes.get(name, 0) + 1
    point, _, nth = _STOP_AT.partition(":")
    if point == name and _passes[name] == int(nth or 1):
        log.info("%s: stopping here (COI_STOP_AT)", name)
        os.kill(os.getpid(), signal.SIGSTOP)


class Service(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # kafka-python logs every dropped connection at ERROR; the services report what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def quiet_gc() -> None:
    """Full garbage collections only rarely. A service keeps thousands of aggregates and
    projection rows in memory, and a full collection walks them all: in the ingest that was
    a 0.1 to 0.35 s pause every few seconds, the tail of the publish-to-projection latency.
    Young collections, which free almost all cyclic garbage, stay as frequent as before."""
    gc.freeze()  # what imports and start-up made lives as long as the process
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1000)


def run_forever(name: str, make: Callable[[], Service], stop: threading.Event) -> int:
    """(Re)create the service and run it until `stop`; a lost broker means wait and retry.
    Returns 0 when stopped, 1 when it gave up (only an upgrade or the operator can go on)."""
    quiet_gc()
    backoff = 1.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            make().run(stop)
        # BrokenExecutor: a signature worker process died (the OOM killer, say); a new service
        # has new workers, and what was not committed is read again.
        except (KafkaError, BrokerError, OSError, BrokenExecutor) as exc:
            if time.monotonic() - started > 30:
                backoff = 1.0
            log.warning("%s: %s; retrying in %.0f s", name, exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 15.0)
        # Read again, it would be refused again: only a newer coi-ledger can go on; signed
        # again, it would be refused again: only the operator can (the message says how).
        except (NewerFormatError, SigningRefusedError) as exc:
            log.error("%s: %s; stopped", name, exc)
            return 1
    log.info("%s: stopped", name)
    return 0
