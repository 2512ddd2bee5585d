"""The pure core (core.py): no sleeping, `now` passed in. The decisions the service
tests check on real time (start-up, failover planning, reloads, the VIP-loss hold,
local failures), here at the speed of function calls."""

from __future__ import annotations

from typing import Any

from announcer.core import addresses_of
from announcer.health import State
from announcer.model import CheckResult, Route
from announcer.planner import Drain, advance
from announcer.shrink import ShrinkPolicy
from tests.support.corekit import ALLOW, FAIL, OK, A, N, core, feed, none, specs


def test_vips_rise_and_the_start_ends_when_every_vip_has_a_verdict() -> None:
    c = core()
    done = c.apply(specs("192.0.2.10", "192.0.2.11"), 0.0, none, vip_loss=None)
    assert sorted(map(str, done.added)) == ["192.0.2.10", "192.0.2.11"]
    assert len(done.new_checks) == 2 and all(0 <= x.health.next_check <= 1 for x in done.new_checks)
    assert not c.started_up(1.0) and c.verdicts() == (0, 0, 2)
    now = feed(c, "192.0.2.10", OK, 2, 1.0)
    assert c.vips[A("192.0.2.10")].state is State.UP and not c.started_up(now)
    now = feed(c, "192.0.2.11", FAIL, 2, now)
    assert c.vips[A("192.0.2.11")].state is State.DOWN
    assert c.started_up(now) and c.verdicts() == (1, 1, 0)
    assert set(c.desired(9.0, none, ALLOW)) == {N("192.0.2.10/32")}


def test_startup_grace_ends_the_start_without_verdicts() -> None:
    c = core(grace=5.0)
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    assert not c.started_up(4.9) and c.started_up(5.0)


def test_unsettled_vips_keep_what_gobgpd_has_during_the_start() -> None:
    c = core()
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    kept = Route(N("192.0.2.10/32"))
    assert c.desired(9.0, none, ALLOW, keep={kept.prefix: kept}) == {kept.prefix: kept}
    assert c.desired(9.0, none, ALLOW) == {}
    feed(c, "192.0.2.10", FAIL, 2, 1.0)  # a verdict: the kept route is decided
    assert c.desired(9.0, none, ALLOW, keep={kept.prefix: kept}) == {}


def test_a_failover_plans_only_the_vip_that_changed() -> None:
    c = core()
    addresses = [f"192.0.2.{i}" for i in range(10, 30)]
    c.apply(specs(*addresses), 0.0, none, vip_loss=None)
    for a in addresses:
        feed(c, a, OK, 2, 1.0)
    actual: dict[Any, Route] = {}
    plan = c.plan(actual, 9.0, none, ALLOW, ALLOW)  # after apply: everything
    assert len(plan.announce) == 20
    advance(actual, plan)
    assert c.touched == set() and not c.plan(actual, 9.0, none, ALLOW, ALLOW)
    now = feed(c, "192.0.2.15", FAIL, 1, 5.0)
    assert c.touched == set()  # FALLING keeps the route: nothing to plan
    feed(c, "192.0.2.15", FAIL, 1, now)
    assert c.touched == {A("192.0.2.15")}
    plan = c.plan(actual, 9.0, none, ALLOW, ALLOW)
    assert plan.withdraw == (N("192.0.2.15/32"),) and plan.announce == ()


def test_a_reload_keeps_states_and_seeds_changed_checks() -> None:
    c = core()
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    feed(c, "192.0.2.10", OK, 2, 1.0)
    (old,) = c.checks.values()
    done = c.apply(specs("192.0.2.10"), 3.0, none, vip_loss=None)
    assert done.new_checks == () and done.retired == () and done.changes == ()
    assert next(iter(c.checks.values())) is old  # same check, same health
    done = c.apply(specs("192.0.2.10", timeout=0.4), 4.0, none, vip_loss=None)  # new check
    assert len(done.new_checks) == 1 and len(done.retired) == 1
    (new,) = done.new_checks
    assert new.health.state is State.UP  # seeded: nothing flaps
    assert c.vips[A("192.0.2.10")].state is State.UP and done.changes == ()


def test_a_removed_vip_retires_its_check() -> None:
    c = core()
    c.apply(specs("192.0.2.10", "192.0.2.11"), 0.0, none, vip_loss=None)
    done = c.apply(specs("192.0.2.10"), 1.0, none, vip_loss=ShrinkPolicy())
    assert [str(a) for a in done.removed] == ["192.0.2.11"] and len(done.retired) == 1
    assert c.record(done.retired[0], OK, 2.0, none) is None  # a late result is dropped


def test_an_empty_answer_is_held_then_confirmed() -> None:
    policy = ShrinkPolicy(confirmations=2, min_seconds=10)
    c = core()
    c.apply(specs("192.0.2.10", "192.0.2.11"), 0.0, none, vip_loss=policy)
    done = c.apply({}, 1.0, none, vip_loss=policy)
    assert done.hold is not None and done.hold.event == "held" and done.removed == ()
    assert set(c.vips) == {A("192.0.2.10"), A("192.0.2.11")} and c.hold is not None
    done = c.apply({}, 5.0, none, vip_loss=None)  # a reload during the hold: still held
    assert len(c.vips) == 2
    done = c.apply({}, 11.0, none, vip_loss=policy)
    assert done.hold is not None and done.hold.event == "confirmed"
    assert c.vips == {} and len(done.retired) == 2


def test_the_first_answer_is_judged_against_gobgpds_routes() -> None:
    c = core()
    routes = [N("192.0.2.10/32"), N("192.0.2.11/32"), N("198.51.100.1/32")]
    known = addresses_of(routes, ALLOW)
    assert known == {A("192.0.2.10"), A("192.0.2.11")}
    v = c.first_answer(known, frozenset(), 0.0, ShrinkPolicy())
    assert v.event == "held" and c.hold is not None


def test_a_local_failure_keeps_the_state_and_retries_soon() -> None:
    c = core()
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    now = feed(c, "192.0.2.10", OK, 2, 1.0)
    (spec,) = c.checks
    for _ in range(10):
        done = c.record(spec, CheckResult(False, "EMFILE", 0.0, local="emfile"), now, none)
        assert done is not None and done.changes == () and done.check is None
    assert c.vips[A("192.0.2.10")].state is State.UP
    assert c.checks[spec].health.next_check == now + 0.5


def test_a_drain_changes_the_route_not_the_state() -> None:
    c = core()
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    feed(c, "192.0.2.10", OK, 2, 1.0)
    (r,) = c.desired(9.0, lambda a, t: Drain.DRAINING, ALLOW).values()
    assert any(str(x) == "65535:0" for x in r.communities)
    assert c.desired(9.0, lambda a, t: Drain.DRAINED, ALLOW) == {}
