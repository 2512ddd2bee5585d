"""The VIP-loss hold (shrink.py): pure, `now` passed in, no sleeping."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.shrink import ShrinkPolicy, decide

P = ShrinkPolicy(max_fraction=0.5, confirmations=3, min_seconds=30.0)
TEN = frozenset(range(10))


def test_a_small_loss_is_taken_at_once() -> None:
    v = decide(TEN, TEN - {3}, None, 0.0, P)
    assert v.keep == TEN - {3} and v.hold is None and v.event == ""
    half = frozenset(range(5))
    assert decide(TEN, half, None, 0.0, P).keep == half  # exactly half: not "more than"


def test_an_empty_answer_is_held_until_confirmed_by_count_and_time() -> None:
    v = decide(TEN, frozenset(), None, 0.0, P)
    assert v.keep == TEN and v.event == "held" and v.hold is not None
    assert v.hold.lost == TEN and v.hold.seen == 1
    known = v.keep
    # Three answers, but only 2 s: still held.
    for t in (1.0, 2.0):
        v = decide(known, frozenset(), v.hold, t, P)
        assert v.keep == TEN and v.event == "holding"
    # Enough time, and the third answer long ago: the next answer confirms.
    v = decide(known, frozenset(), v.hold, 30.0, P)
    assert v.keep == frozenset() and v.hold is None and v.event == "confirmed"


def test_time_alone_does_not_confirm() -> None:
    v = decide(TEN, frozenset(), None, 0.0, P)
    v = decide(TEN, frozenset(), v.hold, 100.0, P)  # second answer, long after
    assert v.keep == TEN and v.event == "holding"


def test_the_vips_coming_back_release_the_hold() -> None:
    v = decide(TEN, frozenset({1}), None, 0.0, P)
    v = decide(v.keep, TEN, v.hold, 1.0, P)
    assert v.keep == TEN and v.hold is None and v.event == "released"


def test_a_different_answer_starts_over() -> None:
    v = decide(TEN, frozenset(), None, 0.0, P)
    v = decide(v.keep, frozenset(), v.hold, 10.0, P)
    v = decide(v.keep, frozenset({1}), v.hold, 20.0, P)
    assert v.event == "held" and v.hold is not None and v.hold.since == 20.0
    assert v.hold.seen == 1 and v.keep == TEN


def test_new_vips_are_taken_at_once_even_during_a_hold() -> None:
    v = decide(TEN, frozenset({100}), None, 0.0, P)
    assert v.keep == TEN | {100}


def test_disabled_takes_everything() -> None:
    off = ShrinkPolicy(enabled=False)
    assert decide(TEN, frozenset(), None, 0.0, off).keep == frozenset()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.frozensets(st.integers(0, 12), max_size=13), st.floats(0, 5)),
        min_size=1,
        max_size=30,
    )
)
def test_a_big_loss_never_counts_before_confirmations_and_min_seconds(
    answers: list[tuple[frozenset[int], float]],
) -> None:
    """Whatever the answers: a VIP leaves because of a big loss only after `confirmations`
    equal answers spanning `min_seconds`; a small loss is taken at once."""
    known: frozenset[int] = frozenset(range(10))
    hold = None
    now = 0.0
    streak: list[tuple[frozenset[int], float]] = []
    for found, dt in answers:
        now += dt
        streak = [*streak, (found, now)] if streak and streak[-1][0] == found else [(found, now)]
        lost = known - found
        v = decide(known, found, hold, now, P)
        assert found <= v.keep  # what is found is always taken
        removed = known - v.keep
        if removed and len(lost) > P.max_fraction * len(known):
            assert len(streak) >= P.confirmations
            assert now - streak[0][1] >= P.min_seconds
        if not removed and v.hold is None:
            assert v.keep == found
        known, hold = v.keep, v.hold
