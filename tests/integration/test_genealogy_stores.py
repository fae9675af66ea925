"""The genealogy export on both stores: gathered from a SQLite or PostgreSQL ledger through the
read-only source, verified, built and rendered in every format, and rendered again from its
bundle's records alone, byte for byte (what `coi verify-bundle` compares)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.application import LedgerApplication
from ledger.app.bundle import bound
from ledger.app.log import MerkleLog
from ledger.audit.bundle import bundle_of, verify_bundle
from ledger.audit.bundle_format import ExportEntry
from ledger.demo.journeys import Cast
from ledger.store.sources import open_source
from ledger.transparency.checkpoint import NoteSigner
from projections.export.build import build
from projections.export.evidence import gather
from projections.export.formats import FORMATS, renderer
from projections.export.reproduce import made_with, remaker
from projections.export.uris import Ids
from tests.stores import ledger_url
from tests.support import advance, new_journey

SIGNER = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())


def test_every_format_exports_from_either_store_and_renders_again_from_its_bundle(
    registered: LedgerApplication, cast: Cast
) -> None:
    journeys = [new_journey(cast, variant, index=i) for i, variant in enumerate(("happy", "qc_failure"))]
    for journey in journeys:
        advance(registered, journey)
    MerkleLog(registered).checkpoint(SIGNER, SIGNER.name, memory=None)
    for journey in journeys:
        source = open_source(ledger_url(registered))
        try:
            evidence = gather(source, journey.coi, lambda _: [SIGNER.verifier])
        finally:
            source.close()
        assert evidence.verification.status == "verified", evidence.verification.failure
        ids = Ids("https://id.example.org", journey.coi)
        document = build(evidence.sources, journey.coi, ids, evidence.verification, "COI", datetime.now(UTC))
        assert document.outcome.stage == ("infused" if journey.variant == "happy" else "rejected")
        for fmt in FORMATS:
            data = renderer(fmt)(document)
            entry = ExportEntry(f"x.{fmt}", fmt, "", len(data), made_with(document))
            bundle = bundle_of("b.zip", io.BytesIO(bound(evidence.bundle, entry).data))
            report = verify_bundle(bundle, [SIGNER.verifier])
            assert report.failure is None, report.failure
            assert remaker([SIGNER.verifier])(bundle, entry) == data, fmt
