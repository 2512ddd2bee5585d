"""Flap damping (damping.py) and the core's use of it (truth.py): pure, `now` passed in."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer import damping as dm
from tests.support.corekit import ALLOW, FAIL, OK, core, feed, none, specs

A = ipaddress.ip_address
N = ipaddress.ip_network
P = dm.DampingPolicy()


def _flaps(times: list[float], p: dm.DampingPolicy = P) -> dm.Damp | None:
    d = None
    for t in times:
        d = dm.withdrawn(d, t, p)
    return d


def test_one_or_two_failures_are_left_alone_and_a_third_soon_after_damps() -> None:
    assert not _flaps([0.0]).suppressed  # type: ignore[union-attr]
    assert not _flaps([0.0, 1.0]).suppressed  # type: ignore[union-attr]
    assert _flaps([0.0, 10.0, 20.0]).suppressed  # type: ignore[union-attr]
    assert not _flaps([0.0, 60.0, 120.0]).suppressed  # type: ignore[union-attr]


def test_a_damped_vip_is_reused_when_the_penalty_decays_below_reuse() -> None:
    d = _flaps([0.0, 10.0, 20.0])
    assert d is not None
    at = d.reuse_at(P)
    assert dm.settle(d, at - 0.001, P) is d  # still held
    after = dm.settle(d, at, P)
    assert after is not None and not after.suppressed
    assert abs(d.now(at, P) - P.reuse) < 1e-6
    assert dm.settle(after, at + 10 * P.half_life, P) is None  # forgotten


def test_the_penalty_is_capped_so_no_vip_is_held_longer_than_max_hold() -> None:
    d = _flaps([float(t) for t in range(0, 3600, 5)])  # an hour of flapping
    assert d is not None and d.penalty <= P.ceiling + 1e-6
    assert d.reuse_at(P) - d.at <= P.max_hold + 1e-6


def test_inconsistent_settings_are_named() -> None:
    assert dm.DampingPolicy(reuse=3000).problems()[0][0] == "reuse"
    assert ("max_hold", "too short: the penalty could never exceed suppress") in dm.DampingPolicy(
        max_hold=10
    ).problems()
    assert P.problems() == []


@settings(max_examples=300)
@given(gaps=st.lists(st.floats(0.0, 600.0), min_size=1, max_size=40))
def test_properties_over_any_flap_history(gaps: list[float]) -> None:
    times, t = [], 0.0
    for g in gaps:
        t += g
        times.append(t)
    d = _flaps(times)
    assert d is not None
    assert 0 < d.penalty <= P.ceiling + 1e-6
    assert d.reuse_at(P) <= times[-1] + P.max_hold + 1e-6  # bounded hold after the last flap
    if len(times) <= 2:
        assert not d.suppressed  # one or two withdrawals never damp
    later = dm.settle(d, times[-1] + P.max_hold + 1.0, P)
    assert later is None or not later.suppressed  # always released in the end


# ------------------------------------------------------------------ in the core


def test_a_flapping_vip_is_held_withdrawn_then_announced_again() -> None:
    c = core()
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    now = feed(c, "192.0.2.10", OK, 2, 1.0)
    for _ in range(3):  # down and up again, three times in about 20 s
        now = feed(c, "192.0.2.10", FAIL, 2, now + 3.0)
        now = feed(c, "192.0.2.10", OK, 2, now + 0.5)
    assert str(c.vips[A("192.0.2.10")].state) == "UP"
    d = c.truth.damped(A("192.0.2.10"))
    assert d is not None
    assert c.desired(now, none, ALLOW) == {}  # UP, but damped: not announced
    wake = c.next_wake()
    assert wake is not None and wake == d.reuse_at(P)
    assert c.expire(wake).reused == [A("192.0.2.10")]
    assert set(c.desired(wake, none, ALLOW)) == {N("192.0.2.10/32")}


def test_damping_off_never_holds() -> None:
    c = core()
    c.truth.damping_policy = dm.DampingPolicy(enabled=False)
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    now = feed(c, "192.0.2.10", OK, 2, 1.0)
    for _ in range(5):
        now = feed(c, "192.0.2.10", FAIL, 2, now + 1.0)
        now = feed(c, "192.0.2.10", OK, 2, now + 1.0)
    assert c.truth.damps == {} and set(c.desired(now, none, ALLOW)) == {N("192.0.2.10/32")}


def test_only_withdrawals_that_happen_count() -> None:
    vips = [f"192.0.2.{i}" for i in range(10, 20)]
    c = core()
    c.apply(specs(*vips), 0.0, none, vip_loss=None)
    now = 1.0
    for a in vips:
        feed(c, a, OK, 2, now)
    for _ in range(3):  # three mass faults in a minute: the guard keeps every route
        for _ in range(2):
            for a in vips:
                feed(c, a, FAIL, 1, now)
            now += 0.5
        assert c.truth.guard is not None
        for _ in range(2):
            for a in vips:
                feed(c, a, OK, 1, now)
            now += 0.5
    assert c.truth.damps == {}
    # A VIP that is not local has no route for health to take away.
    c.set_local([A(vips[0])], {A(vips[0])})
    for _ in range(3):
        now = feed(c, vips[0], FAIL, 2, now + 1.0)
        now = feed(c, vips[0], OK, 2, now + 1.0)
    assert c.truth.damps == {}
