"""The planner: desired set against gobgpd's actual paths, withdraw first, idempotent."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from announcer.model import Community, Route, host_prefix
from announcer.planner import Plan, RoutePolicy, advance, make_plan, owned

A = ipaddress.ip_address
N = ipaddress.ip_network
ALLOW = (N("192.0.2.0/24"), N("2001:db8::/32"))
POLICY = RoutePolicy(next_hop_v6=A("2001:db8:ffff::1"), communities=(Community(65000, 1),))


def r(addr: str, **kw: object) -> Route:
    base = POLICY.route(A(addr))
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def after(actual: dict, plan: Plan) -> dict:  # type: ignore[type-arg]
    result = dict(actual)
    advance(result, plan)
    return result


def test_v6_route_gets_the_v6_next_hop() -> None:
    route = POLICY.route(A("2001:db8::10"))
    assert route.prefix == N("2001:db8::10/128") and route.next_hop == A("2001:db8:ffff::1")


def test_plan_withdraws_first_and_only_owned_paths() -> None:
    desired = {N("192.0.2.1/32"): r("192.0.2.1")}
    actual = {
        N("192.0.2.2/32"): r("192.0.2.2"),  # ours, no longer wanted
        N("198.51.100.7/32"): r("192.0.2.3", prefix=N("198.51.100.7/32")),  # someone else's
    }
    plan = make_plan(desired, actual, ALLOW)
    assert plan.withdraw == (N("192.0.2.2/32"),)
    assert plan.announce == (r("192.0.2.1"),)


def test_changed_attributes_are_reannounced() -> None:
    desired = {N("192.0.2.1/32"): r("192.0.2.1", med=10)}
    actual = {N("192.0.2.1/32"): r("192.0.2.1", med=20)}
    assert make_plan(desired, actual, ALLOW) == Plan((), (r("192.0.2.1", med=10),))


def test_non_host_routes_in_the_allow_list_are_not_ours() -> None:
    actual = {N("192.0.2.0/25"): r("192.0.2.1", prefix=N("192.0.2.0/25"))}
    assert not make_plan({}, actual, ALLOW)


def test_desired_outside_allow_list_is_a_bug() -> None:
    with pytest.raises(ValueError, match="outside the allow-list"):
        make_plan({N("203.0.113.1/32"): r("192.0.2.1", prefix=N("203.0.113.1/32"))}, {}, ALLOW)


def test_community_order_does_not_matter() -> None:
    a = r("192.0.2.1", communities=(Community(1, 2), Community(1, 1)))
    b = r("192.0.2.1", communities=(Community(1, 1), Community(1, 2), Community(1, 1)))
    assert a == b


addresses = st.sampled_from(
    [f"192.0.2.{i}" for i in range(8)] + [f"2001:db8::{i}" for i in range(4)]
)
routes = st.builds(lambda a, med: r(a, med=med), addresses, st.one_of(st.none(), st.integers(0, 3)))
route_maps = st.lists(routes).map(lambda rs: {x.prefix: x for x in rs})


@given(route_maps, route_maps)
def test_applying_a_plan_reaches_desired_and_replanning_is_a_noop(
    desired: dict,
    actual: dict,  # type: ignore[type-arg]
) -> None:
    plan = make_plan(desired, actual, ALLOW)
    assert not set(plan.withdraw) & {x.prefix for x in plan.announce}
    result = after(actual, plan)
    assert owned(result, ALLOW) == desired
    assert not make_plan(desired, result, ALLOW)  # idempotent: the second run changes nothing


def test_after_keeps_foreign_paths() -> None:
    foreign = {N("198.51.100.7/32"): r("192.0.2.3", prefix=N("198.51.100.7/32"))}
    assert after(foreign, make_plan({}, foreign, ALLOW)) == foreign


def test_host_prefix() -> None:
    assert host_prefix(A("2001:db8::1")) == N("2001:db8::1/128")


def test_route_for_every_state_and_drain_phase() -> None:
    from announcer.health import State
    from announcer.model import Community
    from announcer.planner import (
        GRACEFUL_SHUTDOWN,
        Adjust,
        Drain,
        RoutePolicy,
        VipPolicy,
        route_for,
    )

    a = ipaddress.ip_address("192.0.2.10")
    up = RoutePolicy(med=10, communities=(Community(65512, 1),))
    plain = VipPolicy(up=up)
    kept = VipPolicy(
        up=up,
        down=Adjust(announce=True, med=1000, communities=(Community(65512, 666),)),
        draining=Adjust(as_path_prepend=3),
        drained=Adjust(announce=True, med=2000),
    )
    for s in (State.UP, State.FALLING):
        assert route_for(a, s, Drain.NONE, plain) == up.route(a)
    for s in (State.INIT, State.RISING, State.DOWN):
        assert route_for(a, s, Drain.NONE, plain) is None
    down = route_for(a, State.DOWN, Drain.NONE, kept)
    assert down is not None and down.med == 1000
    assert down.communities == (Community(65512, 1), Community(65512, 666))
    assert route_for(a, State.INIT, Drain.NONE, kept) is None  # nothing known yet
    draining = route_for(a, State.UP, Drain.DRAINING, kept)
    assert draining is not None and draining.as_path_prepend == 3 and draining.med == 10
    assert GRACEFUL_SHUTDOWN in draining.communities
    assert route_for(a, State.UP, Drain.DRAINED, plain) is None
    drained = route_for(a, State.UP, Drain.DRAINED, kept)
    assert drained is not None and drained.med == 2000 and GRACEFUL_SHUTDOWN in drained.communities
    # a drain never announces what health would not
    assert route_for(a, State.DOWN, Drain.DRAINED, VipPolicy(up=up, drained=Adjust())) is None
