"""The service loops against fakes that enforce the invariants and fail loudly on misuse."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from announcer.config import parse_config
from announcer.errors import DataPlaneError, GobgpError
from announcer.health import State
from announcer.model import (
    CheckResult,
    CheckSpec,
    Discovery,
    Frontend,
    HostPrefix,
    PeerStatus,
    RawBind,
    Route,
    validate_route,
)
from announcer.planner import allowed
from announcer.service import Service, check_spec

A = ipaddress.ip_address
N = ipaddress.ip_network
ALLOW = (N("192.0.2.0/24"),)


def config(**over: Any) -> Any:
    doc: dict[str, Any] = {
        "allowed_prefixes": ["192.0.2.0/24"],
        "dataplaneapi": {"password_env": "X", "poll_interval": 0.1},
        "gobgp": {"resync_interval": 1},
        "health": {"interval": 0.1, "fast_interval": 0.05, "timeout": 0.05, "rise": 2, "fall": 2},
        "service": {"startup_grace": 1.0, "stop_timeout": 2, "state_dir": None},
        "drain": {"delay": 0, "disable_file": None},
        "metrics": {"enabled": False},
    }
    for k, v in over.items():
        doc[k] = {**doc.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(doc)


def frontend(name: str, *addresses: str, port: int = 80) -> Frontend:
    return Frontend(
        name,
        "http",
        monitor_uri="/healthz",
        binds=tuple(RawBind(f"b{i}", a, port) for i, a in enumerate(addresses)),
    )


class FakeSource:
    def __init__(self, *frontends: Frontend) -> None:
        self.frontends = frontends
        self.version = 1
        self.fail: Exception | None = None
        self.calls = 0

    async def configuration_version(self) -> int:
        self.calls += 1
        if self.fail:
            raise self.fail
        return self.version

    async def discover(self) -> Discovery:
        if self.fail:
            raise self.fail
        return Discovery(self.version, self.frontends)

    def set(self, *frontends: Frontend) -> None:
        self.frontends = frontends
        self.version += 1


class FakeTable:
    """gobgpd as a dict; refuses anything the real adapter must never be asked to do."""

    def __init__(self) -> None:
        self.routes: dict[HostPrefix, Route] = {}
        self.applies: list[tuple[tuple[HostPrefix, ...], tuple[Route, ...]]] = []
        self.withdrawn: list[HostPrefix] = []
        self.down = False
        self._closed = threading.Event()
        self.reads = 0
        self.peer_list: list[PeerStatus] = []
        self.enabled: list[str] = []
        self.expected = False  # enable_peer must find routes already injected
        self.refused = 0  # calls refused while down
        self.on_open: Callable[[], None] | None = None  # the last watcher's callback

    def local_routes(self) -> dict[HostPrefix, Route]:
        if self.down:
            self.refused += 1
            raise GobgpError("connection refused")
        self.reads += 1
        return dict(self.routes)

    def apply(self, withdraw: Sequence[HostPrefix], announce: Sequence[Route]) -> None:
        if self.down:
            raise GobgpError("connection refused")
        assert withdraw or announce, "empty plan sent to gobgpd"
        for r in announce:
            validate_route(r)
            assert allowed(r.prefix, ALLOW), f"{r.prefix} announced outside the allow-list"
        for p in withdraw:
            assert allowed(p, ALLOW), f"withdraw of {p}, which is not ours"
            assert p in self.routes, f"withdraw of {p}, which is not there"
            del self.routes[p]
            self.withdrawn.append(p)
        for r in announce:
            self.routes[r.prefix] = r
        self.applies.append((tuple(withdraw), tuple(announce)))

    def peers(self) -> list[PeerStatus]:
        return list(self.peer_list)

    def enable_peer(self, address: str) -> None:
        assert self.routes or not self.expected, "peer enabled before the set was injected"
        self.enabled.append(address)
        self.peer_list = [
            PeerStatus(p.address, p.peer_asn, p.state, False) if p.address == address else p
            for p in self.peer_list
        ]

    def wait_closed(self, on_open: Callable[[], None] | None = None) -> None:
        self.on_open = on_open
        if on_open is not None and not self.down:
            on_open()
        self._closed.wait()
        self._closed.clear()

    def cancel_watch(self) -> None:
        self._closed.set()

    def restart(self) -> None:
        """gobgpd restarted: every API path is gone and the event stream ends."""
        self.routes.clear()
        self._closed.set()


class FakeProber:
    def __init__(self) -> None:
        self.bad: set[str] = set()
        self.runs = 0
        self.delay = 0.0  # seconds each probe takes

    async def run(self, spec: CheckSpec) -> CheckResult:
        self.runs += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        ok = str(spec.address) not in self.bad
        return CheckResult(ok, "HTTP 200" if ok else "HTTP 503", 0.001)


async def until(cond: Callable[[], object], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self, source: FakeSource, table: FakeTable | None = None, **cfg: Any) -> None:
        self.source = source
        self.table = table or FakeTable()
        self.prober = FakeProber()
        self.svc = Service(config(**cfg), source=source, table=self.table, prober=self.prober)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.svc.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def prefixes(self) -> set[str]:
        return {str(p) for p in self.table.routes}


def run(coro: Any) -> None:
    asyncio.run(coro)


def test_healthy_vips_are_announced_and_outside_allow_list_never_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        src = FakeSource(
            frontend("web", "192.0.2.10", "203.0.113.5", "*"), frontend("api", "192.0.2.11")
        )
        async with Harness(src) as h:
            await until(lambda: h.prefixes() == {"192.0.2.10/32", "192.0.2.11/32"})
            await asyncio.sleep(0.3)  # several more cycles: nothing else is ever sent
            assert h.prefixes() == {"192.0.2.10/32", "192.0.2.11/32"}
            # Each route sent once (as its VIP rose), nothing withdrawn; the rest were no-ops.
            sent = [r.prefix for _, announce in h.table.applies for r in announce]
            assert sorted(map(str, sent)) == ["192.0.2.10/32", "192.0.2.11/32"], h.table.applies
            assert h.table.withdrawn == []
        assert h.table.routes == {}  # withdraw_on_stop

    run(go())
    outside = [r for r in caplog.records if "outside allowed_prefixes" in r.getMessage()]
    assert len(outside) == 1 and "203.0.113.5" in outside[0].getMessage()  # logged once


def test_failing_check_withdraws_after_fall_and_comes_back_after_rise() -> None:
    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src) as h:
            await until(lambda: len(h.table.routes) == 2)
            h.prober.bad.add("192.0.2.10")
            await until(lambda: h.prefixes() == {"192.0.2.11/32"})
            assert h.table.withdrawn == [N("192.0.2.10/32")]
            h.prober.bad.clear()
            await until(lambda: len(h.table.routes) == 2)

    run(go())


def test_dataplane_failure_keeps_everything(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10"))
        async with Harness(src) as h:
            await until(lambda: len(h.table.routes) == 1)
            src.fail = DataPlaneError("HTTP 500", url="http://x", status=500)
            calls = src.calls
            await until(lambda: src.calls > calls + 2, timeout=10)
            assert h.prefixes() == {"192.0.2.10/32"} and not h.table.withdrawn
            src.fail = None
            src.set(frontend("web", "192.0.2.10"), frontend("new", "192.0.2.12"))
            await until(lambda: len(h.table.routes) == 2, timeout=10)

    run(go())
    assert any("keeping the last known 1 VIPs" in r.getMessage() for r in caplog.records)


def test_dataplane_down_at_start_touches_nothing() -> None:
    async def go() -> None:
        table = FakeTable()
        leftover = Route(N("192.0.2.50/32"))
        table.routes[leftover.prefix] = leftover
        src = FakeSource(frontend("web", "192.0.2.10"))
        src.fail = DataPlaneError("connection refused", url="http://x")
        async with Harness(src, table, service={"withdraw_on_stop": False}) as h:
            await asyncio.sleep(1.5)  # longer than startup_grace
            assert h.table.applies == [] and h.table.routes == {leftover.prefix: leftover}

    run(go())


def test_restart_does_not_flap_a_route_that_is_still_healthy() -> None:
    async def go() -> None:
        table = FakeTable()
        kept = Route(N("192.0.2.10/32"))
        stale = Route(N("192.0.2.99/32"))
        table.routes = {kept.prefix: kept, stale.prefix: stale}
        async with Harness(FakeSource(frontend("web", "192.0.2.10")), table) as h:
            await until(lambda: h.svc.synced.is_set())
            assert h.table.withdrawn == [stale.prefix]  # only the stale one, never the healthy one
            assert h.table.applies == [((stale.prefix,), ())]

    run(go())


def test_vip_removed_from_haproxy_is_withdrawn() -> None:
    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10"), frontend("old", "192.0.2.11"))
        async with Harness(src) as h:
            await until(lambda: len(h.table.routes) == 2)
            src.set(frontend("web", "192.0.2.10"))
            await until(lambda: h.prefixes() == {"192.0.2.10/32"})
            assert len(h.svc.checks) == 1  # the check of the gone VIP stopped

    run(go())


def test_gobgpd_down_then_back_resyncs() -> None:
    async def go() -> None:
        async with Harness(FakeSource(frontend("web", "192.0.2.10"))) as h:
            await until(lambda: len(h.table.routes) == 1)
            h.table.down = True
            h.table.routes.clear()
            h.prober.bad.add("192.0.2.10")  # a change while gobgpd is away
            await until(lambda: h.svc.vips[A("192.0.2.10")].state is State.DOWN)
            h.prober.bad.clear()
            await until(lambda: h.svc.vips[A("192.0.2.10")].state is State.UP)
            h.table.down = False
            await until(lambda: len(h.table.routes) == 1, timeout=4)

    run(go())


def test_gobgpd_restart_is_noticed_through_the_event_stream() -> None:
    async def go() -> None:
        async with Harness(
            FakeSource(frontend("web", "192.0.2.10")), gobgp={"resync_interval": 3600}
        ) as h:
            await until(lambda: len(h.table.routes) == 1)
            h.table.restart()
            await until(lambda: len(h.table.routes) == 1, timeout=2)
            assert h.svc.resyncs >= 1

    run(go())


def test_gobgpd_back_is_resynced_at_once_not_after_the_backoff() -> None:
    """The reopened event stream (END_OF_INIT) cuts the reconcile's backoff short."""

    async def go() -> None:
        async with Harness(FakeSource(frontend("web", "192.0.2.10"))) as h:
            await until(lambda: len(h.table.routes) == 1)
            h.table.down = True
            h.table.restart()
            await until(lambda: h.table.refused >= 4, timeout=5)  # the backoff is at 1-2 s now
            await asyncio.sleep(0.05)
            h.table.down = False
            loop = asyncio.get_running_loop()
            back = loop.time()
            assert h.table.on_open is not None
            h.table.on_open()  # gobgpd serves again: its stream reached END_OF_INIT
            await until(lambda: len(h.table.routes) == 1, timeout=3)
            assert loop.time() - back < 0.5

    run(go())


def test_a_crashing_probe_fails_its_check_and_the_check_goes_on() -> None:
    async def go() -> None:
        class Crashing(FakeProber):
            async def run(self, spec: CheckSpec) -> CheckResult:
                self.runs += 1
                if self.bad:
                    raise RuntimeError("a bug in a probe")
                return CheckResult(True, "HTTP 200", 0.001)

        h = Harness(FakeSource(frontend("web", "192.0.2.10")))
        h.svc.prober = h.prober = Crashing()
        async with h:
            await until(lambda: len(h.table.routes) == 1)
            h.prober.bad.add("x")
            await until(lambda: not h.table.routes)
            runs = h.prober.runs
            await asyncio.sleep(0.3)
            assert h.prober.runs > runs  # still scheduled
            h.prober.bad.clear()
            await until(lambda: len(h.table.routes) == 1)

    run(go())


def test_a_removed_check_is_never_run_again() -> None:
    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10"), frontend("old", "192.0.2.11"))
        seen: list[str] = []

        class Recording(FakeProber):
            async def run(self, spec: CheckSpec) -> CheckResult:
                seen.append(str(spec.address))
                return await super().run(spec)

        h = Harness(src)
        h.svc.prober = h.prober = Recording()
        async with h:
            await until(lambda: len(h.table.routes) == 2)
            src.set(frontend("web", "192.0.2.10"))
            await until(lambda: len(h.svc.checks) == 1)
            await asyncio.sleep(0.05)
            n = len(seen)
            await asyncio.sleep(0.5)
            assert "192.0.2.11" not in seen[n:] and len(seen) > n + 2

    run(go())


def test_shared_vip_policy_all_and_any() -> None:
    async def go(policy: str, expect: set[str]) -> None:
        fe_a = Frontend("a", "http", monitor_uri="/a", binds=(RawBind("x", "192.0.2.10", 80),))
        fe_b = Frontend("b", "tcp", binds=(RawBind("y", "192.0.2.10", 443),))

        class HalfProber(FakeProber):
            async def run(self, spec: CheckSpec) -> CheckResult:
                return CheckResult(spec.kind == "http", "x", 0.0)

        h = Harness(FakeSource(fe_a, fe_b), health={"combine": policy})
        h.svc.prober = HalfProber()
        async with h:
            await until(
                lambda: h.svc.vips and h.svc.vips[A("192.0.2.10")].state in (State.UP, State.DOWN)
            )
            await until(lambda: h.svc.synced.is_set())
            assert h.prefixes() == expect
            st = h.svc.status()[0]
            assert [c[0] for c in st.checks] == ["http://192.0.2.10:80/a", "tcp 192.0.2.10:443"]

    run(go("all", set()))
    run(go("any", {"192.0.2.10/32"}))


def test_check_spec_choice() -> None:
    cfg = config().health
    from announcer.model import Listener

    a = A("192.0.2.1")
    assert check_spec(a, Listener("f", "b", 80, mode="http", monitor_uri="/hz"), cfg) == CheckSpec(
        "http", a, 80, cfg.timeout, path="/hz"
    )
    assert check_spec(a, Listener("f", "b", 80, mode="tcp", monitor_uri="/hz"), cfg).kind == "tcp"  # type: ignore[union-attr]
    assert (
        check_spec(a, Listener("f", "b", 80, accept_proxy=True, monitor_uri="/hz"), cfg).kind
        == "tcp"
    )  # type: ignore[union-attr]
    assert check_spec(a, Listener("f", "b", None), cfg) is None
    tls = check_spec(a, Listener("f", "b", 443, ssl=True, monitor_uri="/hz"), cfg)
    assert tls is not None and tls.tls
    cmd = config(health={"type": "command", "command": "true %s"}).health
    assert check_spec(a, Listener("f", "b", None), cmd) == CheckSpec(
        "command", a, None, cmd.timeout, command="true %s"
    )
