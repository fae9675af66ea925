"""`coi demo`: realistic journeys through the ledger, with a summary of what happened."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TextIO

import msgspec

from ledger.app.application import LedgerApplication, Outcome
from ledger.app.servicekey import service_key_path
from ledger.demo.journeys import VARIANTS, Cast, Step, compressed_run
from ledger.demo.kit import cohort, service_member, workload
from ledger.site.signing import Member, registration
from ledger.store.logstore import LogStore
from ledger.wire.keys import key_file_for, load_key, write_key_file

DEMO_PASSPHRASE = b"demo-passphrase"  # demo keys only, stated in the README

OUTCOMES = {
    "happy": "infused; a record corrected with reason",
    "qc_failure": "sterility failed -> deviation opened; batch rejected; shipment refused",
    "excursion": "excursion -> hold -> QA release -> infused",
    "identity_mismatch": "bedside mismatch -> deviation opened by the ledger; infusion blocked",
    "retest": "endotoxin failed -> QA-authorised retest conforms -> deviation closed -> infused",
}


class CastEntry(msgspec.Struct):
    principal_id: str
    roles: tuple[str, ...]
    site: str


class DemoError(Exception):
    """The demo cannot run on this ledger; the message says what to do instead."""


def save_cast(cast: Cast, folder: Path) -> None:
    """Key files for every member (people's encrypted with the demo passphrase)."""
    for m in cast.members.values():
        passphrase = DEMO_PASSPHRASE if m.kind == "person" else None
        write_key_file(
            folder / f"{m.principal_id}.key",
            key_file_for(m.key, m.principal_id, m.printed_name, m.kind, passphrase),
        )
    entries = [CastEntry(m.principal_id, m.roles, m.site) for m in cast.members.values()]
    (folder / "cast.json").write_bytes(msgspec.json.encode(entries))


def load_cast(folder: Path) -> Cast:
    entries = msgspec.json.decode((folder / "cast.json").read_bytes(), type=list[CastEntry])
    members = []
    for e in entries:
        loaded = load_key(folder / f"{e.principal_id}.key", DEMO_PASSPHRASE)
        members.append(
            Member(e.principal_id, loaded.printed_name, loaded.kind, e.roles, e.site, loaded.signer.key)
        )
    return Cast(members)


Submit = Callable[[list[bytes]], Iterable[Outcome]]


def _service(app: LedgerApplication, cast: Cast, at: datetime) -> list[bytes]:
    """The ledger's service principal, registered as `coi init` does, so the demo ledger locks
    keys and opens the deviation of its bedside mismatch; none for a log with no origin (and no
    COI_SERVICE_KEY), which has no place for its key."""
    path = service_key_path(LogStore(app.recorder).origin())
    if path is None:
        return []
    return [registration(cast.admin, service_member(path, cast.admin.site), at)]


def run_demo(
    app: LedgerApplication,
    patients: int,
    keys_dir: Path,
    out: TextIO,
    prog: str = "coi",
    submit: Submit | None = None,
) -> int:
    """Runs `patients` journeys (cycling through the variants); 0 when every step had the
    outcome it should, 1 otherwise. `submit` sends envelopes and returns their outcomes in
    order: straight into `app` by default, or through Kafka when the pipeline runs."""
    send: Submit = submit or app.submit_many
    started = time.perf_counter()
    run = compressed_run(app.clock(), patients)
    if app.recorder.max_notification_id():
        if not (keys_dir / "cast.json").exists():
            raise DemoError(
                "this ledger was not set up by the demo; run the demo on its own data folder, "
                "e.g. COI_DATA_DIR=demo-data coi demo"
            )
        cast = load_cast(keys_dir)
        registrations: list[bytes] = []
    else:
        cast = Cast()
        registrations = cast.registrations(run.registered_at)
    # The cast, its sites, then the first boundary: the demo's records are judged by this code's rules.
    setup = [*cast.setup(run.registered_at), *_service(app, cast, run.registered_at)] if registrations else []
    for outcome in send(setup):
        if outcome.status != "accepted":
            raise DemoError(f"registering the demo principals failed: {outcome.message}")
    if registrations:
        keys_dir.mkdir(parents=True, exist_ok=True)
        save_cast(cast, keys_dir)

    journeys = list(
        itertools.islice(cohort(cast, run.first_start, run.stagger, VARIANTS, run.hour), patients)
    )
    # Interleaved as live sites would send them, the refusals the rules require included.
    tagged = workload(journeys, accepted_only=False)
    tally: dict[str, Counter[str]] = {j.coi: Counter() for j in journeys}
    surprises: list[str] = []
    steps: list[Step] = [s for _, s in tagged]
    for (journey, step), outcome in zip(tagged, send([s.envelope for s in steps]), strict=True):
        expected = "accepted" if step.expect is None else step.expect
        got = "accepted" if outcome.status == "accepted" else (outcome.code or outcome.status)
        tally[journey.coi]["accepted" if got == "accepted" else "refused"] += 1
        if got != expected:
            surprises.append(
                f"{journey.coi} {outcome.type}: expected {expected}, got {got}: {outcome.message}"
            )
    elapsed = time.perf_counter() - started

    print(f"{'#':>3}  {'COI':<15}  {'route':<24}  {'stored':>6}  {'refused':>7}  outcome", file=out)
    for i, j in enumerate(journeys):
        route = f"{j.hospital} > {j.factory} > {j.hospital}"
        t = tally[j.coi]
        counts = f"{t['accepted']:>6}  {t['refused']:>7}"
        print(f"{i + 1:>3}  {j.coi:<15}  {route:<24}  {counts}  {OUTCOMES[j.variant]}", file=out)
    total = sum(t["accepted"] for t in tally.values())
    refused = sum(t["refused"] for t in tally.values())
    print(
        f"\n{patients} patients, {len(registrations)} principals registered, {total} journey events stored, "
        f"{refused} refused as the rules require, in {elapsed:.2f} s.",
        file=out,
    )
    if surprises:
        print("\nUNEXPECTED OUTCOMES:", *surprises, sep="\n  ", file=out)
        return 1
    first = journeys[0].coi
    mismatch = next((j.coi for j in journeys if j.variant == "identity_mismatch"), first)
    rejected = next((j.coi for j in journeys if j.variant == "qc_failure"), first)
    print(
        "\nNext:\n"
        + "".join(
            f"  {prog} {command:<34}  {what}\n"
            for command, what in (
                (f"history {first}", "the signed history of one patient"),
                (f"find B-{first}", "the patient a batch belongs to, and the records naming it"),
                (f"audit timeline {mismatch}", "a bedside mismatch, and where each unit stands"),
                ("audit register --open", "deviations and holds still open"),
                ("schema > event.schema.json", "the body schema for site systems"),
            )
        )
        + f"  {prog} export genealogy --batch B-{rejected} --format html --out batch.html --with-bundle\n"
        "      a batch's genealogy as a printable QA report, beside the records it rests on\n"
        + f"  {prog} sign --key {keys_dir}/nurse.bdw.key BODY.json | {prog} submit -\n"
        "      sign and submit your own event (demo passphrase: demo-passphrase)",
        file=out,
    )
    return 0
