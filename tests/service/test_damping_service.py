"""Flap damping in the service (damping.py, truth.py): a flapping VIP stops moving its
route after a few cycles, says so, and comes back once the penalty has decayed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support.fakes import FakeSource, Harness, frontend, run, until

VIP = "192.0.2.10"


def test_a_flapping_vip_is_held_then_announced_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def go() -> None:
        # Seconds instead of minutes: half-life 1 s, held at most 3 s.
        damping = {"half_life": 1, "max_hold": 3}
        async with Harness(FakeSource(frontend("web", VIP)), damping=damping) as h:
            await until(lambda: h.prefixes() == {f"{VIP}/32"} and h.svc.synced.is_set())
            for _ in range(6):  # six cycles of about 0.3 s
                h.prober.bad = {VIP}
                await until(lambda: str(h.svc.vips[next(iter(h.svc.vips))].state) == "DOWN")
                h.prober.bad = set()
                await until(lambda: str(h.svc.vips[next(iter(h.svc.vips))].state) == "UP")
            report = await h.svc.report(fresh=False)
            assert report["vips"][0]["state"] == "UP" and report["vips"][0]["damped_until"]
            assert h.prefixes() == set()  # healthy, but held withdrawn
            changes = len(h.table.applies)
            await until(lambda: h.prefixes() == {f"{VIP}/32"}, timeout=5.0)  # penalty decayed
            assert len(h.table.applies) == changes + 1
            await asyncio.sleep(0)

    run(go())
    text = caplog.text
    assert text.count(f"VIP {VIP} flaps: held withdrawn") == 1
    assert f"VIP {VIP}: damping over" in text
    # The third or fourth withdrawal damps it (the penalty decays in 1 s here, so how
    # far apart the cycles come matters): the cycles after that moved nothing.
    assert 3 <= text.count(f"withdraw {VIP}/32") <= 4
