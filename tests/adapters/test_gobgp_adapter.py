"""announcer.gobgp against a real gobgpd on 127.0.0.1 (no fakes), 3.10 and 4.8.0.

Every test that runs a gobgpd runs once per version (tests/support/gobgpd_proc.py: bookworm's
3.10 and sid's 4.8.0 unpacked by scripts/fetch-gobgp4), with the client detecting the
API version as it does in production. The tests at the end are about detection
itself: pinning, a wrong pin, an upgrade under a running client.

Only documentation prefixes are used: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest

from announcer.errors import GobgpError, InvalidRoute
from announcer.gobgp import UNREPRESENTABLE_PREPEND, GobgpClient
from announcer.model import (
    Community,
    HostPrefix,
    LargeCommunity,
    Origin,
    Route,
    RouteTable,
    SessionState,
)
from tests.support.gobgpd_proc import VERSIONS, GobgpdProc, Neighbor, free_port, wait_for

pytestmark = pytest.mark.gobgpd

A_ASN, B_ASN = 65001, 65002
ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.fixture(params=VERSIONS, ids=lambda v: f"gobgpd{v}")
def version(request: pytest.FixtureRequest) -> int:
    """The gobgpd major version a test runs against."""
    return int(request.param)


@pytest.fixture
def gobgpd(tmp_path: Path, version: int) -> Iterator[GobgpdProc]:
    proc = GobgpdProc(tmp_path / "a", asn=A_ASN, name="a", version=version)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(gobgpd: GobgpdProc) -> Iterator[GobgpClient]:
    c = GobgpClient(gobgpd.api_target, timeout=5.0)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def pair(tmp_path: Path, version: int) -> Iterator[tuple[GobgpdProc, GobgpdProc]]:
    """A (AS65001, ours) and B (AS65002) with an eBGP session on 127.0.0.1.

    Both sides connect actively: gobgpd waits a random 5-10 s before each attempt,
    so two dialers bring the session up sooner on average.
    """
    a_port, b_port = free_port(), free_port()
    a = GobgpdProc(
        tmp_path / "a",
        asn=A_ASN,
        name="a",
        version=version,
        bgp_port=a_port,
        neighbors=[Neighbor(B_ASN, b_port)],
    )
    b = GobgpdProc(
        tmp_path / "b",
        asn=B_ASN,
        name="b",
        version=version,
        router_id="192.0.2.2",
        bgp_port=b_port,
        neighbors=[Neighbor(A_ASN, a_port)],
    )
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def every_attribute() -> list[Route]:
    return [
        Route(net("192.0.2.10/32")),  # next hop self, ORIGIN IGP, nothing else
        Route(
            net("192.0.2.11/32"),
            next_hop=ip("192.0.2.254"),
            origin=Origin.EGP,
            med=10,
            local_pref=200,
            communities=(Community(65001, 100), Community(65535, 0)),
            large_communities=(LargeCommunity(65001, 1, 2), LargeCommunity(4200000000, 0, 7)),
            as_path_prepend=3,
        ),
        Route(net("198.51.100.12/32"), origin=Origin.INCOMPLETE, med=0, local_pref=0),
        Route(net("2001:db8::10/128"), next_hop=ip("2001:db8:ffff::1")),
        Route(
            net("2001:db8::11/128"),
            next_hop=ip("2001:db8:ffff::2"),
            med=4294967295,
            communities=(Community(0, 1),),
            large_communities=(LargeCommunity(1, 2, 3),),
            as_path_prepend=10,
        ),
    ]


def by_prefix(routes: list[Route]) -> dict[HostPrefix, Route]:
    return {r.prefix: r for r in routes}


def from_neighbor(path: dict[str, Any]) -> bool:
    """Whether a `gobgp -j` path was learned from 127.0.0.1 (3.10 and 4.8 name it apart)."""
    return "127.0.0.1" in (path.get("neighbor-ip"), path.get("peer-address"))


def learned(proc: GobgpdProc, family: str, prefix: str) -> bool:
    """Whether `proc` has a path for `prefix` learned from its neighbor 127.0.0.1."""
    paths = rib(proc, family).get(prefix, [])
    return any(from_neighbor(p) for p in paths)


def from_peer(proc: GobgpdProc, family: str, prefix: str) -> dict[int, Any]:
    """The attributes, by type code, of the path for `prefix` that `proc` learned from 127.0.0.1."""
    (path,) = [p for p in rib(proc, family)[prefix] if from_neighbor(p)]
    return {x["type"]: x for x in path["attrs"]}


def rib(proc: GobgpdProc, family: str) -> dict[str, Any]:
    out = proc.cli_json("global", "rib", "-a", family)
    assert isinstance(out, dict)
    return out


# ------------------------------------------------------------- round trip


def test_round_trip_every_attribute(client: GobgpClient) -> None:
    table: RouteTable = client  # the core's view of the adapter
    routes = every_attribute()
    table.apply([], routes)
    assert table.local_routes() == by_prefix(routes)
    assert client.local_asn() == A_ASN


def test_apply_twice_keeps_the_same_routes(client: GobgpClient, gobgpd: GobgpdProc) -> None:
    routes = every_attribute()
    client.apply([], routes)
    ages = {p: [x["age"] for x in paths] for p, paths in rib(gobgpd, "ipv4").items()}
    time.sleep(1.1)  # ages are whole seconds
    client.apply([], routes)
    assert client.local_routes() == by_prefix(routes)
    after = {p: [x["age"] for x in paths] for p, paths in rib(gobgpd, "ipv4").items()}
    assert after.keys() == ages.keys() and all(len(v) == 1 for v in after.values())
    # gobgpd (3.10 and 4.8 alike) replaces an equal local path with a new one (its
    # age moves): re-sending unchanged routes is not free, which is why the planner
    # never does (make_plan announces only what differs; test_planner proves it).
    assert all(after[p] > ages[p] for p in ages)
    client.apply([], [])  # nothing to do: nothing sent


def test_changed_attributes_replace_the_path(client: GobgpClient) -> None:
    old = Route(net("192.0.2.20/32"), med=5, communities=(Community(1, 1),))
    new = Route(net("192.0.2.20/32"), next_hop=ip("192.0.2.253"), as_path_prepend=1)
    client.apply([], [old])
    client.apply([], [new])
    assert client.local_routes() == {new.prefix: new}


def test_withdraw_leaves_other_paths_alone(client: GobgpClient, gobgpd: GobgpdProc) -> None:
    routes = every_attribute()
    client.apply([], routes)
    # An operator's path outside our set, added with the CLI.
    gobgpd.cli("global", "rib", "add", "203.0.113.50/32", "nexthop", "192.0.2.250", "origin", "igp")
    gobgpd.cli("global", "rib", "-a", "ipv6", "add", "2001:db8::50/128", "nexthop", "2001:db8::1")
    # A local path with a path identifier: not addressable by our withdraws, so not listed.
    gobgpd.cli(
        "global", "rib", "add", "203.0.113.51/32", "nexthop", "192.0.2.250", "identifier", "5"
    )

    client.apply([r.prefix for r in routes[:2]] + [net("203.0.113.99/32")], [])
    assert client.local_routes() == {
        **by_prefix(routes[2:]),
        net("203.0.113.50/32"): Route(net("203.0.113.50/32"), next_hop=ip("192.0.2.250")),
        net("2001:db8::50/128"): Route(
            net("2001:db8::50/128"), next_hop=ip("2001:db8::1"), origin=Origin.INCOMPLETE
        ),
    }
    client.apply([r.prefix for r in routes], [])
    assert set(rib(gobgpd, "ipv4")) == {"203.0.113.50/32", "203.0.113.51/32"}
    assert set(rib(gobgpd, "ipv6")) == {"2001:db8::50/128"}


def test_unix_socket_target(tmp_path: Path, version: int) -> None:
    proc = GobgpdProc(tmp_path / "u", name="u", api_socket=tmp_path / "api.sock", version=version)
    proc.start()
    try:
        with GobgpClient(proc.api_target) as client:
            route = Route(net("192.0.2.33/32"), med=3)
            client.apply([], [route])
            assert client.local_routes() == {route.prefix: route}
    finally:
        proc.stop()


def test_withdraw_then_announce_same_prefix(client: GobgpClient) -> None:
    route = Route(net("192.0.2.30/32"), med=1)
    client.apply([], [route])
    client.apply([route.prefix], [route])  # withdraws go first, so the route stays
    assert client.local_routes() == {route.prefix: route}


def test_batches_larger_than_batch_size(gobgpd: GobgpdProc) -> None:
    with GobgpClient(gobgpd.api_target, batch_size=7) as client:
        v4 = [Route(net(f"198.51.100.{i}/32"), communities=(Community(1, i),)) for i in range(60)]
        v6 = [Route(net(f"2001:db8::{i:x}/128"), next_hop=ip("2001:db8::1")) for i in range(1, 41)]
        client.apply([], v4 + v6)
        assert client.local_routes() == by_prefix(v4 + v6)
        client.apply([r.prefix for r in v4[:50] + v6[:33]], [])
        assert client.local_routes() == by_prefix(v4[50:] + v6[33:])


def test_resync_after_restart_sends_cached_paths(client: GobgpClient, gobgpd: GobgpdProc) -> None:
    routes = every_attribute()
    client.apply([], routes)
    paths = client._current("test").paths
    assert (paths.hits, paths.misses) == (0, len(routes))
    gobgpd.restart()  # every API path is gone: the re-sync sends them all again
    client.apply([], routes)
    assert (paths.hits, paths.misses) == (len(routes), len(routes))  # nothing built
    assert client.local_routes() == by_prefix(routes)
    prefixes = [r.prefix for r in routes]
    client.apply(prefixes, [])
    assert client.local_routes() == {}
    client.apply([], routes)
    client.apply(prefixes, [])  # withdraws from the cache too
    assert paths.misses == 2 * len(routes)
    assert client.local_routes() == {}


@pytest.mark.parametrize("cache_size", [0, 5])
def test_a_small_path_cache_still_sends_everything(gobgpd: GobgpdProc, cache_size: int) -> None:
    with GobgpClient(gobgpd.api_target, batch_size=16, path_cache_size=cache_size) as client:
        v4 = [Route(net(f"198.51.100.{i}/32"), med=i) for i in range(40)]
        v6 = [Route(net(f"2001:db8::{i:x}/128"), next_hop=ip("2001:db8::1")) for i in range(1, 41)]
        for _ in range(2):
            client.apply([], v4 + v6)
            assert client.local_routes() == by_prefix(v4 + v6)
            assert len(client._current("test").paths) <= 2 * cache_size
        client.apply([r.prefix for r in v4[:30] + v6[:20]], [])
        assert client.local_routes() == by_prefix(v4[30:] + v6[20:])


@pytest.mark.parametrize(
    "bad",
    [
        Route(net("192.0.2.0/24")),
        Route(net("2001:db8::1/128")),  # v6 without an explicit next hop
        Route(net("192.0.2.1/32"), next_hop=ip("2001:db8::1")),
        Route(net("192.0.2.1/32"), med=2**32),
        Route(net("192.0.2.1/32"), as_path_prepend=11),
        Route(net("192.0.2.1/32"), as_path_prepend=UNREPRESENTABLE_PREPEND),
    ],
)
def test_invalid_route_sends_nothing(client: GobgpClient, bad: Route) -> None:
    good = Route(net("192.0.2.40/32"))
    client.apply([], [good])
    with pytest.raises(InvalidRoute):
        client.apply([good.prefix], [Route(net("192.0.2.41/32")), bad])
    assert client.local_routes() == {good.prefix: good}


def test_invalid_withdraw_sends_nothing(client: GobgpClient) -> None:
    good = Route(net("192.0.2.40/32"))
    client.apply([], [good])
    with pytest.raises(InvalidRoute):
        client.apply([good.prefix, net("192.0.2.0/24")], [])
    assert client.local_routes() == {good.prefix: good}


def test_unrepresentable_paths_never_equal_a_route(client: GobgpClient, gobgpd: GobgpdProc) -> None:
    # Another AS in the AS_PATH, and an attribute type announcer does not model.
    gobgpd.cli(
        "global",
        "rib",
        "add",
        "192.0.2.60/32",
        "nexthop",
        "192.0.2.250",
        "origin",
        "igp",
        "aspath",
        "65123",
    )
    gobgpd.cli(
        "global",
        "rib",
        "add",
        "192.0.2.61/32",
        "nexthop",
        "192.0.2.250",
        "origin",
        "igp",
        "aggregator",
        "65001:192.0.2.1",
    )
    got = client.local_routes()
    assert got[net("192.0.2.60/32")].as_path_prepend == UNREPRESENTABLE_PREPEND
    assert got[net("192.0.2.61/32")].as_path_prepend == UNREPRESENTABLE_PREPEND
    # What the planner then does: re-announce, which replaces the whole path.
    fixed = [
        Route(net("192.0.2.60/32"), next_hop=ip("192.0.2.250")),
        Route(net("192.0.2.61/32"), next_hop=ip("192.0.2.250")),
    ]
    client.apply([], fixed)
    assert client.local_routes() == by_prefix(fixed)


# -------------------------------------------------------------- failures


def test_gobgpd_down_raises_gobgp_error() -> None:
    with GobgpClient(f"127.0.0.1:{free_port()}", timeout=1.0) as client:
        for call in (
            client.local_routes,
            client.peers,
            client.local_asn,
            lambda: client.enable_peer("192.0.2.1"),
        ):
            with pytest.raises(GobgpError):
                call()
        with pytest.raises(GobgpError) as err:
            client.apply([], [Route(net("192.0.2.1/32"))])
        assert err.value.done == 0
        with pytest.raises(GobgpError):
            client.wait_closed()


def test_gobgpd_refusal_is_a_gobgp_error(client: GobgpClient) -> None:
    with pytest.raises(GobgpError, match="EnablePeer"):
        client.enable_peer("192.0.2.77")  # no such neighbor


def test_partial_failure_reports_done(client: GobgpClient, gobgpd: GobgpdProc) -> None:
    routes = [Route(net(f"203.0.113.{i}/32")) for i in range(1, 11)]
    client.batch_size = 4
    # Make the second batch fail inside gobgpd: kill it between batches.
    api = client._current("test")
    real = api.add_path_stream
    calls = 0

    def flaky(requests: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            gobgpd.stop()
        return real(requests, **kw)

    api.add_path_stream = flaky
    with pytest.raises(GobgpError) as err:
        client.apply([], routes)
    assert err.value.done == 4


# ---------------------------------------------------------------- watch


def run_watch(
    client: GobgpClient,
) -> tuple[list[BaseException], threading.Thread, threading.Event]:
    """client.wait_closed() in a thread, as the service runs it; `registered` is set
    by its on_open callback (END_OF_INIT)."""
    errors: list[BaseException] = []
    registered = threading.Event()

    def loop() -> None:
        try:
            client.wait_closed(registered.set)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return errors, t, registered


def test_restart_ends_the_watch(client: GobgpClient, gobgpd: GobgpdProc) -> None:
    route = Route(net("192.0.2.70/32"))
    client.apply([], [route])
    errors, thread, registered = run_watch(client)
    assert registered.wait(5), "no END_OF_INIT from WatchEvent"
    assert thread.is_alive()

    gobgpd.restart()
    thread.join(5)
    assert not thread.is_alive(), "watch did not end when gobgpd restarted"
    assert len(errors) == 1 and isinstance(errors[0], GobgpError), errors
    # The same client works again, and the restart lost every API path.
    assert client.local_asn() == A_ASN
    assert client.local_routes() == {}


def test_reconnect_keeps_the_version_and_the_encoded_paths(
    client: GobgpClient, gobgpd: GobgpdProc
) -> None:
    """A new channel (GobgpClient.reconnect, after a failed watch) changes nothing else:
    the detected API, the path cache, and a call in flight on the old channel."""
    routes = every_attribute()
    client.apply([], routes)
    before = client._current("test")
    errors, thread, registered = run_watch(client)  # a stream on the old channel
    assert registered.wait(5)
    client.reconnect()
    after = client._current("test")
    assert after is not before and after.version == before.version
    assert after.paths is before.paths
    gobgpd.restart()
    thread.join(5)  # the old channel's stream still ended as a restart
    assert not thread.is_alive() and len(errors) == 1 and isinstance(errors[0], GobgpError)
    client.apply([], routes)  # the re-sync, on the new channel, from the cache
    assert (after.paths.hits, after.paths.misses) == (len(routes), len(routes))
    assert client.local_routes() == by_prefix(routes)


def test_close_cancels_open_watches(gobgpd: GobgpdProc) -> None:
    client = GobgpClient(gobgpd.api_target)
    errors, thread, registered = run_watch(client)
    assert registered.wait(5)
    client.close()
    thread.join(5)
    assert not thread.is_alive() and errors == []


def test_wait_closed_raises_on_restart_and_returns_on_cancel(
    client: GobgpClient, gobgpd: GobgpdProc
) -> None:
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            client.wait_closed()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    wait_for(lambda: len(client._watches) == 1, 5)
    gobgpd.restart()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], GobgpError)

    errors.clear()
    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    wait_for(lambda: len(client._watches) == 1, 5)
    client.cancel_watch()
    t.join(5)
    assert not t.is_alive() and errors == []
    client.wait_closed()  # after cancel_watch() it returns at once


# ------------------------------------------------------------ eBGP peer


def test_ebgp_peer_receives_attributes(pair: tuple[GobgpdProc, GobgpdProc]) -> None:
    a, b = pair
    with GobgpClient(a.api_target) as client:
        wait_for(lambda: [p.state for p in client.peers()] == [SessionState.ESTABLISHED], 30)
        (peer,) = client.peers()
        assert (peer.address, peer.peer_asn, peer.admin_down) == ("127.0.0.1", B_ASN, False)
        assert peer.uptime_s is not None and peer.uptime_s >= 0

        # B sends routes to A: one for a prefix we also announce, one only B has.
        b.cli("global", "rib", "add", "192.0.2.80/32", "nexthop", "192.0.2.252")
        b.cli("global", "rib", "add", "198.51.100.81/32", "nexthop", "192.0.2.252")
        b.cli("global", "rib", "-a", "ipv6", "add", "2001:db8::81/128", "nexthop", "2001:db8::52")

        # An explicit next hop: B drops routes whose next hop is its own 127.0.0.1.
        v4 = Route(
            net("192.0.2.80/32"),
            next_hop=ip("192.0.2.254"),
            med=42,
            local_pref=300,
            communities=(Community(65001, 100),),
            large_communities=(LargeCommunity(65001, 1, 2),),
            as_path_prepend=2,
        )
        v6 = Route(
            net("2001:db8::80/128"),
            next_hop=ip("2001:db8:ffff::1"),
            communities=(Community(65001, 6),),
        )
        client.apply([], [v4, v6])

        wait_for(
            lambda: learned(b, "ipv4", "192.0.2.80/32") and learned(b, "ipv6", "2001:db8::80/128")
        )
        attrs4 = from_peer(b, "ipv4", "192.0.2.80/32")
        assert attrs4[1]["value"] == 0  # ORIGIN IGP
        assert attrs4[2]["as_paths"][0]["asns"] == [A_ASN] * 3  # gobgpd's own AS + 2 prepends
        assert attrs4[3]["nexthop"] == "192.0.2.254"
        assert attrs4[4]["metric"] == 42
        assert 5 not in attrs4  # LOCAL_PREF is not sent to an eBGP peer
        assert attrs4[8]["communities"] == [Community(65001, 100).value]
        assert attrs4[32]["value"] == [{"ASN": 65001, "LocalData1": 1, "LocalData2": 2}]
        attrs6 = from_peer(b, "ipv6", "2001:db8::80/128")
        assert attrs6[14]["nexthop"] == "2001:db8:ffff::1"
        assert attrs6[8]["communities"] == [Community(65001, 6).value]

        # A learned 198.51.100.81/32, 2001:db8::81/128 and B's 192.0.2.80/32 from B;
        # none of them is a local route.
        wait_for(
            lambda: (
                learned(a, "ipv4", "198.51.100.81/32")
                and learned(a, "ipv6", "2001:db8::81/128")
                and learned(a, "ipv4", "192.0.2.80/32")
            )
        )
        assert len(rib(a, "ipv4")["192.0.2.80/32"]) == 2  # ours and B's
        assert client.local_routes() == {v4.prefix: v4, v6.prefix: v6}
        # What A sends B (the keeper waits on this before it disables the peers):
        # our two routes; B's own 192.0.2.80/32 is not sent back to B.
        assert client.advertised("127.0.0.1") >= {v4.prefix, v6.prefix}

        client.apply([v4.prefix, v6.prefix], [])
        wait_for(lambda: not client.advertised("127.0.0.1") & {v4.prefix, v6.prefix})
        wait_for(
            lambda: (
                not learned(b, "ipv4", "192.0.2.80/32")
                and not learned(b, "ipv6", "2001:db8::80/128")
            )
        )
        assert len(rib(b, "ipv4")["192.0.2.80/32"]) == 1  # B's own path is still there
        assert client.local_routes() == {}

        client.disable_peer("127.0.0.1", "maintenance")
        wait_for(lambda: client.peers()[0].admin_down)
        assert client.peers()[0].state is not SessionState.ESTABLISHED
        client.enable_peer("127.0.0.1")
        # Not waiting for ESTABLISHED again: gobgpd waits 5 s idle hold plus a random
        # 5-10 s before reconnecting, too slow for this test.
        wait_for(lambda: not client.peers()[0].admin_down)


# ------------------------------------------------------------ API version


def other(version: int) -> Literal[3, 4]:
    return 3 if version == 4 else 4


def test_auto_detects_the_version_once_and_logs_it(
    gobgpd: GobgpdProc, version: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="announcer.gobgp")
    with GobgpClient(gobgpd.api_target) as client:
        route = Route(net("192.0.2.90/32"), as_path_prepend=1)
        client.apply([], [route])
        assert client.local_routes() == {route.prefix: route}
        assert client.peers() == []
        assert client._current("test").version == version
    lines = [r.getMessage() for r in caplog.records if "API" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"GoBGP {version}.x API" in lines[0] and "detected" in lines[0], lines
    # gobgpd 3.x has no BFD: said once, at detection (4.x has it: nothing said).
    bfd = [r.getMessage() for r in caplog.records if "BFD" in r.getMessage()]
    assert len(bfd) == (1 if version == 3 else 0), bfd


def test_pinned_version_is_used(gobgpd: GobgpdProc, version: Literal[3, 4]) -> None:
    with GobgpClient(gobgpd.api_target, api_version=version) as client:
        route = Route(net("192.0.2.91/32"), med=9)
        client.apply([], [route])
        assert client.local_routes() == {route.prefix: route}
        assert client._current("test").version == version


def test_pinned_wrong_version_names_the_mismatch(gobgpd: GobgpdProc, version: int) -> None:
    wrong = other(version)
    with GobgpClient(gobgpd.api_target, api_version=wrong) as client:
        calls: list[Callable[[], object]] = [
            client.local_routes,
            client.peers,
            lambda: client.apply([], [Route(net("192.0.2.92/32"))]),
            client.wait_closed,
        ]
        for call in calls:
            with pytest.raises(GobgpError) as err:
                call()
            message = str(err.value)
            assert f"does not serve the GoBGP {wrong}.x API" in message, message
            assert f"it serves {version}.x" in message, message
            assert f"set gobgp.api_version to {version} or auto" in message, message
    assert rib(gobgpd, "ipv4") == {}  # nothing was sent in the wrong format


def test_a_grpc_server_that_is_not_gobgpd() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        auto = GobgpClient(f"127.0.0.1:{port}")
        with auto, pytest.raises(GobgpError, match="serves neither GoBGP API"):
            auto.local_routes()
        pinned = GobgpClient(f"127.0.0.1:{port}", api_version=4)
        with pinned, pytest.raises(GobgpError, match=r"4\.x API .* pins; nor the 3\.x API"):
            pinned.peers()
    finally:
        server.stop(None)


@pytest.mark.parametrize(("before", "after"), [(3, 4), (4, 3)], ids=["upgrade", "downgrade"])
def test_version_change_under_a_running_client(
    tmp_path: Path, before: int, after: int, caplog: pytest.LogCaptureFixture
) -> None:
    """gobgpd replaced by the other major version on the same address, client kept."""
    caplog.set_level(logging.INFO, logger="announcer.gobgp")
    proc = GobgpdProc(tmp_path / "a", asn=A_ASN, name="a", version=before)
    proc.start()
    try:
        with GobgpClient(proc.api_target) as client:
            route = Route(net("192.0.2.95/32"), med=5, communities=(Community(65001, 95),))
            client.apply([], [route])
            errors, thread, registered = run_watch(client)
            assert registered.wait(5)

            proc.stop()
            proc.version = after
            proc.start()
            thread.join(5)
            assert not thread.is_alive() and len(errors) == 1, errors
            assert isinstance(errors[0], GobgpError)
            # The first call after the switch is in the old format: gobgpd answers
            # UNIMPLEMENTED, the client detects again and resends in the new one.
            client.apply([], [route])
            assert client._current("test").version == after
            assert client.local_routes() == {route.prefix: route}
            errors, thread, registered = run_watch(client)
            assert registered.wait(5), errors
            client.cancel_watch()
            thread.join(5)
            assert not thread.is_alive() and errors == []
    finally:
        proc.stop()
    changed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"GoBGP {after}.x API" in m and f"was {before}.x" in m for m in changed), changed
