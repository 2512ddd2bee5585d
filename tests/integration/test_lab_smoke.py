"""Smoke tests of the namespace lab: what the routers see when the LBs announce.

Routes are put into each LB's gobgpd with the gobgp CLI, so these tests need no
announcer: they prove the topology, the FRR import/export policy, the gobgpd configs
(export policy, v4 and v6 sessions) and the lab's teardown. Assertions are on the
routers (FRR's RIB through vtysh JSON, and the kernel table of their namespaces).
Every wait polls with a deadline; nothing sleeps.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.integration.lab import (
    LBS,
    RACK_ADDR,
    ROUTERS,
    Lab,
    LabError,
    bgp_advertised,
    bgp_prefixes,
    bgp_received,
    bgp_sessions,
    kernel_route,
    list_netns,
    pid_alive,
    route_gateways,
    wait_until,
)

pytestmark = pytest.mark.lab

V4 = {lb: RACK_ADDR[lb][0] for lb in LBS}  # lb1 198.51.100.11, lb2 198.51.100.12
V6 = {lb: RACK_ADDR[lb][1] for lb in LBS}  # lb1 2001:db8:ff::11, lb2 2001:db8:ff::12
BOTH_V4 = set(V4.values())
BOTH_V6 = set(V6.values())
TIMEOUT = 15.0
PORT = 8080

# A tiny TCP server for the LBs: answers every connection with its name (argv[1]).
# Bound to :: with IPV6_V6ONLY off, so one socket serves the v4 and v6 VIPs.
SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[2])))
s.listen(64)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[1].encode() + b"\\n")
    c.close()
"""

# The client side: N connections to one address, print one reply per line.
CLIENT = """
import socket, sys
for _ in range(int(sys.argv[3])):
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as c:
        print(c.makefile().readline().strip())
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """One lab for the routing tests (each test uses its own prefixes)."""
    with Lab() as lab:
        yield lab


def announce(lab: Lab, lb: str, prefix: str, next_hop: str | None = None) -> None:
    """`gobgp global rib add PREFIX [nexthop NH] origin igp` on one LB (no NH = self)."""
    family = ["-a", "ipv6"] if ipaddress.ip_network(prefix).version == 6 else []
    nh = ["nexthop", next_hop] if next_hop else []
    lab.gobgp(lb, "global", "rib", *family, "add", prefix, *nh, "origin", "igp")


def withdraw(lab: Lab, lb: str, prefix: str) -> None:
    family = ["-a", "ipv6"] if ipaddress.ip_network(prefix).version == 6 else []
    lab.gobgp(lb, "global", "rib", *family, "del", prefix)


def wait_routers_nexthops(lab: Lab, prefix: str, want: set[str]) -> None:
    """Wait until r1 and r2 both have exactly `want` as next hops, in FRR and kernel."""
    for r in ROUTERS:
        wait_until(
            partial(lab.frr_nexthops, r, prefix),
            TIMEOUT,
            check=lambda hops: hops == want,
            what=f"{r}: zebra RIB next hops of {prefix}",
        )
        route = wait_until(
            partial(kernel_route, lab.ns(r), prefix),
            TIMEOUT,
            check=lambda rt: rt is not None and route_gateways(rt) == want,
            what=f"{r}: kernel route {prefix}",
        )
        assert route is not None
        if len(want) > 1:  # one multipath route, not several routes
            assert len(route["nexthops"]) == len(want), route
            assert route["protocol"] == "bgp", route


def wait_routers_lack(lab: Lab, prefix: str) -> None:
    for r in ROUTERS:
        wait_until(
            partial(kernel_route, lab.ns(r), prefix),
            TIMEOUT,
            check=lambda rt: rt is None,
            what=f"{r}: kernel route {prefix} gone",
        )


# --------------------------------------------------------------------------- routing


def test_every_session_established_and_routers_send_nothing(lab: Lab) -> None:
    announce(lab, "lb2", "192.0.2.50/32")
    wait_routers_nexthops(lab, "192.0.2.50/32", {V4["lb2"]})
    for r in ROUTERS:
        router = lab.router(r)
        sessions = bgp_sessions(router)
        assert sessions == dict.fromkeys(BOTH_V4 | BOTH_V6, "Established")
        # The export route-map denies everything, lb2's route included.
        for neighbor in BOTH_V4 | BOTH_V6:
            assert bgp_advertised(router, neighbor) == set(), (r, neighbor)
    assert lab.gobgp_json("lb1", "global", "rib") in ({}, None)
    withdraw(lab, "lb2", "192.0.2.50/32")
    wait_routers_lack(lab, "192.0.2.50/32")


def test_v4_vip_from_both_lbs_is_multipath_on_both_routers(lab: Lab) -> None:
    for lb in LBS:
        announce(lab, lb, "192.0.2.10/32")  # next hop self = the LB's rack address
    wait_routers_nexthops(lab, "192.0.2.10/32", BOTH_V4)


def test_v6_vip_with_explicit_next_hop_is_multipath_on_both_routers(lab: Lab) -> None:
    for lb in LBS:
        announce(lab, lb, "2001:db8:0:1::10/128", next_hop=V6[lb])
    wait_routers_nexthops(lab, "2001:db8:0:1::10/128", BOTH_V6)


def test_v6_vip_with_next_hop_self_uses_the_v6_session_address(lab: Lab) -> None:
    # The reason for separate v6 sessions: "self" on a v6 session is the LB's rack
    # v6 address, so an announcer that leaves the v6 next hop unset still works.
    for lb in LBS:
        announce(lab, lb, "2001:db8:0:1::20/128")
    wait_routers_nexthops(lab, "2001:db8:0:1::20/128", BOTH_V6)


def test_router_import_policy_rejects_non_vip_and_non_host_routes(lab: Lab) -> None:
    # gobgpd's own export policy would stop these before the routers, so lb1 exports
    # everything for this test: the routers' route-maps are what is being tested.
    bad_v4 = {"203.0.113.99/32", "192.0.2.0/24", "192.0.2.128/25"}
    bad_v6 = {"2001:db8:0:2::1/128", "2001:db8:0:1::/64"}
    good = {"192.0.2.60/32", "2001:db8:0:1::60/128"}
    lab.gobgp("lb1", "global", "policy", "export", "set", "default", "accept")
    try:
        for p in sorted(bad_v4 | bad_v6 | good):
            announce(lab, "lb1", p, next_hop=V6["lb1"] if ":" in p else None)
        for r in ROUTERS:
            router = lab.router(r)
            # soft-reconfiguration inbound: proof that lb1 did send them ...
            wait_until(
                partial(bgp_received, router, V4["lb1"]),
                TIMEOUT,
                check=lambda got: got >= bad_v4 | {"192.0.2.60/32"},
                what=f"{r}: received v4 routes from lb1",
            )
            wait_until(
                partial(bgp_received, router, V6["lb1"]),
                TIMEOUT,
                check=lambda got: got >= bad_v6 | {"2001:db8:0:1::60/128"},
                what=f"{r}: received v6 routes from lb1",
            )
            # ... and that the import policy kept only the VIP host routes.
            assert bgp_prefixes(router, 4) & bad_v4 == set()
            assert bgp_prefixes(router, 6) & bad_v6 == set()
            assert "192.0.2.60/32" in bgp_prefixes(router, 4)
            assert "2001:db8:0:1::60/128" in bgp_prefixes(router, 6)
            for p in bad_v4 | bad_v6:
                assert kernel_route(lab.ns(r), p) is None, (r, p)
            assert lab.frr_nexthops(r, "192.0.2.60/32") == {V4["lb1"]}
    finally:
        for p in bad_v4 | bad_v6 | good:
            withdraw(lab, "lb1", p)
        lab.gobgp(
            "lb1", "global", "policy", "export", "set", "export-vip-host-routes",
            "default", "reject",
        )  # fmt: skip


def test_gobgpd_export_policy_sends_only_vip_host_routes(lab: Lab) -> None:
    # The lab's gobgpd configs (gobgp/lb*.toml) filter before the routers do. A valid
    # route announced after the invalid ones is the barrier: gobgpd handles API
    # calls in order, so once it reached the router the others were dealt with.
    for p in ("192.0.2.0/25", "203.0.113.98/32"):
        announce(lab, "lb2", p)
    announce(lab, "lb2", "2001:db8:0:2::2/128", next_hop=V6["lb2"])
    announce(lab, "lb2", "192.0.2.70/32")
    announce(lab, "lb2", "2001:db8:0:1::70/128", next_hop=V6["lb2"])
    for r in ROUTERS:
        router = lab.router(r)
        got4 = wait_until(
            partial(bgp_received, router, V4["lb2"]),
            TIMEOUT,
            check=lambda got: "192.0.2.70/32" in got,
            what=f"{r}: marker route from lb2",
        )
        got6 = wait_until(
            partial(bgp_received, router, V6["lb2"]),
            TIMEOUT,
            check=lambda got: "2001:db8:0:1::70/128" in got,
            what=f"{r}: v6 marker route from lb2",
        )
        assert not {"192.0.2.0/25", "203.0.113.98/32"} & got4
        assert "2001:db8:0:2::2/128" not in got6
    for p in ("192.0.2.0/25", "203.0.113.98/32", "2001:db8:0:2::2/128"):
        withdraw(lab, "lb2", p)


def test_withdraw_on_lb1_leaves_only_lb2(lab: Lab) -> None:
    for lb in LBS:
        announce(lab, lb, "192.0.2.40/32")
        announce(lab, lb, "2001:db8:0:1::40/128", next_hop=V6[lb])
    wait_routers_nexthops(lab, "192.0.2.40/32", BOTH_V4)
    wait_routers_nexthops(lab, "2001:db8:0:1::40/128", BOTH_V6)

    withdraw(lab, "lb1", "192.0.2.40/32")
    withdraw(lab, "lb1", "2001:db8:0:1::40/128")
    wait_routers_nexthops(lab, "192.0.2.40/32", {V4["lb2"]})
    wait_routers_nexthops(lab, "2001:db8:0:1::40/128", {V6["lb2"]})

    withdraw(lab, "lb2", "192.0.2.40/32")
    withdraw(lab, "lb2", "2001:db8:0:1::40/128")
    wait_routers_lack(lab, "192.0.2.40/32")
    wait_routers_lack(lab, "2001:db8:0:1::40/128")


def _start_servers(lab: Lab, lbs: tuple[str, ...]) -> None:
    for lb in lbs:
        name = f"{lb}-tcp"
        if name not in lab.procs.procs:
            lab.start(lb, [sys.executable, "-c", SERVER, lb, str(PORT)], name=name)


def _connect(lab: Lab, address: str, count: int = 1) -> list[str]:
    argv = [sys.executable, "-c", CLIENT, address, str(PORT), str(count)]
    return lab.exec("client", argv, timeout=30).stdout.split()


def test_client_reaches_lb1_loopback_through_the_routers(lab: Lab) -> None:
    vip4, vip6 = "192.0.2.11", "2001:db8:0:1::11"
    lab.add_vip("lb1", f"{vip4}/32")
    lab.add_vip("lb1", f"{vip6}/128")
    announce(lab, "lb1", f"{vip4}/32")
    announce(lab, "lb1", f"{vip6}/128", next_hop=V6["lb1"])
    _start_servers(lab, ("lb1",))
    wait_routers_nexthops(lab, f"{vip4}/32", {V4["lb1"]})
    wait_routers_nexthops(lab, f"{vip6}/128", {V6["lb1"]})
    # Retried only until the server listens; routing is already in place.
    for vip in (vip4, vip6):
        assert wait_until(partial(_connect, lab, vip), TIMEOUT) == ["lb1"]


def test_client_connections_spread_over_both_lbs(lab: Lab) -> None:
    # The same VIP on both LBs: the client hashes over r1/r2, each router over
    # lb1/lb2 (L4 hash policy), so 40 connections land on both LBs.
    vip4, vip6 = "192.0.2.12", "2001:db8:0:1::12"
    for lb in LBS:
        lab.add_vip(lb, f"{vip4}/32")
        lab.add_vip(lb, f"{vip6}/128")
        announce(lab, lb, f"{vip4}/32")
        announce(lab, lb, f"{vip6}/128", next_hop=V6[lb])
    _start_servers(lab, LBS)
    wait_routers_nexthops(lab, f"{vip4}/32", BOTH_V4)
    wait_routers_nexthops(lab, f"{vip6}/128", BOTH_V6)
    for vip in (vip4, vip6):
        wait_until(partial(_connect, lab, vip), TIMEOUT)  # servers listening
        replies = _connect(lab, vip, 40)
        assert len(replies) == 40
        assert set(replies) == set(LBS), replies


# --------------------------------------------------------------------------- hygiene


def _assert_gone(prefix: str, pids: list[tuple[int, int | None]], paths: list[Path]) -> None:
    left = [n for n in list_netns() if n.startswith(prefix)]
    assert left == [], f"namespaces left: {left}"
    alive = [pid for pid, st in pids if pid_alive(pid, st)]
    assert alive == [], f"processes left: {alive}"
    assert [p for p in paths if p.exists()] == []


def _snapshot(lab: Lab) -> tuple[str, list[tuple[int, int | None]], list[Path]]:
    assert lab.tmp is not None
    pids = [(p.pid, p.starttime) for p in lab.procs.history]
    return lab.prefix, pids, [lab.tmp, lab.state_path]


def test_teardown_leaves_no_namespace_process_or_file() -> None:
    with Lab() as lab:
        # One process through the lab's API, one behind its back: both must go.
        lab.start("lb1", ["sleep", "300"], name="sleeper")
        stray = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns("lb2").name, "sleep", "300"],
            start_new_session=True,
        )
        prefix, pids, paths = _snapshot(lab)
        assert all(pid_alive(pid, st) for pid, st in pids)
        assert len(pids) == 7  # gobgpd x2, zebra x2, bgpd x2, sleeper
        assert {n for n in list_netns() if n.startswith(prefix)} == {
            ns.name for ns in lab.nodes.values()
        }
        assert lab.state_path.exists()
    stray.wait(timeout=5)  # reap it: teardown killed it, we are its parent
    _assert_gone(prefix, [*pids, (stray.pid, None)], paths)


def test_teardown_when_the_with_block_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), Lab(wait_established=False) as lab:
        prefix, pids, paths = _snapshot(lab)
        raise RuntimeError("boom")
    _assert_gone(prefix, pids, paths)


def test_teardown_when_setup_fails_halfway(tmp_path: Path) -> None:
    # r2's config has a line FRR rejects: the lab notices after gobgpd and most of
    # FRR are already running, and must still remove everything.
    frr = tmp_path / "frr"
    frr.mkdir()
    source = Path(__file__).parent / "frr"
    (frr / "r1.conf").write_text((source / "r1.conf").read_text())
    (frr / "r2.conf").write_text((source / "r2.conf").read_text() + "no-such-command 1\n")
    lab = Lab(frr_config_dir=frr)
    with pytest.raises(LabError, match="rejected config lines"), lab:
        pytest.fail("the lab should not have come up")
    assert lab.tmp is not None
    pids = [(p.pid, p.starttime) for p in lab.procs.history]
    assert len(pids) == 6  # everything was started before the check failed
    _assert_gone(lab.prefix, pids, [lab.tmp, lab.state_path])
