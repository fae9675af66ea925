"""Offline bundles for one batch: `coi export bundle --batch B` and `coi verify-bundle`, on a
demo ledger of many patients (default 2,000), against the issue's 1 s targets.

The ledger is the demo's own (`ledger.demo.run.run_demo`: the demo cast, every variant, the
refusals the rules require), under one signed checkpoint. For a batch of a patient in the
middle of the log it times, `--repeat` times each (median and worst printed):
  * export: `export_bundle(read-only source, Request(batch=B))` in this process, and `coi export bundle`
    as a process (Python start and imports included);
  * verify: `verify_bundle(zip, [ledger key])` in this process, and `coi verify-bundle` as a
    process.
`--db PATH` keeps an SQLite ledger (and PATH.vkey, its checkpoint verifier key) for later
runs; `--postgres-url URL` builds the ledger afresh in a database of its own on that server
(coi_bench_bundle, dropped at the end).

Run: python benchmarks/bundle.py [--patients N] [--db PATH | --postgres-url URL] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from common import machine_info
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.application import LedgerApplication
from ledger.app.bundle import export_bundle
from ledger.app.log import MerkleLog
from ledger.audit.bundle import verify_bundle
from ledger.audit.bundle_format import Request
from ledger.demo.run import run_demo
from ledger.store.snapshot import snapshot
from ledger.store.sources import SqlSource, open_source
from ledger.transparency.checkpoint import NoteSigner, NoteVerifier
from ledger.transparency.records import header_of, row_record

TARGET_SECONDS = 1.0  # each of export and verify-bundle for one batch
ORIGIN = "coi-ledger.bench/bundle"
COI = [str(Path(sys.executable).parent / "coi")]
PG_DATABASE = "coi_bench_bundle"


def build(url: str, key: Path, patients: int) -> NoteVerifier:
    """The demo's ledger of `patients` journeys, integrated and signed; its verifier key,
    written to `key`."""
    started = time.perf_counter()
    app = LedgerApplication(url)
    try:
        if run_demo(app, patients, key.parent / f"{key.name}.cast", io.StringIO()) != 0:
            raise SystemExit("benchmark failed: the demo had unexpected outcomes")
        signer = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
        MerkleLog(app).checkpoint(signer, ORIGIN, memory=None)
    finally:
        app.close()
    key.write_text(signer.verifier.encode() + "\n")
    print(f"built:    {patients:,} patients in {time.perf_counter() - started:.0f} s")
    return signer.verifier


def middle_batch(source: SqlSource) -> tuple[str, int]:
    """The batch of the patient whose record is in the middle of the log; the log's size."""
    size = source.size()
    with snapshot(source) as log:
        middle = log.leaf_sequence(size // 2)
        assert middle is not None
        for row in log.records("sequence >= ?", (middle,)):
            coi = header_of(row_record(row).envelope).coi
            if coi is not None:
                return f"B-{coi}", size
    raise SystemExit("benchmark failed: no patient in the second half of the log")


@contextlib.contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A database of the benchmark's own on `server`, new, dropped at the end."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{PG_DATABASE}"))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


def timed(repeat: int, work: object) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        seconds.append(time.perf_counter() - started)
    return seconds


def command(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark failed: {shlex.join(args)}: exit {done.returncode}: {done.stderr}")


def line(label: str, seconds: list[float]) -> None:
    median, worst = statistics.median(seconds), max(seconds)
    verdict = "PASS" if worst < TARGET_SECONDS else "MISS"
    print(f"{label:<34} median {median * 1000:7.0f} ms   worst {worst * 1000:7.0f} ms   {verdict} (< 1 s)")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=2000)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, help="keep an SQLite ledger here (built once)")
    where.add_argument("--postgres-url", help="build the ledger on this PostgreSQL server")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    print(*machine_info(), sep="\n")
    print(f"command:  python benchmarks/bundle.py {shlex.join(argv)}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.postgres_url:
            url, key = stack.enter_context(postgres_database(args.postgres_url)), Path(tmp) / "ledger.vkey"
        else:
            db = args.db or Path(tmp) / "ledger.sqlite"
            url, key = f"sqlite:///{db}", Path(f"{db}.vkey")
        verifier = NoteVerifier.decode(key.read_text()) if key.exists() else build(url, key, args.patients)
        source = open_source(url)
        batch, size = middle_batch(source)
        try:
            exported = export_bundle(source, Request(batch=batch))
            export_seconds = timed(args.repeat, lambda: export_bundle(source, Request(batch=batch)))
        finally:
            source.close()
        bundle = Path(tmp) / "batch.zip"
        bundle.write_bytes(exported.data)
        report = verify_bundle(bundle, [verifier])
        if report.failure is not None:
            raise SystemExit(f"benchmark failed: the bundle does not verify: {report.failure}")
        verify_seconds = timed(args.repeat, lambda: verify_bundle(bundle, [verifier]))
        env = {**os.environ, "COI_DATABASE_URL": url, "COI_DATA_DIR": tmp}
        export_cli = [*COI, "export", "bundle", "--batch", batch, "--out", str(Path(tmp) / "cli.zip")]
        verify_cli = [*COI, "verify-bundle", str(bundle), "--trusted-key", str(key)]
        export_process = timed(args.repeat, lambda: command(export_cli, env))
        verify_process = timed(args.repeat, lambda: command(verify_cli, env))
    print(
        f"ledger:   {size:,} records; batch {batch}: {exported.records} records in the bundle "
        f"({len(exported.manifest.selected)} of the patient, the rest registry and policy), "
        f"{len(exported.data) / 1024:,.0f} KiB"
    )
    line("export_bundle (in process)", export_seconds)
    line("coi export bundle --batch (process)", export_process)
    line("verify_bundle (in process)", verify_seconds)
    line("coi verify-bundle (process)", verify_process)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
