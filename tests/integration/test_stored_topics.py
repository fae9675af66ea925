"""Stored events are filed under names the ledger owns, not under Python import paths."""

from __future__ import annotations

from eventsourcing.utils import resolve_topic

from ledger.app.application import LedgerApplication
from ledger.demo.journeys import Cast
from ledger.store.topics import STORED
from tests.support import advance, new_journey


def test_new_records_are_filed_under_the_owned_names(registered: LedgerApplication, cast: Cast) -> None:
    advance(registered, new_journey(cast), before="label_applied")
    topics = {n.topic for n in registered.recorder.select_notifications(start=1, limit=1000)}
    assert topics <= set(STORED), topics - set(STORED)
    assert {
        "aggregates.principal:Principal.Opened",
        "aggregates.therapy:Therapy.Opened",
        "aggregates.therapy:Therapy.Recorded",
    } <= topics


def test_every_owned_name_resolves_to_the_class_wherever_it_lives() -> None:
    for name, cls in STORED.items():
        assert resolve_topic(name) is cls
