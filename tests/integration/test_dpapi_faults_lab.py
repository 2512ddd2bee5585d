"""Hostile DataPlaneAPI answers in the lab: judged by what the routers see.

lb1's DataPlaneAPI emulator drips its answer one byte a second, goes half-open (reads
the request, never answers), sends a 200 MB body, or an endless chunked one. While that
lasts the routers' BGP tables are sampled: not one route of lb1 or lb2 moves, announcer
logs the fault (a total deadline or the byte cap, within its DataPlaneAPI timeout of
2 s), and once the emulator behaves again announcer says so.

The lab, its helpers and the router sampler are test_faults.py's, from
tests/support/labfaults.py (same fixture shape: two routers, two LBs with HAProxy,
the emulator, gobgpd and announcer).
"""

from __future__ import annotations

import time

import pytest

from tests.integration.lab import Lab, wait_until
from tests.support import labfaults as tf

pytestmark = pytest.mark.lab

lab = tf.lab  # the module-scoped lab fixture, built afresh for this module

# fault -> (emulator fault mode, its parameters, what announcer logs)
FAULTS: dict[str, tuple[str, dict[str, object], str]] = {
    "drip": ("drip", {"delay": 1.0}, f"timed out after {tf.DPAPI_TIMEOUT:g}s"),
    "halfopen": ("halfopen", {}, f"timed out after {tf.DPAPI_TIMEOUT:g}s"),
    "huge": ("huge", {"size": 200_000_000}, "Content-Length 200000000"),
    "chunked-endless": ("chunked", {}, "max_response_bytes is"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_hostile_dataplaneapi_moves_no_route(lab: Lab, fault: str) -> None:
    s = tf.stack(lab)
    mode, extra, message = FAULTS[fault]
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    log_before = len(s.announcer_log())
    started = time.monotonic()
    tf.emulator_fault(lab, mode, **extra)
    try:
        with tf.Sampler(lab) as sampler:
            wait_until(
                lambda: message in s.announcer_log()[log_before:],
                timeout=tf.DPAPI_TIMEOUT + 5,
                interval=0.1,
                what=f"announcer logs {message!r}",
            )
            logged = time.monotonic() - started
            time.sleep(1.0)  # another failed poll or two, sampled
    finally:
        tf.emulator_fault(lab, "none")
    print(f"{fault}: announcer logged it {logged:.2f}s after the fault began")
    assert not sampler.errors, sampler.errors[:3]
    assert len(sampler.samples) >= 5, len(sampler.samples)
    for t, paths in sampler.samples:
        assert tf.lb_prefixes(paths, "lb1") == tf.want(), (fault, t)
        assert tf.lb_prefixes(paths, "lb2") == tf.want(), (fault, t)
    log = s.announcer_log()[log_before:]
    line = next(ln for ln in log.splitlines() if message in ln)
    assert "DataPlaneAPI" in line and "keeping the last known" in line, line
    wait_until(
        lambda: "DataPlaneAPI answers again" in s.announcer_log()[log_before:],
        timeout=40,
        interval=0.2,
        what="announcer recovers",
    )
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
