"""A site's backlog through the site publisher: how long until every envelope is acknowledged,
against how long the ledger takes to store them.

Run: python benchmarks/publish.py [--events N] [--ingests K]

On a Kafka-protocol broker (COI_KAFKA_BOOTSTRAP, else the local Tansu broker), with the ingest
(K processes, default 2, as `coi up` runs it) and the relay as real processes on a fresh SQLite
ledger, one `SitePublisher` (outbox in a temp file, resend after 15 s as `coi publish`) takes N
pre-signed envelopes (default 32,000; interleaved happy journeys) with `publish_many` and then
`wait`s for every receipt. It prints:

  * stored: from the start of `publish_many` until the ledger holds all N (its events table,
    polled every 50 ms), the same-run ceiling;
  * acknowledged: from the same start until `wait` returns with all N accepted;
  * the ratio, and PASS/MISS against the target (never asserted): acknowledged within twice
    the time the ledger takes to store them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_info, rate
from benchmarks.pipeline import note
from consumers.broker import bootstrap_servers, ensure_topics
from ledger.demo.harness import Services
from ledger.demo.journeys import Cast
from ledger.demo.kit import recent_cohort, workload
from ledger.site.publisher import SitePublisher
from ledger.wire.kafka_topics import Topics

TARGET_RATIO = 2.0


def run(events: int, ingests: int) -> tuple[float, float, int]:
    """(seconds until stored, seconds until acknowledged, how many were accepted)."""
    with tempfile.TemporaryDirectory(prefix="coi-publish-") as tmp, bootstrap_servers() as bootstrap:
        root = Path(tmp)
        topics = Topics(f"bench{os.getpid()}.")
        ensure_topics(bootstrap, topics)
        cast = Cast()
        registered_at, journeys = recent_cohort(cast, events, datetime.now(UTC))
        note(f"building {events:,} signed events (not timed) ...")
        raws = [step.envelope for _, step in workload(journeys, events)]
        services = Services(root, bootstrap, topics)
        total = services.register(cast, registered_at) + len(raws)
        services.start(*["ingest"] * ingests, "relay")
        site = SitePublisher(bootstrap, topics, root / "outbox.sqlite", resend_after=15)
        stored_at: list[float] = []

        def watch() -> None:
            while services.stored() < total:
                time.sleep(0.05)
            stored_at.append(time.monotonic())

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            note(f"publishing {len(raws):,} envelopes as one backlog and waiting for every receipt ...")
            began = time.monotonic()
            watcher.start()
            entries = site.wait(site.publish_many(raws), 900)
            acknowledged = time.monotonic() - began
            watcher.join(60)
        finally:
            site.close()
            services.stop()
        if not stored_at:
            raise SystemExit("the ledger never stored the whole backlog")
        return stored_at[0] - began, acknowledged, sum(e.status == "accepted" for e in entries)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=32_000)
    parser.add_argument("--ingests", type=int, default=2, help="ingest processes in the consumer group")
    args = parser.parse_args()
    command = " ".join([Path(sys.executable).as_posix(), *sys.argv])
    stored_s, acknowledged_s, accepted = run(args.events, args.ingests)
    ratio = acknowledged_s / stored_s
    verdict = "PASS" if accepted == args.events and ratio <= TARGET_RATIO else "MISS"
    print(f"command:  {command}")
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for line in machine_info():
        print(line)
    print(f"backlog:  {args.events:,} envelopes through one SitePublisher, {args.ingests} ingest process(es)")
    print(
        f"  stored by the ledger      {stored_s:7.1f} s   {rate(args.events / stored_s)} events/s (ceiling)"
    )
    print(f"  acknowledged in outbox    {acknowledged_s:7.1f} s   {accepted:,} of {args.events:,} accepted")
    print(f"  acknowledged / stored     {ratio:7.2f}     {verdict}: target <= {TARGET_RATIO:.0f}")


if __name__ == "__main__":
    main()
