"""announcer end to end, with only real software: HAProxy, gobgpd, FRR.

Both lab LBs run HAProxy with frontends on VIPs (monitor-uri + monitor fail), the
DataPlaneAPI emulator in front of that haproxy.cfg, gobgpd, and announcer. Every
assertion is on what the *routers* see (FRR's RIB through vtysh json, and the
kernel routing tables of the router namespaces), on gobgpd's RIB, or on what the
client gets over HTTP through the routers.

The main scenarios (steady state, failover and recovery, gobgpd restart) run twice:
with bookworm's gobgpd 3.10 and with sid's 4.8.0 (unpacked by scripts/fetch-gobgp4),
announcer detecting the API version as in production. The other scenarios run on
3.10 only, to keep the lab's runtime down; the adapter tests cover 4.8 in detail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import pytest

from tests.integration.lab import Lab, kernel_route, wait_until
from tests.integration.stack import LbStack
from tests.support.labroutes import (
    NH4,
    NH6,
    ROUTERS,
    V4_VIPS,
    V6_VIP,
    nexthops,
    routers_have,
    wait_routers,
)

pytestmark = pytest.mark.lab

LBS = ("lb1", "lb2")
OUTSIDE = "192.0.2.200/32"  # bound by HAProxy, outside announcer's allow-list
# From tests/integration/announcer/lbN.yaml: interval 0.5 s, rise 2, fall 3.
INTERVAL, RISE, FALL = 0.5, 2, 3
FAILOVER_BOUND = FALL * INTERVAL + 1.0


def gobgp_prefixes(lab: Lab, lb: str, family: str = "ipv4") -> set[str]:
    rib = lab.gobgp_json(lb, "global", "rib", "-a", family)
    return set(rib) if isinstance(rib, dict) else set()


def client_get(lab: Lab, url: str) -> str:
    cp = lab.exec("client", ["curl", "-s", "--max-time", "2", url], check=False)
    return cp.stdout.strip() if cp.returncode == 0 else f"error {cp.returncode}"


GOBGPD_IDS = {3: "gobgpd3", 4: "gobgpd4"}
# A test marked with this runs on a lab with each gobgpd; unmarked tests get 3.10.
# pytest groups the tests by lab, so only one lab is up at a time.
on_both_gobgpd = pytest.mark.parametrize("lab", [3, 4], indirect=True, ids=GOBGPD_IDS.get)


@pytest.fixture(scope="module", params=[3], ids=GOBGPD_IDS.get)
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    # Peers stay admin-down until announcer has injected its set (fate-sharing).
    with Lab(gobgpd_version=request.param, enable_peers=False, wait_established=False) as lab:
        stacks = {lb: LbStack(lab, lb).start() for lb in LBS}
        lab.stacks = stacks  # type: ignore[attr-defined]
        try:
            for prefix in V4_VIPS:
                wait_routers(lab, prefix, set(NH4.values()), timeout=30)
            wait_routers(lab, V6_VIP, set(NH6.values()), timeout=30)
        except Exception:
            for s in stacks.values():
                print(s.announcer_log())
            raise
        yield lab


def stack(lab: Lab, lb: str) -> LbStack:
    return lab.stacks[lb]  # type: ignore[attr-defined,no-any-return]


@on_both_gobgpd
def test_steady_state_every_vip_has_both_lbs_at_both_routers(lab: Lab) -> None:
    for prefix in V4_VIPS:
        assert routers_have(lab, prefix, set(NH4.values())), nexthops(lab, prefix)
    assert routers_have(lab, V6_VIP, set(NH6.values())), nexthops(lab, V6_VIP)
    # the VIP shared by two frontends and two ports is one prefix
    assert "192.0.2.12/32" in gobgp_prefixes(lab, "lb1")
    # announcer found out by itself which API this gobgpd speaks
    for lb in LBS:
        assert f"GoBGP {lab.gobgpd_version}.x API" in stack(lab, lb).announcer_log()


def test_vip_outside_allow_list_never_reaches_gobgpd_or_routers(lab: Lab) -> None:
    for lb in LBS:
        assert OUTSIDE not in gobgp_prefixes(lab, lb)
        assert "VIP 192.0.2.200 (frontends fe_outside) is outside" in stack(lab, lb).announcer_log()
    for r in ROUTERS:
        assert lab.frr_nexthops(r, OUTSIDE) == set()
        assert kernel_route(lab.ns(r), OUTSIDE) is None
    # HAProxy really serves it: only the allow-list keeps it out
    assert "lb" in client_get(lab, "http://192.0.2.10/")


def test_client_is_served_by_both_lbs(lab: Lab) -> None:
    seen = set()
    for _ in range(40):
        seen.add(client_get(lab, "http://192.0.2.10/"))
        if seen >= {"lb1 web", "lb2 web"}:
            break
    assert seen >= {"lb1 web", "lb2 web"}, seen
    assert client_get(lab, "http://[2001:db8:0:1::10]/") in {"lb1 web", "lb2 web"}


@on_both_gobgpd
def test_backend_failure_withdraws_within_fall_times_interval_and_rise_brings_it_back(
    lab: Lab,
) -> None:
    s1 = stack(lab, "lb1")
    started = time.monotonic()
    s1.stop_backend("api")  # be_api has no server: fe_api's monitor-uri answers 503
    gone = wait_routers(lab, "192.0.2.11/32", {NH4["lb2"]}, timeout=10)
    took = gone - started
    print(
        f"failover: 192.0.2.11/32 left lb1 at both routers after {took:.2f}s "
        f"(bound {FAILOVER_BOUND:.1f}s)"
    )
    assert took <= FAILOVER_BOUND, took
    # other VIPs are untouched, and the client keeps getting answers for this one
    for prefix in ("192.0.2.10/32", "192.0.2.12/32"):
        assert routers_have(lab, prefix, set(NH4.values()))
    answers = {client_get(lab, "http://192.0.2.11/") for _ in range(10)}
    assert answers == {"lb2 api"}, answers

    started = time.monotonic()
    s1.start_backend("api")
    back = wait_routers(lab, "192.0.2.11/32", set(NH4.values()), timeout=10)
    print(f"recovery: 192.0.2.11/32 back at both routers after {back - started:.2f}s")
    log = s1.announcer_log()
    assert "VIP 192.0.2.11: UP -> FALLING" in log and "FALLING -> DOWN" in log
    assert "VIP 192.0.2.11: RISING -> UP" in log


def test_gobgpd_rib_has_exactly_the_healthy_vips(lab: Lab) -> None:
    want4 = set(V4_VIPS)
    for lb in LBS:
        got = wait_until(
            partial(gobgp_prefixes, lab, lb),
            timeout=10,
            check=lambda g: g == want4,
            what=f"{lb} gobgpd v4 RIB",
        )
        assert got == want4
        assert gobgp_prefixes(lab, lb, "ipv6") == {V6_VIP}


NEW_FRONTEND = """
frontend fe_new
    bind 192.0.2.13:80
    monitor-uri /healthz
    monitor fail if { nbsrv(be_web) lt 1 }
    default_backend be_web
"""


def test_vip_added_to_haproxy_is_announced_and_removed_is_withdrawn(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    lab.add_vip("lb1", "192.0.2.13/32")
    s1.edit_cfg("frontend fe_local", NEW_FRONTEND.lstrip() + "\nfrontend fe_local")
    s1.reload_haproxy()
    wait_routers(lab, "192.0.2.13/32", {NH4["lb1"]}, timeout=15)  # no announcer restart
    s1.edit_cfg(NEW_FRONTEND.lstrip() + "\n", "")
    s1.reload_haproxy()
    wait_routers(lab, "192.0.2.13/32", set(), timeout=15)
    lab.del_vip("lb1", "192.0.2.13/32")
    log = s1.announcer_log()
    assert "VIP 192.0.2.13 discovered (frontends fe_new)" in log
    assert "VIP 192.0.2.13 is gone from HAProxy's configuration" in log


def test_haproxy_stopped_takes_every_vip_of_that_lb_away(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    started = time.monotonic()
    s1.stop_haproxy()
    for prefix in V4_VIPS:
        wait_routers(lab, prefix, {NH4["lb2"]}, timeout=10)
    wait_routers(lab, V6_VIP, {NH6["lb2"]}, timeout=10)
    took = time.monotonic() - started
    print(f"haproxy stopped on lb1: all its VIPs gone from both routers after {took:.2f}s")
    assert took <= FAILOVER_BOUND + 0.5, took  # + polling of 4 prefixes at 2 routers
    answers = {client_get(lab, "http://192.0.2.10/") for _ in range(10)}
    assert answers == {"lb2 web"}, answers
    s1.start_haproxy()
    for prefix in V4_VIPS:
        wait_routers(lab, prefix, set(NH4.values()), timeout=15)


@on_both_gobgpd
def test_gobgpd_restart_heals_by_itself(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    argv = lab.proc("lb1-gobgpd").argv
    lab.stop("lb1-gobgpd")
    for prefix in V4_VIPS:
        wait_routers(lab, prefix, {NH4["lb2"]}, timeout=15)
    started = time.monotonic()
    lab.start("lb1", argv, name="lb1-gobgpd")
    for prefix in V4_VIPS:
        wait_routers(lab, prefix, set(NH4.values()), timeout=30)
    wait_routers(lab, V6_VIP, set(NH6.values()), timeout=30)
    print(
        f"gobgpd restarted on lb1: routes back at both routers after "
        f"{time.monotonic() - started:.2f}s"
    )
    assert "gobgpd event stream ended" in s1.announcer_log()


def test_sigterm_withdraws_this_lbs_routes(lab: Lab) -> None:
    """Chosen behaviour: a stopped announcer drains, then withdraws its routes
    (drain.on_stop, withdraw_on_stop)."""
    s1 = stack(lab, "lb1")
    s1.stop_announcer()
    for prefix in V4_VIPS:
        wait_routers(lab, prefix, {NH4["lb2"]}, timeout=10)
    wait_routers(lab, V6_VIP, {NH6["lb2"]}, timeout=10)
    assert gobgp_prefixes(lab, "lb1") == set()
    log = s1.announcer_log()
    # drain.on_stop: first 65535:0 for drain.delay (1 s here), then the withdrawal
    assert "stopping: routes re-announced with GRACEFUL_SHUTDOWN" in log
    assert "withdrew 4 routes on stop" in log
    s1.start_announcer()
    for prefix in V4_VIPS:
        wait_routers(lab, prefix, set(NH4.values()), timeout=15)
