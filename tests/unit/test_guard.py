"""The mass-withdrawal guard (guard.py) and the core's use of it: pure, `now` passed in."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from announcer import guard as gd
from announcer.health import State
from announcer.model import MAX_PREPEND, REFUSED, CheckResult, Route
from announcer.planner import GRACEFUL_SHUTDOWN, Drain
from tests.support.corekit import ALLOW, FAIL, OK, core, feed, none, specs

A = ipaddress.ip_address
N = ipaddress.ip_network
P = gd.GuardPolicy()
REFUSE = CheckResult(False, REFUSED, 0.001)
VIPS = [f"192.0.2.{i}" for i in range(10, 20)]  # ten VIPs


def test_it_engages_above_the_share_and_calms_at_half_of_it() -> None:
    assert not gd.engages(5, 10, P)  # half is not more than half
    assert gd.engages(6, 10, P)
    assert not gd.calm(3, 10, P)  # engaged: holds while more than 2.5 fail
    assert gd.calm(2, 10, P)
    assert not gd.engages(2, 2, P)  # fewer than min_vips: never
    assert gd.calm(2, 2, P)
    assert not gd.engages(10, 10, gd.GuardPolicy(enabled=False))


@given(
    fell=st.integers(0, 1000),
    extra=st.integers(0, 1000),
    fraction=st.floats(0, 1),
    min_vips=st.integers(1, 50),
)
def test_the_rule_is_monotonic_and_has_hysteresis(
    fell: int, extra: int, fraction: float, min_vips: int
) -> None:
    p = gd.GuardPolicy(max_down_fraction=fraction, min_vips=min_vips)
    total = fell + extra
    if gd.engages(fell, total, p):
        assert gd.engages(min(total, fell + 1), total, p)  # more falls never stop it
        assert not gd.calm(fell, total, p)  # what engages is not calm at once
    if fell < min_vips:
        assert not gd.engages(fell, total, p)
        assert gd.calm(fell, total, p)


def test_a_guarded_route_is_the_healthy_one_made_worse() -> None:
    up = Route(N("192.0.2.10/32"), as_path_prepend=1)
    g = gd.guarded(up, P)
    assert g.as_path_prepend == 4 and GRACEFUL_SHUTDOWN in g.communities
    assert gd.guarded(g, P).communities.count(GRACEFUL_SHUTDOWN) == 1
    assert gd.guarded(Route(up.prefix, as_path_prepend=9), P).as_path_prepend == MAX_PREPEND


# ------------------------------------------------------------------ in the core


def _all_up(**health: Any) -> Any:
    c = core()
    c.apply(specs(*VIPS, **health), 0.0, none, vip_loss=None)
    for a in VIPS:
        feed(c, a, OK, 2, 1.0)
    return c


def _fail(c: Any, addresses: list[str], result: CheckResult, times: int, now: float) -> list[str]:
    events = []
    for _ in range(times):
        for a in addresses:
            spec = next(s for s in c.checks if str(s.address) == a)
            done = c.record(spec, result, now, none)
            if done is not None and done.guard:
                events.append(done.guard)
        now += 0.5
    return events


def test_a_common_fault_engages_before_any_vip_is_withdrawn() -> None:
    c = _all_up()
    # One failed check each (FALLING): the guard engages before anything reaches fall.
    assert _fail(c, VIPS, FAIL, 1, 5.0) == ["engaged"]
    assert c.truth.guard is not None and (c.truth.guard.fell, c.truth.guard.total) == (6, 10)
    _fail(c, VIPS, FAIL, 2, 6.0)  # now DOWN, all of them
    assert all(vs.state is State.DOWN for vs in c.vips.values())
    routes = c.desired(9.0, none, ALLOW)
    assert len(routes) == 10 and all(GRACEFUL_SHUTDOWN in r.communities for r in routes.values())
    assert all(r.as_path_prepend == 3 for r in routes.values())


def test_one_or_two_failures_are_withdrawn_at_once() -> None:
    c = _all_up()
    assert _fail(c, VIPS[:2], FAIL, 3, 5.0) == []  # fewer than min_vips fail
    assert c.truth.guard is None and c.truth.pending == {} and len(c.desired(6.5, none, ALLOW)) == 8


def test_several_failures_wait_one_interval_for_the_guard_then_go() -> None:
    c = _all_up()
    assert _fail(c, VIPS[:5], FAIL, 3, 5.0) == []  # half: not more than half
    # Five fail together: a mass fault may be under way; their withdrawal waits one
    # interval (1 s) for the rest to show, then goes ahead.
    assert c.truth.guard is None and set(c.truth.pending) == {A(a) for a in VIPS[:5]}
    assert len(c.desired(6.0, none, ALLOW)) == 10
    assert c.next_wake() == 6.5  # DOWN at 5.5 (fall 2), plus one interval
    c.expire(6.49)
    assert len(c.truth.pending) == 5
    assert c.truth.damps == {}  # nothing withdrawn yet: no flap to count
    c.expire(6.5)
    assert c.truth.pending == {} and len(c.desired(9.0, none, ALLOW)) == 5
    assert set(c.truth.damps) == {A(a) for a in VIPS[:5]}  # now they were


def test_refused_vips_are_withdrawn_and_not_counted() -> None:
    c = _all_up()
    assert _fail(c, VIPS, REFUSE, 3, 5.0) == []  # HAProxy gone: nothing to guard
    assert c.truth.fell == {} and c.desired(9.0, none, ALLOW) == {}


def test_it_releases_as_vips_recover_and_withdraws_the_rest() -> None:
    c = _all_up()
    _fail(c, VIPS, FAIL, 3, 5.0)
    assert _fail(c, VIPS[:7], OK, 2, 8.0) == []  # 3 failing: more than half of 5
    assert len(c.desired(20.0, none, ALLOW)) == 10
    assert _fail(c, VIPS[7:8], OK, 2, 9.0) == []  # 2 failing: calm, from 9.5 on
    assert c.truth.guard is not None and c.next_wake() == 19.5  # release_after 10 s
    assert len(c.desired(12.0, none, ALLOW)) == 10  # the last two stay guarded meanwhile
    assert c.expire(19.4).guard == ""
    assert c.expire(19.5).guard == "released" and c.truth.guard is None
    assert set(c.desired(20.0, none, ALLOW)) == {N(f"{a}/32") for a in VIPS[:8]}


def test_a_vip_a_little_behind_in_the_recovery_is_not_withdrawn() -> None:
    c = _all_up()
    _fail(c, VIPS, FAIL, 3, 5.0)
    _fail(c, VIPS[:9], OK, 2, 8.0)  # one VIP's checks are behind the others'
    assert c.truth.guard is not None  # calm, but not for release_after yet
    _fail(c, VIPS[9:], OK, 2, 10.0)
    assert len(c.desired(12.0, none, ALLOW)) == 10  # all UP again, none ever withdrawn
    assert c.expire(30.0).guard == "released"


def test_a_guarded_vip_that_becomes_refused_is_withdrawn() -> None:
    c = _all_up()
    _fail(c, VIPS, FAIL, 3, 5.0)
    c.touched = set()
    _fail(c, [VIPS[0]], REFUSE, 1, 8.0)
    assert A(VIPS[0]) in c.touched  # planned now, not at the next full plan
    assert N(f"{VIPS[0]}/32") not in c.desired(9.0, none, ALLOW)


def test_drains_and_non_local_vips_are_not_the_guards_business() -> None:
    c = _all_up()
    _fail(c, VIPS, FAIL, 3, 5.0)

    def drained(a: Any, now: float) -> Drain:
        return Drain.DRAINED if str(a) == VIPS[1] else Drain.NONE

    c.set_local([A(VIPS[0])], {A(VIPS[0])})
    got = c.desired(9.0, drained, ALLOW)
    assert N(f"{VIPS[0]}/32") not in got and N(f"{VIPS[1]}/32") not in got and len(got) == 8


def test_disabled_it_never_engages() -> None:
    c = core()
    c.truth.guard_policy = gd.GuardPolicy(enabled=False)
    c.apply(specs(*VIPS), 0.0, none, vip_loss=None)
    for a in VIPS:
        feed(c, a, OK, 2, 1.0)
    assert _fail(c, VIPS, FAIL, 3, 5.0) == [] and c.desired(9.0, none, ALLOW) == {}


def test_vips_down_before_the_fault_neither_count_nor_come_back() -> None:
    c = _all_up()
    _fail(c, VIPS[:4], FAIL, 3, 5.0)  # four real failures: withdrawn after the wait
    c.expire(8.0)
    assert c.truth.guard is None and len(c.desired(8.0, none, ALLOW)) == 6
    # An hour later the other six fail at once: six of ten fell within the window.
    assert _fail(c, VIPS[4:], FAIL, 1, 3600.0) == ["engaged"]
    _fail(c, VIPS[4:], FAIL, 2, 3600.5)
    got = c.desired(3602.0, none, ALLOW)
    assert set(got) == {N(f"{a}/32") for a in VIPS[4:]}  # the long-dead four stay out
    assert all(GRACEFUL_SHUTDOWN in r.communities for r in got.values())


def test_falls_spread_over_more_than_the_window_do_not_engage() -> None:
    c = _all_up()
    now = 10.0
    for a in VIPS[:8]:  # one VIP every 6 s: each on its own
        assert _fail(c, [a], FAIL, 2, now) == []
        now += 6.0
    c.expire(now)
    assert c.truth.guard is None and len(c.desired(now, none, ALLOW)) == 2
