"""Realistic vein-to-vein journeys across the four sites, as the sites would sign them.

Each step is an envelope plus the outcome expected of it: most are accepted, a few are
attempts the ledger must refuse (shipping a rejected batch, moving a held unit, infusing
after a failed bedside check).
"""

from __future__ import annotations

import itertools
import secrets
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregates.policy import RULES_VERSION, Policy
from aggregates.principal import DUAL_CONTROL_ROLES
from aggregates.therapy import REQUIRED_QC, excursion_ids, failure_deviation
from ledger.site.signing import Member, SiteInfo, adoption, envelope, registration, site_record
from ledger.wire import events as ev
from ledger.wire.identifiers import with_check
from ledger.wire.patient import Wristband, patient_private_key, patient_public_key, sign_bedside

HOSPITALS = {"US-BDW": ("W0451", "Bridgewater NJ"), "JP-KAS": ("J0788", "Kashiwa")}
FACTORIES = {"US-SSF": "South San Francisco", "NL-LEI": "Leiden"}
COURIER_SITE = "US-WCX"
# Every site the demo's events happen at, registered before the first boundary (aggregates/site.py).
SITES = (
    SiteInfo("US-BDW", "Bridgewater NJ", "US", "America/New_York", "treatment"),
    SiteInfo("JP-KAS", "Kashiwa", "JP", "Asia/Tokyo", "treatment"),
    SiteInfo("US-SSF", "South San Francisco", "US", "America/Los_Angeles", "manufacturing"),
    SiteInfo("NL-LEI", "Leiden", "NL", "Europe/Amsterdam", "manufacturing"),
    SiteInfo(COURIER_SITE, "West Coast courier hub", "US", "America/Los_Angeles", "courier_hub"),
)

VARIANTS = ("happy", "qc_failure", "excursion", "identity_mismatch", "retest")

# The release test each variant fails, and what Cell Q reports: (specification, a passing
# result, a failing one); the tests not listed report against "conforms".
FAILED_QC = {"qc_failure": "sterility", "retest": "endotoxin"}
QC_READOUTS = {
    "sterility": ("conforms", "conforms", "growth detected day 5"),
    "endotoxin": ("<= 0.5 EU/mL", "< 0.1 EU/mL", "2.1 EU/mL"),
}


@dataclass
class Step:
    event_id: uuid.UUID
    envelope: bytes
    expect: str | None  # None: accepted; else the reason code it must be rejected with


class Cast:
    """Everyone who signs in the demo, two administrators first (dual control)."""

    def __init__(self, members: list[Member] | None = None) -> None:
        people = members if members is not None else self._new_members()
        self.members = {m.principal_id: m for m in people}
        self.admin = people[0]

    @staticmethod
    def _new_members() -> list[Member]:
        people = [
            Member.new("admin.root", "Riley Root", "person", ("admin",), "US-SSF"),
            Member.new("admin.deputy", "Dana Deputy", "person", ("admin",), "US-SSF"),
        ]
        for site in HOSPITALS:
            s = site[3:].lower()
            people += [
                Member.new(f"coord.{s}", f"Casey Coordinator {s.upper()}", "person", ("enrolment",), site),
                Member.new(
                    f"nurse.{s}", f"Noor Nurse {s.upper()}", "person", ("collection", "treatment"), site
                ),
                Member.new(f"witness.{s}", f"Wes Witness {s.upper()}", "person", ("treatment",), site),
            ]  # fmt: skip
        for site in FACTORIES:
            s = site[3:].lower()
            people += [
                Member.new(f"recv.{s}", f"Robin Receiver {s.upper()}", "person", ("manufacturing",), site),
                Member.new(f"shuttle.{s}", f"Cell Shuttle {s.upper()}", "device", ("manufacturing",), site),
                Member.new(f"cellq.{s}", f"Cell Q {s.upper()}", "device", ("qc",), site),
                Member.new(f"analyst.{s}", f"Ana Analyst {s.upper()}", "person", ("qc",), site),
                Member.new(f"qa.{s}", f"Quinn QA {s.upper()}", "person", ("qa",), site),
            ]  # fmt: skip
        people += [
            Member.new("courier.wc", "Cole Courier", "person", ("courier",), COURIER_SITE),
            Member.new("logger.wc", "Data Logger WC", "device", ("logger",), COURIER_SITE),
        ]
        return people

    def __getitem__(self, principal_id: str) -> Member:
        return self.members[principal_id]

    def registrations(self, at: datetime, bound: bool = True) -> list[bytes]:
        """Each member registered by the first administrator (bound to its own site, or, with
        `bound` False, to none: a ledger from before sites); a grant of admin or qa after the
        first two administrators cosigned by the second (aggregates/principal.py dual control)."""
        first_two = self.admins[:2]
        return [
            registration(
                self.admin,
                m,
                at,
                tuple(first_two[1:]) if DUAL_CONTROL_ROLES & set(m.roles) and m not in first_two else (),
                sites=None if bound else (),
            )
            for m in self.members.values()
        ]

    @property
    def admins(self) -> list[Member]:
        """The cast's administrators, the first one first."""
        return [m for m in self.members.values() if "admin" in m.roles]

    def adoption(self, at: datetime, policy: Policy | None = None) -> bytes:
        """The first boundary (aggregates/policy.py), signed by every administrator of the cast."""
        return adoption(
            self.admins, policy or Policy(RULES_VERSION), at, "the rules of this code from the start"
        )

    def sites(self, at: datetime) -> list[bytes]:
        """The demo's sites, registered by its administrator."""
        return [site_record(self.admin, site, at) for site in SITES]

    def setup(self, at: datetime) -> list[bytes]:
        """A new ledger's first records: the cast, its sites, then the first boundary."""
        return [*self.registrations(at), *self.sites(at), self.adoption(at)]


# Each journey takes the next number: unique within a process (random draws collide by the
# birthday bound at a few thousand patients), from a random start so that runs differ.
_NUMBERS = itertools.count(secrets.randbelow(10**6))
_BASE36 = string.digits + string.ascii_uppercase


def _base36(n: int, width: int) -> str:
    digits = ""
    for _ in range(width):
        n, d = divmod(n, 36)
        digits = _BASE36[d] + digits
    return digits


# The longest variant lasts about 286 journey hours (12 days, from enrolment to infusion).
JOURNEY_HOURS = 290


@dataclass(frozen=True)
class Timeline:
    """When a compressed run happens: principals registered at `registered_at`, patient i
    starting at `start(i)`, and one journey hour lasting `hour`."""

    registered_at: datetime
    first_start: datetime
    stagger: timedelta
    hour: timedelta

    def start(self, index: int) -> datetime:
        return self.first_start + index * self.stagger


def compressed_run(now: datetime, patients: int = 1, span: timedelta = timedelta(minutes=2)) -> Timeline:
    """Journeys that end by `now`, twelve days of each compressed into a fraction of `span`,
    with the principals registered just before. The ledger judges keys at its own clock and
    refuses a key valid from more than the clock skew before it receives the key's
    registration, so a run dated weeks back could not be registered."""
    registered_at = now - span - timedelta(seconds=5)
    return Timeline(
        registered_at=registered_at,
        first_start=registered_at + timedelta(seconds=1),
        stagger=span / 4 / max(patients, 1),
        hour=span * 3 / 4 / JOURNEY_HOURS,
    )


class Journey:
    """One patient: enrolment at a hospital, manufacture at a factory, back for infusion.
    `hour` is how long one journey hour lasts (compressed runs: well under a second)."""

    def __init__(
        self,
        cast: Cast,
        index: int,
        start: datetime,
        variant: str = "happy",
        hour: timedelta = timedelta(hours=1),
    ) -> None:
        self.cast = cast
        self.variant = variant
        self.hospital = list(HOSPITALS)[index % 2]
        self.factory = list(FACTORIES)[(index // 2) % 2]
        fin = HOSPITALS[self.hospital][0]
        year = f"{start.year % 100:02d}"
        number = next(_NUMBERS)
        self.coi = f"CH{fin}{year}{_base36(number, 6)}"
        self.din = with_check(f"{fin}{year}{number % 10**6:06d}")
        self.salt = secrets.token_bytes(16)  # the hospital's, never in the ledger
        self.clock = start
        self.hour = hour
        self.tag = index
        self.wristband = self._wristband(index)

    @staticmethod
    def _wristband(n: int) -> Wristband:
        return Wristband(f"MRN-{n:06d}", "Doe", f"Pat {n}", f"1970-01-{n % 28 + 1:02d}")

    def _at(self, hours: float) -> datetime:
        self.clock += hours * self.hour
        return self.clock

    def _step(
        self, cls: type[ev.Body], actor: str, hours: float = 1, expect: str | None = None,
        cosigners: tuple[str, ...] = (), event_id: uuid.UUID | None = None, **fields: object,
    ) -> Step:  # fmt: skip
        at = self._at(hours)
        members = tuple(self.cast[c] for c in cosigners)
        event_id = event_id or uuid.uuid4()
        signed = envelope(cls, self.cast[actor], at, members, coi=self.coi, event_id=event_id, **fields)
        return Step(event_id, signed, expect)

    def steps(self) -> Iterator[Step]:
        h, f = self.hospital[3:].lower(), self.factory[3:].lower()
        nurse, recv, qa = f"nurse.{h}", f"recv.{f}", f"qa.{f}"
        bag, batch, product = f"BAG-{self.coi}", f"B-{self.coi}", f"P-{self.coi}-1"
        sample, shipment = f"S-{self.coi}", f"SH-{self.coi}"
        yield self._step(
            ev.Enrolled, f"coord.{h}", patient_key=patient_public_key(self.salt, self.wristband),
            order_id=f"ORD-{self.coi[-6:]}", product="autologous anti-CD19 CAR-T",
            treatment_site=self.hospital,
        )  # fmt: skip
        yield self._step(ev.LabelPrinted, nurse, label_id=f"L1-{self.coi}", din=self.din)
        yield self._step(ev.LabelPrinted, nurse, 0.1, label_id=f"L2-{self.coi}", din=self.din)
        yield self._step(
            ev.LabelVoided, nurse, 0.1, label_id=f"L2-{self.coi}", reason="misprint: smudged barcode"
        )
        start = self._at(1)
        collected = self._step(
            ev.ApheresisCollected, nurse, 3, din=self.din, product_code="S1234A00",
            collection_facility=self.din[:5], unit_id=bag, started_at=start,
            ended_at=start + 3 * self.hour, volume_ml=180.0,
        )  # fmt: skip
        yield collected
        yield self._step(ev.LabelApplied, nurse, 0.1, label_id=f"L1-{self.coi}", unit_id=bag)
        yield self._custody([bag], nurse, "courier.wc", "collection centre dock")
        yield self._custody([bag], "courier.wc", recv, f"{FACTORIES[self.factory]} receiving", hours=18)
        yield self._step(
            ev.MaterialReceived, recv, unit_ids=[bag], location="receiving bay 2",
            condition="intact, 4 C", scanned_coi=self.coi, scanned_dins=[self.din],
        )  # fmt: skip
        yield self._step(
            ev.ManufacturingStarted, f"shuttle.{f}", 2, batch_id=batch, shuttle_id=f"SHUTTLE-{f.upper()}-03",
            slot=self.tag % 16 + 1, cartridge_id=f"CART-{self.coi}", recipe_version="CD19-v4.2",
            input_unit_ids=[bag],
        )  # fmt: skip
        for step in ("enrichment", "activation", "transduction", "expansion", "formulation"):
            began = self.clock
            yield self._step(
                ev.ManufacturingStepCompleted, f"shuttle.{f}", 24, batch_id=batch, step=step,
                started_at=began, ended_at=began + 24 * self.hour,
                material_lots=[f"LOT-{step[:3].upper()}-7"],
            )  # fmt: skip
        yield self._step(
            ev.ManufacturingCompleted,
            f"shuttle.{f}",
            outputs=[ev.Output(product, "S1234A01", 68.0)],
            batch_id=batch,
        )
        yield self._step(ev.QcSampleTaken, f"analyst.{f}", batch_id=batch, sample_id=sample)
        failing = FAILED_QC.get(self.variant)
        for test in REQUIRED_QC:
            result = self._qc_result(batch, sample, test, passed=test != failing)
            yield result
            if test == failing and self.variant == "retest":
                yield from self._retest(batch, sample, test, failure_deviation(result.event_id), qa)
        if self.variant == "qc_failure":
            yield self._step(ev.Disposition, qa, 4, "qc_failed", batch_id=batch, decision="released")
            yield self._step(
                ev.Disposition, qa, 1, batch_id=batch, decision="rejected",
                reason=f"{failing} release test failed: the batch is not fit for release",
            )  # fmt: skip
            yield self._dispatch(recv, product, shipment, expect="out_of_sequence")
            return
        yield self._step(ev.Disposition, qa, 4, batch_id=batch, decision="released")
        yield self._dispatch(recv, product, shipment)
        yield self._custody([product], recv, "courier.wc", "dispatch dock")
        for celsius in (-182.0, -181.5):
            yield self._step(
                ev.TemperatureRecorded,
                "logger.wc",
                4,
                shipment_id=shipment,
                logger_id="LOG-77",
                celsius=celsius,
            )
        if self.variant == "excursion":
            excursion = self._step(
                ev.TemperatureExcursion, "logger.wc", 2, shipment_id=shipment, logger_id="LOG-77",
                celsius=-140.0, limit_celsius=-150.0, duration_s=1200,
            )  # fmt: skip
            yield excursion
            hold_id, deviation_id = excursion_ids(excursion.event_id)
            yield self._custody([product], "courier.wc", nurse, "hospital pharmacy", expect="unit_on_hold")
            yield self._step(
                ev.DeviationClosed, qa, 6, deviation_id=deviation_id,
                outcome="logger data reviewed: product stayed below -150 C at the bag; no impact",
            )  # fmt: skip
            yield self._step(
                ev.HoldReleased, qa, 0.5, hold_id=hold_id, reason="excursion assessed, no impact"
            )
        yield self._custody([product], "courier.wc", nurse, "hospital pharmacy")
        yield self._step(
            ev.ShipmentReceived, nurse, shipment_id=shipment, location="cell therapy lab",
            condition="intact, logger in range", logger_reviewed=True,
        )  # fmt: skip
        if self.variant == "identity_mismatch":  # the nurse scans another patient's wristband
            yield self._bedside(product, self._wristband(self.tag + 1), h)
            yield self._infusion(product, nurse, expect="identity_mismatch")
            return
        yield self._bedside(product, self.wristband, h)
        yield self._infusion(product, nurse)
        yield self._step(
            ev.RecordCorrected, qa, 24, corrects_event_id=collected.event_id, field="volume_ml",
            old_value="180.0", new_value="182.0", reason="volume transcribed wrongly from the apheresis log",
        )  # fmt: skip

    def _qc_result(self, batch: str, sample: str, test: str, passed: bool) -> Step:
        specification, good, bad = QC_READOUTS.get(test, ("conforms", "conforms", "out of specification"))
        return self._step(
            ev.QcResultRecorded, f"cellq.{self.factory[3:].lower()}", 6, batch_id=batch, sample_id=sample,
            test=test, method=f"{test} assay (Cell Q)", result=good if passed else bad,
            specification=specification, passed=passed,
        )  # fmt: skip

    def _retest(self, batch: str, sample: str, test: str, deviation_id: str, qa: str) -> Iterator[Step]:
        """QA finds the failed run invalid and authorises a retest under the deviation the
        failure opened; the retest conforms and QA closes the deviation."""
        yield self._step(
            ev.RetestAuthorised, qa, 2, batch_id=batch, deviation_id=deviation_id, test=test,
            reason="assay run suspect: spike recovery out of range; retest from the retained sample",
        )  # fmt: skip
        yield self._qc_result(batch, sample, test, passed=True)
        yield self._step(
            ev.DeviationClosed, qa, 1, deviation_id=deviation_id, outcome="invalid assay run: retest conforms"
        )

    def _custody(
        self,
        units: list[str],
        giver: str,
        taker: str,
        location: str,
        hours: float = 1,
        expect: str | None = None,
    ) -> Step:
        return self._step(
            ev.CustodyTransferred, giver, hours, expect, (taker,), unit_ids=units,
            from_custodian=giver, to_custodian=taker, location=location, condition="intact",
        )  # fmt: skip

    def _dispatch(self, recv: str, product: str, shipment: str, expect: str | None = None) -> Step:
        return self._step(
            ev.ShipmentDispatched, recv, 2, expect, shipment_id=shipment, unit_ids=[product],
            shipper_id="DRYSHIPPER-12", data_logger_id="LOG-77", destination_site=self.hospital,
        )  # fmt: skip

    def _bedside(self, product: str, scanned: Wristband, h: str) -> Step:
        """The bedside device derives the key from the scan and the hospital's salt, and signs."""
        event_id = uuid.uuid4()
        signature = sign_bedside(patient_private_key(self.salt, scanned), self.coi, product, event_id)
        return self._step(
            ev.BedsideIdentityVerified, f"nurse.{h}", 48, None, (f"witness.{h}",), unit_id=product,
            patient_signature=signature, witness=f"witness.{h}", event_id=event_id,
        )  # fmt: skip

    def _infusion(self, product: str, nurse: str, expect: str | None = None) -> Step:
        thaw = self._at(0.5)
        return self._step(ev.Infused, nurse, 0.5, expect, unit_id=product, thaw_started_at=thaw)
