"""The rise/fall state machine, driven with explicit `now` values: no sleeping."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from announcer.health import (
    Health,
    HealthParams,
    State,
    announced,
    combine,
    initial,
    observe,
)

P = HealthParams(rise=3, fall=2, interval=1.0, fast_interval=0.25)


def run(results: str, p: HealthParams = P, start: Health | None = None) -> list[State]:
    """Feed a string of results ('+' ok, '-' fail) and return the states after each."""
    h = start or initial(0.0)
    out = []
    for i, c in enumerate(results):
        h, _ = observe(h, c == "+", float(i), p)
        out.append(h.state)
    return out


def test_init_rises_after_rise_successes() -> None:
    assert run("+++") == [State.RISING, State.RISING, State.UP]


def test_init_failure_goes_down_at_once() -> None:
    assert run("-") == [State.DOWN]


def test_up_falls_after_fall_failures_and_stays_announced_meanwhile() -> None:
    states = run("+++--")
    assert states[-2:] == [State.FALLING, State.DOWN]
    assert announced(State.FALLING) and not announced(State.DOWN)


def test_success_while_falling_returns_to_up() -> None:
    assert run("+++-+")[-1] is State.UP


def test_failure_while_rising_returns_to_down() -> None:
    assert run("-++-")[-1] is State.DOWN


def test_rise_and_fall_of_one_switch_immediately() -> None:
    p = HealthParams(rise=1, fall=1)
    assert run("+-+", p) == [State.UP, State.DOWN, State.UP]


def test_transition_carries_reason_and_progress() -> None:
    h, t = observe(initial(0.0), True, 1.0, P, "HTTP 200")
    assert t is not None and (t.old, t.new) == (State.INIT, State.RISING)
    assert "HTTP 200" in t.reason and "1/3" in t.reason
    assert str(t).startswith("INIT -> RISING")
    h, t = observe(h, True, 2.0, P)
    assert t is None and h.count == 2  # no state change, streak grows
    assert h.since == 1.0


def test_fast_interval_while_undecided_slow_when_settled() -> None:
    # Each probe's result comes 0.1 s after it was due; the next is due one step after
    # the previous due time, whatever the probe took (no drift).
    h, _ = observe(initial(0.0, 10.0), True, 10.1, P)
    assert h.next_check == 10.25  # RISING: fast
    for due in (10.25, 10.5):
        h, _ = observe(h, True, due + 0.1, P)
    assert h.state is State.UP and h.next_check == 11.5  # UP: slow
    h, _ = observe(h, False, 11.6, P)
    assert h.state is State.FALLING and h.next_check == 11.75


def test_no_drift_and_missed_slots_are_skipped_not_burst() -> None:
    h = initial(0.0, 0.3)
    dues = []
    for _ in range(50):  # UP after rise, then 1 s steps; every probe takes 0.2 s
        dues.append(h.next_check)
        h, _ = observe(h, True, h.next_check + 0.2, P)
    steps = [round(b - a, 9) for a, b in itertools.pairwise(dues)]
    assert set(steps[P.rise :]) == {P.interval}, steps
    assert dues[-1] == 0.3 + 2 * P.fast_interval + (50 - 3) * P.interval
    # A probe 3.5 intervals late (a stalled loop): the next slot of the same phase
    # that is still ahead, never one in the past.
    late = h.next_check + 3.5 * P.interval
    h2, _ = observe(h, True, late, P)
    assert h2.next_check > late and h2.next_check - late <= P.interval
    assert round((h2.next_check - h.next_check) % P.interval, 9) in (0, P.interval)


def test_initial_splay() -> None:
    assert initial(5.0, 5.7).next_check == 5.7
    assert initial(5.0).next_check == 5.0


def test_params_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        HealthParams(rise=0)
    with pytest.raises(ValueError):
        HealthParams(interval=0)


def test_state_str_is_plain_name() -> None:
    assert str(State.UP) == "UP" and f"{State.DOWN}" == "DOWN"


@pytest.mark.parametrize("policy", ["all", "any"])
def test_combine_announces_exactly_as_policy_says(policy: str) -> None:
    for n in (1, 2, 3):
        for states in itertools.product(list(State), repeat=n):
            got = announced(combine(states, policy))  # type: ignore[arg-type]
            want = (all if policy == "all" else any)(announced(s) for s in states)
            assert got == want, (states, combine(states, policy))  # type: ignore[arg-type]


def test_combine_examples() -> None:
    assert combine([State.UP, State.FALLING]) is State.FALLING
    assert combine([State.UP, State.DOWN]) is State.DOWN
    assert combine([State.UP, State.DOWN], "any") is State.UP
    assert combine([]) is State.INIT


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_hysteresis_property(results: list[bool], rise: int, fall: int) -> None:
    """Announcement flips on only after `rise` successes in a row, off after `fall` failures."""
    p = HealthParams(rise=rise, fall=fall)
    h = initial(0.0)
    streak_ok = streak_fail = 0
    for i, ok in enumerate(results):
        before = announced(h.state)
        prev_state = h.state

        h, t = observe(h, ok, float(i), p)
        streak_ok = streak_ok + 1 if ok else 0
        streak_fail = 0 if ok else streak_fail + 1
        if announced(h.state) and not before:
            assert streak_ok >= rise
        if before and not announced(h.state):
            assert streak_fail >= fall
        assert (t is not None) == (h.state is not prev_state)
        assert h.next_check > float(i)


def test_alternating_results_never_move_the_announcement() -> None:
    p = HealthParams(rise=2, fall=2)
    h = initial(0.0)
    for i in range(2):
        h, _ = observe(h, True, float(i), p)
    assert h.state is State.UP
    for i in range(2, 100):
        h, _ = observe(h, i % 2 == 0, float(i), p)
        assert announced(h.state)


def test_seeded_check_starts_where_the_vip_stood() -> None:
    from announcer.health import seeded

    assert seeded(State.UP, 1.0, 2.0).state is State.UP
    assert seeded(State.FALLING, 1.0, 2.0).state is State.UP
    assert seeded(State.RISING, 1.0, 2.0).state is State.DOWN
    assert seeded(State.DOWN, 1.0, 2.0).state is State.DOWN
    assert seeded(State.INIT, 1.0, 2.0).state is State.INIT
    assert seeded(State.UP, 1.0, 2.0).next_check == 2.0
