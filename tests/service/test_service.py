"""The service loops against fakes that enforce the invariants and fail loudly on misuse."""

from __future__ import annotations

import asyncio

import pytest

from announcer.errors import DataPlaneError
from announcer.health import State
from announcer.model import (
    CheckResult,
    CheckSpec,
    Frontend,
    RawBind,
    Route,
)
from announcer.vips import check_spec
from tests.support.fakes import (
    A,
    FakeProber,
    FakeSource,
    FakeTable,
    Harness,
    N,
    config,
    frontend,
    run,
    until,
)


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


def test_found_and_gone_vips_are_logged_each_or_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A few VIPs found or gone: a line each at INFO. More than PLAN_LOG_LIMIT at once:
    one summary line at INFO, each at DEBUG only (and not worked out without DEBUG)."""
    from announcer.intake import PLAN_LOG_LIMIT

    many = [frontend(f"fe{i}", f"192.0.2.{100 + i}") for i in range(PLAN_LOG_LIMIT + 1)]

    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10"))
        async with Harness(src) as h:
            await until(lambda: len(h.table.routes) == 1)
            src.set(frontend("web", "192.0.2.10"), frontend("new", "192.0.2.12"))
            await until(lambda: len(h.svc.vips) == 2, timeout=10)
            src.set(frontend("web", "192.0.2.10"), *many)
            await until(lambda: len(h.svc.vips) == 2 + PLAN_LOG_LIMIT, timeout=10)

    caplog.set_level("INFO", logger="announcer")
    run(go())
    messages = [r.getMessage() for r in caplog.records if r.name == "announcer.discovery"]
    assert "VIP 192.0.2.10 discovered (frontends web)" in messages  # the first discovery
    assert "VIP 192.0.2.12 discovered (frontends new)" in messages
    assert f"{PLAN_LOG_LIMIT + 1} VIPs discovered, 1 gone" in messages
    assert not any("192.0.2.100 " in m or "192.0.2.12 is gone" in m for m in messages)


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
            assert h.svc.sync.resyncs >= 1

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
            (vip,) = (await h.svc.report(fresh=False))["vips"]
            targets = [c["target"] for c in vip["checks"]]
            assert targets == ["http://192.0.2.10:80/a", "tcp 192.0.2.10:443"]

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
