"""The mass-withdrawal guard in the service (guard.py): every check failing at once
withdraws nothing; the routes stay, made worse, and come back as they were."""

from __future__ import annotations

import logging

import pytest

from announcer.planner import GRACEFUL_SHUTDOWN
from tests.support.fakes import FakeSource, Harness, frontend, run, until

VIPS = ("192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13")


def test_every_check_failing_at_once_keeps_every_route_made_worse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    async def go() -> None:
        # (fall - 1) x fast_interval at least one interval: every VIP has failed once
        # before the first reaches fall (guard.py); the defaults are 2 x 0.5 s and 1 s.
        health = {"fall": 3, "interval": 0.1, "fast_interval": 0.05}
        guard = {"release_after": 0.5}
        src = FakeSource(frontend("web", *VIPS))
        async with Harness(src, health=health, guard=guard) as h:
            await until(lambda: len(h.table.routes) == 4 and h.svc.synced.is_set())
            h.prober.bad = set(VIPS)  # a bad HAProxy reload: every monitor-uri says 503
            await until(lambda: all(str(v.state) == "DOWN" for v in h.svc.vips.values()))
            await until(
                lambda: all(GRACEFUL_SHUTDOWN in r.communities for r in h.table.routes.values())
            )
            assert len(h.table.routes) == 4 and not h.table.withdrawn
            assert all(r.as_path_prepend == 3 for r in h.table.routes.values())
            report = await h.svc.report(fresh=False)
            assert report["guard"]["engaged"] and report["guard"]["guarded"] == list(VIPS)
            assert all(v["guarded"] for v in report["vips"])
            h.prober.bad = set()
            await until(lambda: all(not r.communities for r in h.table.routes.values()))
            await until(lambda: h.svc.core.truth.guard is None)  # calm for release_after
            assert not h.table.withdrawn and len(h.table.routes) == 4

    run(go())
    engaged = [r for r in caplog.records if "guard engaged" in r.getMessage()]
    assert len(engaged) == 1 and engaged[0].levelno == logging.ERROR
    assert "guard released" in caplog.text


def test_with_the_guard_off_they_are_withdrawn() -> None:
    async def go() -> None:
        src = FakeSource(frontend("web", *VIPS))
        async with Harness(src, guard={"enabled": False}) as h:
            await until(lambda: len(h.table.routes) == 4)
            h.prober.bad = set(VIPS)
            await until(lambda: not h.table.routes)

    run(go())
