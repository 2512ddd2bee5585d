"""Operations features of the service against the invariant-enforcing fakes:
fate-sharing, drain, per-state attributes, overrides, reload, graceful stop, status,
metrics and the control socket."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from announcer import control
from announcer.errors import ControlError
from announcer.health import State
from announcer.metrics import Metrics
from announcer.model import Community, PeerStatus, Route, SessionState
from announcer.planner import GRACEFUL_SHUTDOWN
from announcer.service import Service
from tests.support.fakes import (
    A,
    FakeProber,
    FakeSource,
    FakeTable,
    Harness,
    N,
    config,
    frontend,
    render,
    run,
    until,
)

GS = GRACEFUL_SHUTDOWN
P10 = N("192.0.2.10/32")
P11 = N("192.0.2.11/32")


def peer(address: str, admin_down: bool) -> PeerStatus:
    return PeerStatus(address, 65530, SessionState.IDLE, admin_down)


class FakeKeeper:
    def __init__(self) -> None:
        self.released = 0
        self.respawned = 0
        self.dead = False

    def alive(self) -> bool:
        return not self.dead

    def respawn(self) -> None:
        self.respawned += 1
        self.dead = False

    def release(self) -> None:
        self.released += 1

    def own(self, allow: object) -> None:
        self.owned = allow


# ------------------------------------------------------------- fate-sharing


def test_start_enables_peers_once_leftovers_are_gone_and_announces_vips_as_they_rise() -> None:
    """At a start the routers cannot see gobgpd (its peers are admin-down): announcer
    withdraws what a previous run left, enables the peers at once, so the sessions
    come up while the checks rise, and announces each VIP when it passes rise."""

    async def go() -> None:
        table = FakeTable()
        stale = Route(N("192.0.2.99/32"))
        was = Route(P10)  # left by a crashed run: its VIP has no verdict yet
        table.routes = {stale.prefix: stale, was.prefix: was}
        table.peer_list = [peer("198.51.100.1", True), peer("198.51.100.2", True)]
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        h = Harness(src, table)
        h.prober.delay = 0.3  # the first verdicts come after the peers are up
        async with h:
            await until(lambda: len(table.enabled) == 2)
            assert table.routes == {}  # nothing a previous run left reaches the routers
            assert not h.svc.synced.is_set()
            await until(lambda: h.svc.synced.is_set(), timeout=5)
            assert set(table.routes) == {P10, P11}
            assert sorted(table.withdrawn) == [P10, stale.prefix]

    run(go())


def test_start_keeps_routes_the_routers_see_until_their_vip_decides() -> None:
    """Peers already enabled (announcer restarted, gobgpd not): a route of a VIP
    still rising stays, so the restart flaps nothing; a DOWN one leaves on its verdict."""

    async def go() -> None:
        table = FakeTable()
        table.routes = {P10: Route(P10), P11: Route(P11)}
        table.peer_list = [peer("198.51.100.1", False)]
        h = Harness(FakeSource(frontend("web", "192.0.2.10", "192.0.2.11")), table)
        h.prober.bad.add("192.0.2.11")
        h.prober.delay = 0.2
        async with h:
            await until(lambda: h.svc.synced.is_set(), timeout=5)
            assert table.withdrawn == [P11]  # the DOWN one, once it was DOWN
            assert set(table.routes) == {P10}
            assert table.enabled == []

    run(go())


def test_start_grace_ends_the_keeping() -> None:
    async def go() -> None:
        table = FakeTable()
        table.routes = {P10: Route(P10)}
        table.peer_list = [peer("198.51.100.1", False)]
        h = Harness(FakeSource(frontend("web", "192.0.2.10")), table)
        h.prober.delay = 30  # no verdict ever comes
        async with h:
            await asyncio.sleep(0.5)
            assert set(table.routes) == {P10} and not h.svc.synced.is_set()
            await until(lambda: h.svc.synced.is_set(), timeout=3)  # startup_grace is 1 s
            assert table.routes == {}

    run(go())


def test_peers_after_a_gobgpd_restart_wait_for_the_complete_set() -> None:
    async def go() -> None:
        table = FakeTable()
        table.peer_list = [peer("198.51.100.1", True), peer("198.51.100.2", True)]
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, table) as h:
            await until(lambda: len(table.enabled) == 2 and h.svc.synced.is_set())
            assert len(table.routes) == 2
            # The operator disables a peer by hand: announcer leaves it alone...
            table.peer_list = [peer("198.51.100.1", True), peer("198.51.100.2", False)]
            await asyncio.sleep(0.3)
            assert len(table.enabled) == 2
            # ...until gobgpd restarts (a new lifetime starts admin-down again).
            table.expected = True  # FakeTable.enable_peer asserts routes are there already
            table.restart()
            await until(lambda: len(table.enabled) == 3, timeout=3)
            assert len(table.routes) == 2
            assert h.svc.sync.resyncs >= 1

    run(go())


def test_a_failover_plans_only_the_vip_that_changed() -> None:
    async def go() -> None:
        addresses = [f"192.0.2.{i}" for i in range(10, 30)]
        async with Harness(FakeSource(frontend("web", *addresses))) as h:
            await until(lambda: h.svc.synced.is_set() and len(h.table.routes) == 20)
            planned: list[int] = []
            core = h.svc.core
            real = core.plan

            def spy(*args: Any) -> Any:
                if core.touched is not None:  # a plan of the touched VIPs only
                    planned.append(len(core.touched))
                return real(*args)

            core.plan = spy  # type: ignore[method-assign]
            h.prober.bad.add("192.0.2.15")
            await until(lambda: N("192.0.2.15/32") not in h.table.routes)
            assert planned and max(planned) == 1
            assert len(h.table.routes) == 19

    run(go())


def test_fate_sharing_off_and_peer_subset() -> None:
    async def go(gobgp: dict[str, Any], want: list[str]) -> None:
        table = FakeTable()
        table.peer_list = [peer("198.51.100.1", True), peer("2001:db8:ff::1", True)]
        async with Harness(FakeSource(frontend("web", "192.0.2.10")), table, gobgp=gobgp) as h:
            await until(lambda: h.svc.synced.is_set())
            await asyncio.sleep(0.1)
            assert table.enabled == want

    run(go({"fate_sharing": False}, []))
    run(go({"peers": ["2001:db8:ff::1"]}, ["2001:db8:ff::1"]))


def test_keeper_released_on_clean_stop_not_on_crash_and_respawned_when_dead() -> None:
    async def clean() -> FakeKeeper:
        keeper = FakeKeeper()
        h = Harness(FakeSource(frontend("web", "192.0.2.10")))
        h.svc.keeper = keeper
        async with h:
            await until(lambda: h.svc.synced.is_set())
            keeper.dead = True
            await until(lambda: keeper.respawned == 1, timeout=3)
        return keeper

    keeper = asyncio.run(clean())
    assert keeper.released == 1

    async def crash() -> FakeKeeper:
        keeper = FakeKeeper()
        h = Harness(FakeSource(frontend("web", "192.0.2.10")))
        h.svc.keeper = keeper

        class Boom(FakeProber):
            async def run(self, spec: Any) -> Any:
                raise RuntimeError("a bug in a loop")

        h.svc.prober = Boom()
        stop = asyncio.Event()
        task = asyncio.create_task(h.svc.run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 5)
        return keeper

    # A check task crashing does not end the service (it is not one of the loops);
    # the service still stops cleanly. A crashed *loop* is covered below.
    assert asyncio.run(crash()).released == 1

    async def loop_crash() -> FakeKeeper:
        keeper = FakeKeeper()
        src = FakeSource(frontend("web", "192.0.2.10"))
        h = Harness(src)
        h.svc.keeper = keeper
        src.fail = RuntimeError("not a DataPlaneError: a bug")
        with pytest.raises(RuntimeError, match="a bug"):
            await asyncio.wait_for(h.svc.run(asyncio.Event()), 5)
        return keeper

    assert asyncio.run(loop_crash()).released == 0  # the keeper will act


# -------------------------------------------------------------------- drain


def test_drain_sends_graceful_shutdown_then_withdraws_then_undrain_restores() -> None:
    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, drain={"delay": 0.4}) as h:
            await until(lambda: len(h.table.routes) == 2)
            with pytest.raises(ControlError, match="not a VIP announcer knows"):
                h.svc.drain(["192.0.2.99"])
            with pytest.raises(ControlError, match="not an IP address"):
                h.svc.drain(["web"])
            h.svc.drain(["192.0.2.10"])
            await until(lambda: GS in h.table.routes[P10].communities)
            assert GS not in h.table.routes[P11].communities
            await until(lambda: P10 not in h.table.routes, timeout=2)
            assert P11 in h.table.routes
            report = await h.svc.report()
            vip = next(v for v in report["vips"] if v["address"] == "192.0.2.10")
            assert vip["drain"] == "drained" and vip["state"] == "UP" and not vip["in_gobgp"]
            h.svc.undrain(["192.0.2.10"])
            await until(lambda: P10 in h.table.routes)
            assert GS not in h.table.routes[P10].communities

    run(go())


def test_drain_all_and_the_disable_file(tmp_path: Path) -> None:
    disable = tmp_path / "disable"

    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, drain={"delay": 0.3, "disable_file": str(disable)}) as h:
            await until(lambda: len(h.table.routes) == 2)
            h.svc.drain([], everything=True)
            await until(lambda: all(GS in r.communities for r in h.table.routes.values()))
            await until(lambda: not h.table.routes, timeout=2)
            h.svc.undrain([], everything=True)
            await until(lambda: len(h.table.routes) == 2)
            disable.touch()
            await until(lambda: all(GS in r.communities for r in h.table.routes.values()), 3)
            await until(lambda: not h.table.routes, timeout=3)
            assert "stays drained" in h.svc.undrain([], everything=True)["warning"]
            disable.unlink()
            await until(lambda: len(h.table.routes) == 2, timeout=3)

    run(go())


def test_drains_survive_a_restart_and_come_back_already_drained(tmp_path: Path) -> None:
    state = tmp_path / "state"

    async def first() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, service={"state_dir": str(state)}, drain={"delay": 0.1}) as h:
            await until(lambda: len(h.table.routes) == 2)
            h.svc.drain(["192.0.2.11"])
            await until(lambda: P11 not in h.table.routes)

    async def second() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, service={"state_dir": str(state)}, drain={"delay": 0.2}) as h:
            await until(lambda: h.svc.synced.is_set())
            assert set(h.table.routes) == {P10}  # never announced, not even with 65535:0
            assert all(not a for a, _ in h.table.applies) and len(h.table.applies) == 1

    run(first())
    assert json.loads((state / "drains.json").read_text()) == {"all": False, "vips": ["192.0.2.11"]}
    run(second())


def test_graceful_stop_drains_first_and_a_second_signal_hurries() -> None:
    async def go(hurry_after: float | None) -> tuple[list[Any], float]:
        h = Harness(FakeSource(frontend("web", "192.0.2.10")), drain={"delay": 0.6})
        stop, hurry = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(h.svc.run(stop, hurry))
        await until(lambda: len(h.table.routes) == 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stop.set()
        await until(lambda: bool(h.table.routes) and GS in h.table.routes[P10].communities)
        if hurry_after is not None:
            await asyncio.sleep(hurry_after)
            hurry.set()
        await asyncio.wait_for(task, 5)
        assert not h.table.routes
        return h.table.applies, loop.time() - t0

    applies, took = asyncio.run(go(None))
    assert took >= 0.6
    assert GS in applies[-2][1][0].communities and applies[-1] == ((P10,), ())
    _, took = asyncio.run(go(0.05))
    assert took < 0.5


# ------------------------------------------------------- per-state attributes


def test_down_vip_kept_announced_with_worse_med_when_configured() -> None:
    async def go() -> None:
        bgp = {"med": 10, "down": {"announce": True, "med": 1000, "communities": ["65512:666"]}}
        async with Harness(FakeSource(frontend("web", "192.0.2.10")), bgp=bgp) as h:
            await until(lambda: P10 in h.table.routes and h.table.routes[P10].med == 10)
            h.prober.bad.add("192.0.2.10")
            await until(lambda: h.table.routes[P10].med == 1000)
            assert Community(65512, 666) in h.table.routes[P10].communities
            assert not h.table.withdrawn
            h.prober.bad.clear()
            await until(lambda: h.table.routes[P10].med == 10)

    run(go())


def test_overrides_by_frontend_and_by_vip() -> None:
    async def go() -> None:
        src = FakeSource(frontend("fe_api", "192.0.2.11"), frontend("web", "192.0.2.10"))
        overrides = [
            {"vips": ["192.0.2.10"], "bgp": {"communities": ["65512:10"]}},
            {"frontends": ["fe_api*"], "health": {"type": "tcp"}, "bgp": {"med": 7}},
        ]
        async with Harness(src, overrides=overrides) as h:
            await until(lambda: len(h.table.routes) == 2)
            assert h.table.routes[P10].communities == (Community(65512, 10),)
            assert h.table.routes[P11].med == 7 and h.table.routes[P10].med is None
            kinds = {c.spec.address: c.spec.kind for c in h.svc.checks.values()}
            assert kinds == {A("192.0.2.11"): "tcp", A("192.0.2.10"): "http"}

    run(go())


# -------------------------------------------------------------------- reload


def test_reload_keeps_unchanged_vips_and_seeds_changed_checks() -> None:
    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10"), frontend("api", "192.0.2.11"))
        async with Harness(src) as h:
            await until(lambda: len(h.table.routes) == 2)
            before = dict(h.svc.checks)
            n_applies = len(h.table.applies)
            # api gets a tcp check; web is unchanged; a restart-only key changes too.
            new = config(
                overrides=[{"frontends": ["api"], "health": {"type": "tcp"}}],
                gobgp={"address": "127.0.0.1:1"},
            )
            ignored = h.svc.reload(new)
            assert ignored == ["gobgp.address"]
            assert h.svc.cfg.gobgp.address == "unix:///run/gobgpd/api.sock"
            web = next(s for s in before if s.address == A("192.0.2.10"))
            assert h.svc.checks[web] is before[web]  # same task, same state
            api = next(c for c in h.svc.checks.values() if c.spec.address == A("192.0.2.11"))
            assert api.spec.kind == "tcp" and api.health.state is State.UP  # seeded, not INIT
            await asyncio.sleep(0.4)
            assert len(h.table.applies) == n_applies  # nothing flapped
            # Shrinking the allow-list withdraws what fell outside it.
            h.svc.reload(config(allowed_prefixes=["192.0.2.10/32"]))
            await until(lambda: set(h.table.routes) == {P10})

    run(go())


# ---------------------------------------------------- status, metrics, control


def test_status_metrics_and_control_socket(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"

    async def go() -> None:
        metrics = Metrics()
        table = FakeTable()
        table.peer_list = [peer("198.51.100.1", False)]
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        h = Harness(src, table, drain={"delay": 30, "on_stop": False})
        h.svc.metrics = metrics
        metrics.attach(h.svc)
        server = await control.serve(sock, h.svc)
        async with h:
            await until(lambda: len(table.routes) == 2)
            h.prober.bad.add("192.0.2.11")
            await until(lambda: P11 not in table.routes)
            result = await asyncio.to_thread(control.request, sock, {"command": "status"})
            vips = {v["address"]: v for v in result["vips"]}
            assert vips["192.0.2.10"]["state"] == "UP" and vips["192.0.2.10"]["in_gobgp"]
            assert vips["192.0.2.11"]["state"] == "DOWN" and not vips["192.0.2.11"]["in_gobgp"]
            assert vips["192.0.2.11"]["checks"][0]["detail"] == "HTTP 503"
            assert result["peers"][0]["address"] == "198.51.100.1"
            text = control.render(result)
            assert "192.0.2.11" in text and "DOWN" in text and "FAIL HTTP 503" in text
            with pytest.raises(ControlError, match="not a VIP"):
                await asyncio.to_thread(
                    control.request, sock, {"command": "drain", "vips": ["192.0.2.77"]}
                )
            with pytest.raises(ControlError, match="unknown command"):
                await asyncio.to_thread(control.request, sock, {"command": "freeze"})
            r = await asyncio.to_thread(
                control.request, sock, {"command": "drain", "vips": ["192.0.2.10"]}
            )
            assert r["draining"] == ["192.0.2.10"]
            await until(lambda: GS in table.routes[P10].communities)
            page = render(metrics).decode()
            assert 'announcer_vip_state{state="UP",vip="192.0.2.10"} 1.0' in page
            assert 'announcer_vip_state{state="DOWN",vip="192.0.2.11"} 1.0' in page
            assert 'announcer_vip_drain{phase="draining",vip="192.0.2.10"} 1.0' in page
            assert 'announcer_vip_transitions_total{from="UP",to="FALLING"} 1.0' in page
            assert 'announcer_checks_total{kind="http",result="fail"}' in page
            assert "announcer_check_duration_seconds_bucket" in page
            assert 'announcer_bgp_peer_established{peer="198.51.100.1"} 0.0' in page
            assert "announcer_paths_desired 1.0" in page  # .11 is DOWN
            assert "announcer_dataplaneapi_up 1.0" in page
        server.close()
        assert not sock.exists()  # ours: removed on close
        # Under the instance lock (instance.py, tested in tests/adapters/test_local_state.py)
        # whatever sits at the path is a leftover of ours: taken over.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(sock))
        stale.close()
        server = await control.serve(sock, h.svc)
        assert sock.is_socket()
        server.close()

    run(go())


def test_control_client_errors(tmp_path: Path) -> None:
    with pytest.raises(control.ControlUnavailable, match="is announcer running"):
        control.request(tmp_path / "nothing.sock", {"command": "status"})


def test_service_metrics_http_endpoint() -> None:
    from announcer import metrics_http as m

    async def go() -> None:
        metrics = Metrics()
        server = await m.serve(metrics, "127.0.0.1:0")
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = await reader.read()
        assert body.startswith(b"HTTP/1.1 200 OK") and b"announcer_info{" in body
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /nope HTTP/1.1\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 404")
        writer.close()
        server.close()

    run(go())


def test_service_accepts_no_extras() -> None:
    svc = Service(config(), source=FakeSource(), table=FakeTable(), prober=FakeProber())
    assert svc.keeper is None and svc.metrics is None and svc.notifier is None
