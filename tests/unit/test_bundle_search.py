"""The export's searches: whatever its offset and alphabet, a body holding a batch id yields a
text holding one of the base64 fragments searched for (so the database misses no record); the
topics it reads are those the store files events under."""

from __future__ import annotations

import base64

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from ledger.app.bundle import _base64_fragments
from ledger.store.snapshot import REGISTRY_TOPICS, THERAPY_TOPICS
from ledger.store.streams import PolicyStream, Principal, SiteStream, Therapy
from ledger.store.topics import NAMES

IDS = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-._", min_size=1, max_size=40)


@given(IDS, st.binary(max_size=60), st.binary(max_size=20), st.booleans())
def test_every_encoding_of_a_body_naming_the_batch_holds_a_fragment(
    batch: str, before: bytes, after: bytes, urlsafe: bool
) -> None:
    needle = msgspec.json.encode(batch)
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = encode(before + needle + after).decode()
    assert any(fragment in text for fragment in _base64_fragments(needle))


def test_the_export_reads_the_topics_the_store_files_events_under() -> None:
    assert (NAMES[Therapy.Opened], NAMES[Therapy.Recorded]) == THERAPY_TOPICS
    registry = (
        *(Principal.Opened, Principal.Recorded, PolicyStream.Opened, PolicyStream.Recorded),
        *(SiteStream.Opened, SiteStream.Recorded),
    )
    assert tuple(NAMES[c] for c in registry) == REGISTRY_TOPICS
