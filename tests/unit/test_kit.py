"""The kit the demo, the tests and the benchmarks share: interleaving keeps every patient's
order (so any prefix is a valid workload), a workload is cut to size, the clock is the one given."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates.base import body_of
from ledger.demo.journeys import VARIANTS, Cast
from ledger.demo.kit import RECENT, ManualClock, cohort, interleave, recent_cohort, workload


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(), max_size=8), max_size=6), st.data())
def test_interleaving_keeps_each_queues_order_in_every_prefix(
    queues: list[list[int]], draw: st.DataObject
) -> None:
    tagged = [[(q, item) for item in queue] for q, queue in enumerate(queues)]
    merged = interleave(tagged)
    assert sorted(merged) == sorted(x for queue in tagged for x in queue)
    cut = draw.draw(st.integers(0, len(merged)), label="prefix")
    for q, queue in enumerate(tagged):
        mine = [x for x in merged[:cut] if x[0] == q]
        assert mine == queue[: len(mine)]
    # Round robin: the first round takes the head of every queue that has one.
    heads = [queue[0] for queue in tagged if queue]
    assert merged[: len(heads)] == heads


def test_a_workload_is_cut_to_size_from_as_few_journeys_as_needed(cast: Cast) -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    steps = workload(cohort(cast, start, timedelta(minutes=1)), 40)
    journeys = list(dict.fromkeys(journey for journey, _ in steps))
    assert len(steps) == 40 and len(journeys) == 2  # a happy journey has 33 accepted steps
    assert all(step.expect is None for _, step in steps)


def test_the_demo_workload_keeps_the_refusals_the_rules_require(cast: Cast) -> None:
    variants = ("happy", "qc_failure")
    journeys = list(itertools.islice(cohort(cast, datetime(2026, 1, 5, tzinfo=UTC), variants=variants), 2))
    refused = [step.expect for _, step in workload(journeys, accepted_only=False) if step.expect]
    assert refused == ["qc_failed", "out_of_sequence"]


def test_a_recent_cohort_lies_after_its_registration_and_within_recent_before_now(cast: Cast) -> None:
    """So no step of a benchmark's workload is a late entry (rules version 2)."""
    now = datetime(2026, 1, 5, tzinfo=UTC)
    registered_at, journeys = recent_cohort(cast, 2000, now, VARIANTS)
    steps = workload(journeys, 2000)
    times = [body_of(step.envelope.decode()).occurred_at for _, step in steps]
    assert len(steps) == 2000
    assert registered_at < min(times) and now - RECENT <= min(times) and max(times) <= now


def test_the_manual_clock_says_what_it_was_set_to() -> None:
    clock = ManualClock(datetime(2026, 1, 5, tzinfo=UTC))
    assert clock() == datetime(2026, 1, 5, tzinfo=UTC)
    assert clock.advance(timedelta(days=1)) == clock() == datetime(2026, 1, 6, tzinfo=UTC)
