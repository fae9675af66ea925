"""`coi publish`: signed envelopes to Kafka through the site outbox, and back their receipts."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    TYPE_CHECKING,
    UsageError,
    add_format,
    lines,
    print_outcomes,
    say,
)

if TYPE_CHECKING:
    from ledger.app.application import Outcome
    from ledger.cli.common import Subparsers
    from ledger.site.publisher import SitePublisher


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("publish", help="publish signed envelopes to Kafka via the site outbox")
    s.add_argument("source", help="file of envelopes (JSON lines), or - for standard input")
    s.add_argument("--wait", type=float, default=60, help="seconds to wait for receipts (default 60)")
    add_format(s)


def run(args: argparse.Namespace) -> int:
    from consumers.pipeline import configured_bootstrap

    bootstrap = configured_bootstrap()
    if bootstrap is None:
        raise UsageError("no Kafka: set COI_KAFKA_BOOTSTRAP, or run `coi up` in another terminal")
    report_failed_passphrases()
    publisher = site_publisher(bootstrap)
    try:
        outcomes = through(publisher, list(lines(args.source)), args.wait)
    finally:
        publisher.close()
    print_outcomes(outcomes, args.format)
    if any(o.code == "not_acknowledged" for o in outcomes):
        return EXIT_FAILED
    return EXIT_USAGE if any(o.status == "rejected" for o in outcomes) else EXIT_OK


def report_failed_passphrases() -> None:
    """The wrong passphrases typed here since the last publish, on standard error, then
    forgotten (ledger/site/attempts.py keeps them until then)."""
    from ledger.audit.trust import config_dir
    from ledger.site.attempts import clear_passphrase_failures, pending_passphrase_failures

    failures = pending_passphrase_failures(config_dir())
    for f in failures:
        say(
            f"coi: wrong passphrase for {f.principal_id} (key {f.keyid}) at {f.at.isoformat()} in {f.where}",
            sys.stderr,
        )
    if failures:
        print(
            f"coi: {len(failures)} wrong passphrase(s); if not yours, tell an administrator", file=sys.stderr
        )
    clear_passphrase_failures(config_dir(), failures)


def site_publisher(bootstrap: str) -> SitePublisher:
    from ledger.app.config import data_dir
    from ledger.site.publisher import SitePublisher
    from ledger.wire.kafka_topics import Topics

    return SitePublisher(bootstrap, Topics.from_env(), data_dir() / "site-outbox.sqlite", resend_after=15)


def through(publisher: SitePublisher, raws: list[bytes], timeout: float) -> list[Outcome]:
    """Publish, wait for the ledger's receipts and rejections, and report them as outcomes."""
    from ledger.app.application import Outcome

    ids = publisher.publish_many(raws)
    outcomes = []
    for entry in publisher.wait(ids, timeout):
        if entry.status == "accepted":
            outcomes.append(Outcome("accepted", entry.event_id, entry.type, sequence=entry.sequence))
        elif entry.status == "rejected":
            outcomes.append(
                Outcome("rejected", entry.event_id, entry.type, code=entry.code, message=entry.message,
                        field=entry.field)
            )  # fmt: skip
        else:
            message = f"no receipt within {timeout:.0f} s; it stays in the outbox and is sent again"
            outcomes.append(
                Outcome("rejected", entry.event_id, entry.type, code="not_acknowledged", message=message)
            )
    return outcomes
