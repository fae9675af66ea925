"""Witnessed checkpoints: from the relay signing a checkpoint to having it cosigned by two
witnesses and published on coi.checkpoints.

Run: python benchmarks/witness.py [--checkpoints N]

Two witnesses run as `coi run witness` processes on loopback (port 0); the relay
(consumers/relay.py, in this process, on a fresh SQLite ledger, the broker of
COI_KAFKA_BOOTSTRAP or the local Tansu broker) has COI_WITNESSES naming both. N times
(default 500): one envelope is stored, the relay integrates it and signs a checkpoint (not
timed), then asks both witnesses in parallel, verifies their cosignatures, stores the
cosigned note and publishes it (timed: from signed until the producer's flush returns, the
broker holding the message). Each
published checkpoint must carry both cosignatures. It prints p50, p99 and the largest
against the target (never asserted): p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.common import machine_info, percentile
from benchmarks.pipeline import note
from consumers.broker import bootstrap_servers, ensure_topics
from consumers.relay import Relay
from ledger.app.application import LedgerApplication
from ledger.app.log import sign
from ledger.demo.journeys import Cast
from ledger.demo.kit import recent_cohort, register_cast, workload
from ledger.transparency.checkpoint import NoteSigner
from ledger.transparency.cosignature import Cosigner, cosignatures
from ledger.wire.kafka_topics import Topics

TARGET_P99_MS = 50.0
ORIGIN = "coi-ledger.bench/witnessed"


def _witness(root: Path, name: str, log_vkey: Path) -> tuple[subprocess.Popen[str], str, Cosigner]:
    cosigner = Cosigner.generate(f"witness.bench/{name}")
    key = root / f"{name}.key"
    key.write_text(cosigner.encode())
    key.chmod(0o600)
    (root / f"{name}.vkey").write_text(cosigner.verifier.encode())
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "run", "witness", "--key", str(key), "--listen", "127.0.0.1:0",
         "--state", str(root / f"{name}-state"), "--log", f"{ORIGIN}={log_vkey}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if " on http://" not in first:
        raise SystemExit(f"witness {name} did not start: {first}{proc.stderr.read()}")
    url = first.split(" on ", 1)[1].strip().removesuffix("/add-checkpoint")
    return proc, f"{url}={root / f'{name}.vkey'}", cosigner


def run(checkpoints: int) -> list[float]:
    """Seconds from signed to published, one per checkpoint."""
    with tempfile.TemporaryDirectory(prefix="coi-witness-") as tmp, bootstrap_servers() as bootstrap:
        root = Path(tmp)
        ledger = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
        (root / "ledger.key").write_text(ledger.encode())
        (root / "ledger.key").chmod(0o600)
        (root / "ledger.vkey").write_text(ledger.verifier.encode())
        witnesses = [_witness(root, name, root / "ledger.vkey") for name in ("w1", "w2")]
        topics = Topics(f"bench{os.getpid()}.")
        ensure_topics(bootstrap, topics)
        os.environ.update(
            COI_DATA_DIR=str(root / "coi-data"),
            COI_CONFIG_DIR=str(root / "coi-config"),  # the signer's memory and trust store: not the home
            COI_LEDGER_KEY=str(root / "ledger.key"),
            COI_LOG_ORIGIN=ORIGIN,
            COI_WITNESSES=",".join(spec for _, spec, _ in witnesses),
            COI_CHECKPOINT_EVERY=str(10**9),  # the loop below signs each one
        )
        (root / "coi-data").mkdir()
        app = LedgerApplication(f"sqlite:///{root / 'coi-data' / 'ledger.sqlite'}")
        cast = Cast()
        registered_at, journeys = recent_cohort(cast, checkpoints, datetime.now(UTC))
        register_cast(app, cast, registered_at)
        raws = [step.envelope for _, step in workload(journeys, checkpoints)]
        relay = Relay(app, bootstrap, topics)
        published: list[float] = []  # when the producer's flush returned: the broker has it
        flush = relay.producer.flush

        def timed_flush(timeout: float | None = None) -> None:
            flush(timeout)
            published.append(time.perf_counter())

        relay.producer.flush = timed_flush
        keys = [cosigner.verifier for _, _, cosigner in witnesses]
        took = []
        try:
            relay.step()  # the registrations: published, first checkpoint witnessed (not timed)
            note(f"{checkpoints} checkpoints, each cosigned by two witnesses and published ...")
            for raw in raws:
                app.submit(raw)
                size = relay.log.integrate()
                relay._publish_records(size)
                sign(relay.log)
                signed = time.perf_counter()
                relay._publish_checkpoints()
                took.append(published[-1] - signed)
                cosigned = relay.log.store.witnessed(size)
                if cosigned is None or len(cosignatures(cosigned, keys)) != 2:
                    raise SystemExit(f"the checkpoint at size {size} was not cosigned by both witnesses")
        finally:
            relay.close()
            app.close()
            for proc, _, _ in witnesses:
                proc.terminate()
                proc.wait(10)
        return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoints", type=int, default=500)
    args = parser.parse_args()
    command = " ".join([Path(sys.executable).as_posix(), *sys.argv])
    ms = [s * 1000 for s in run(args.checkpoints)]
    p99 = percentile(ms, 0.99)
    print(f"command:  {command}")
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine_info():
        print(line)
    print(f"checkpoints: {len(ms)}, each cosigned by 2 witnesses (coi run witness on loopback) and published")
    print(f"  signed -> cosigned by both and published   p50 {percentile(ms, 0.5):6.1f} ms")
    verdict = "PASS" if p99 < TARGET_P99_MS else "MISS"
    pad = " " * 45
    print(f"{pad}p99 {p99:6.1f} ms   {verdict}: target < {TARGET_P99_MS:.0f} ms")
    print(f"{pad}max {max(ms):6.1f} ms")


if __name__ == "__main__":
    main()
