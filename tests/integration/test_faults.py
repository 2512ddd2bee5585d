"""Fault suite: what announcer survives, judged by what the routers see.

The lab of test_announcer_lab.py (two FRR routers, two LBs with HAProxy, the
DataPlaneAPI emulator, gobgpd and announcer), with faults injected on lb1:

* DataPlaneAPI down, answering 500, garbage, truncated JSON, too slowly, or
  refusing our credentials: not one healthy route leaves a router while it lasts
  (the routers' BGP tables are sampled throughout), announcer logs a line naming
  the problem, and once the API is back a configuration change made during the
  fault is picked up.
* HAProxy killed with SIGKILL: every VIP of lb1 leaves both routers within
  fall x interval + 1 s.
* A check that alternates success and failure: the route never moves (rise and
  fall are both at least 2), whether the VIP was up or down when the flapping began.
* gobgpd killed with SIGKILL, again and again: lb1 ends with exactly its set of
  healthy VIPs in gobgpd and at both routers.

Timing bounds here are generous: the machine may be shared. The announcer-killed
case belongs to the fate-sharing work (keeper.py) and its own tests.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.integration.lab import Lab, LabError, wait_until
from tests.integration.stack import ANNOUNCED_VIPS
from tests.support.labfaults import (
    DPAPI_TIMEOUT,
    ROUTERS,
    Sampler,
    bgp_paths,
    emulator_fault,
    lab,
    lb_prefixes,
    stack,
    wait_lb1,
    want,
)

pytestmark = pytest.mark.lab

__all__ = ["lab"]  # the fixture, from tests/support/labfaults.py (one lab for this module)

# tests/integration/announcer/lbN.yaml: interval 0.5 s, fast 0.2 s, rise 2, fall 3,
# DataPlaneAPI timeout 2 s (DPAPI_TIMEOUT, in tests/support/labfaults.py).
INTERVAL, FALL = 0.5, 3
NEW_VIP = "192.0.2.13"
FLAP_VIP = "192.0.2.14"

# Added to lb1's haproxy.cfg during the DataPlaneAPI faults: a change the API
# cannot report while it fails, and must report once it is back.
NEW_FRONTEND = f"""
frontend fe_fault_new
    bind {NEW_VIP}:80
    monitor-uri /healthz
    monitor fail if {{ nbsrv(be_web) lt 1 }}
    default_backend be_web
"""

# A frontend whose health answer the test controls (no monitor-uri: announcer's
# health.path is used). `steady` always answers 200, `failing` 503, and
# `alternating` 200 and 503 in turn, one per request, i.e. per check.
FLAP_RULES = {
    "steady": ["http-request return status 200 content-type text/plain string up"],
    "failing": ["http-request return status 503 content-type text/plain string down"],
    "alternating": [
        "http-request set-var(proc.flap) var(proc.flap,0),add(1)",
        "http-request return status 503 content-type text/plain string down"
        " if { var(proc.flap),and(1) -m int 0 }",
        "http-request return status 200 content-type text/plain string up",
    ],
}


def flap_frontend(mode: str) -> str:
    rules = "\n".join(f"    {r}" for r in FLAP_RULES[mode])
    return f"\nfrontend fe_flap\n    bind {FLAP_VIP}:80\n{rules}\n"


def http_status(lab: Lab, vip: str, path: str = "/healthz") -> str:
    """What lb1's HAProxy answers for `vip` right now (000: nothing listens)."""
    cp = lab.exec(
        "lb1",
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
         f"http://{vip}{path}"],
        check=False,
    )  # fmt: skip
    return cp.stdout.strip()


def reload_haproxy(lab: Lab) -> None:
    """Reload lb1's HAProxy and wait for the new worker. A SIGUSR2 that arrives while
    the master is still re-executing itself for the previous one can be lost, so it
    is sent again if no new worker shows up."""
    s = stack(lab)
    master = lab.proc(s.name("haproxy")).pid
    old = set(children(master))
    for _ in range(3):
        s.reload_haproxy()
        try:
            wait_until(
                lambda: set(children(master)) - old,
                timeout=3,
                interval=0.05,
                what="a new HAProxy worker",
            )
            return
        except LabError:
            continue
    raise LabError("HAProxy did not reload")


def reload_with(lab: Lab, old: str, new: str, *, vip: str, serves: bool) -> None:
    """Edit lb1's haproxy.cfg, reload HAProxy, wait until it does (or no longer does)
    answer on `vip`."""
    stack(lab).edit_cfg(old, new)
    reload_haproxy(lab)
    wait_until(
        lambda: (http_status(lab, vip) != "000") == serves,
        timeout=5,
        interval=0.1,
        what=f"HAProxy {'serving' if serves else 'no longer serving'} {vip}",
    )


# ------------------------------------------------------------------ DataPlaneAPI

# mode -> (how to inject it, what the log line says)
DPAPI_FAULTS = {
    "500": ("500", "HTTP error: emulated internal error"),
    "garbage": ("garbage", "response is not JSON"),
    "truncated": ("truncated", "bad response"),
    "slow": ("slow", f"timed out after {DPAPI_TIMEOUT:g}s"),
    "auth": ("auth", "user 'admin' was refused"),
    "down": ("down", "connection failed"),
}


@pytest.mark.parametrize("fault", list(DPAPI_FAULTS))
def test_dataplaneapi_fault_withdraws_nothing_and_recovery_picks_up_changes(
    lab: Lab, fault: str
) -> None:
    s = stack(lab)
    mode, message = DPAPI_FAULTS[fault]
    # Alternate: odd faults add the new frontend while the API fails, even ones remove it.
    present = NEW_FRONTEND.strip() in s.cfg.read_text()
    before = (*ANNOUNCED_VIPS, f"{NEW_VIP}/32") if present else ANNOUNCED_VIPS
    after = ANNOUNCED_VIPS if present else (*ANNOUNCED_VIPS, f"{NEW_VIP}/32")
    wait_lb1(lab, before)
    log_before = len(s.announcer_log())
    if not present:
        lab.add_vip("lb1", f"{NEW_VIP}/32")

    if mode == "down":
        lab.stop(s.name("dpapi"))
    elif mode == "slow":
        emulator_fault(lab, "slow", delay=DPAPI_TIMEOUT + 1.5)
    else:
        emulator_fault(lab, mode)
    with Sampler(lab) as sampler:
        time.sleep(0.6)  # at least one failed poll before the change
        if present:
            # Only the file changes, HAProxy keeps serving the VIP (no reload): its
            # check stays healthy, so only discovery can tell that it is gone.
            s.edit_cfg(NEW_FRONTEND, "")
        else:
            reload_with(
                lab,
                "\nfrontend fe_local",
                NEW_FRONTEND + "\nfrontend fe_local",
                vip=NEW_VIP,
                serves=True,
            )
        wait_until(
            lambda: message in s.announcer_log()[log_before:],
            timeout=DPAPI_TIMEOUT + 10,
            interval=0.2,
            what=f"announcer logs {message!r}",
        )
        time.sleep(2.0)  # a few more failed polls, sampled
    assert not sampler.errors, sampler.errors[:3]
    assert len(sampler.samples) >= 10, len(sampler.samples)
    for t, paths in sampler.samples:
        # Nothing moved at all: no healthy route withdrawn, and the change HAProxy
        # made meanwhile is not announced either (nobody could know about it).
        assert lb_prefixes(paths, "lb1") == want(before), (fault, t)
        assert lb_prefixes(paths, "lb2") == want(), (fault, t)
    log = s.announcer_log()[log_before:]
    line = next(ln for ln in log.splitlines() if message in ln)
    assert "DataPlaneAPI" in line and "keeping the last known" in line, line
    assert (" ERROR " if fault == "auth" else " WARNING ") in line, line

    if mode == "down":
        s.start_emulator()
    else:
        emulator_fault(lab, "none")
    wait_lb1(lab, after, timeout=30)  # the change made during the fault arrives
    assert "DataPlaneAPI answers again" in s.announcer_log()[log_before:]
    if present:
        assert f"VIP {NEW_VIP} is gone from HAProxy's configuration" in s.announcer_log()
        reload_with(lab, "", "", vip=NEW_VIP, serves=False)
        lab.del_vip("lb1", f"{NEW_VIP}/32")
    else:
        assert f"VIP {NEW_VIP} discovered (frontends fe_fault_new)" in s.announcer_log()


# ------------------------------------------------------------------ flapping


def switch(lab: Lab, old: str, new: str) -> None:
    """Change how the flapping frontend answers (a reload: the new worker's
    `alternating` counter starts afresh)."""
    stack(lab).edit_cfg(flap_frontend(old), flap_frontend(new))
    reload_haproxy(lab)


def test_alternating_check_never_moves_the_route(lab: Lab) -> None:
    s = stack(lab)
    lab.add_vip("lb1", f"{FLAP_VIP}/32")
    anchor = "\nfrontend fe_local"
    reload_with(lab, anchor, flap_frontend("steady") + anchor, vip=FLAP_VIP, serves=True)
    flap = f"{FLAP_VIP}/32"
    wait_lb1(lab, (*ANNOUNCED_VIPS, flap))
    try:
        # UP, then alternating: each failure is one of `fall` (3), each success
        # ends the streak, so the route must stay.
        log_at = len(s.announcer_log())
        with Sampler(lab) as up_phase:
            switch(lab, "steady", "alternating")
            time.sleep(6.0)
        flips = s.announcer_log()[log_at:]
        assert flips.count(f"VIP {FLAP_VIP}: UP -> FALLING") >= 3, flips[-3000:]
        assert flips.count(f"VIP {FLAP_VIP}: FALLING -> UP") >= 3, flips[-3000:]
        assert up_phase.changes("lb1", flap) == 0
        assert all((r, flap, "lb1") in paths for r in ROUTERS for _, paths in up_phase.samples)

        # Down for good (one withdrawal), then alternating again: each success is
        # one of `rise` (2), each failure ends it, so it must stay withdrawn.
        switch(lab, "alternating", "failing")
        wait_lb1(lab, ANNOUNCED_VIPS)
        log_at = len(s.announcer_log())
        with Sampler(lab) as down_phase:
            switch(lab, "failing", "alternating")
            time.sleep(6.0)
        flips = s.announcer_log()[log_at:]
        assert flips.count(f"VIP {FLAP_VIP}: DOWN -> RISING") >= 3, flips[-3000:]
        assert flips.count(f"VIP {FLAP_VIP}: RISING -> DOWN") >= 3, flips[-3000:]
        assert down_phase.changes("lb1", flap) == 0
        assert not any(flap in p for _, paths in down_phase.samples for (_, p, _) in paths)
    finally:
        text = s.cfg.read_text()
        for mode in FLAP_RULES:
            text = text.replace(flap_frontend(mode), "")
        s.cfg.write_text(text)
        reload_with(lab, "", "", vip=FLAP_VIP, serves=False)
        wait_lb1(lab, ANNOUNCED_VIPS)
        lab.del_vip("lb1", f"{FLAP_VIP}/32")


# ------------------------------------------------------------------ HAProxy killed


def reap(lab: Lab, name: str) -> None:
    """Wait for a process we killed and forget it (a zombie is not "alive" to the lab,
    so Lab.stop would not reap it)."""
    popen = lab.proc(name).popen
    if popen is not None:
        popen.wait(timeout=10)
    lab.stop(name)


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(d.name))
    return out


def test_haproxy_killed_takes_every_vip_of_that_lb_away_within_fall_x_interval(
    lab: Lab,
) -> None:
    s = stack(lab)
    wait_lb1(lab, ANNOUNCED_VIPS)
    master = lab.proc(s.name("haproxy")).pid
    workers = children(master)
    started = time.monotonic()
    for pid in (master, *workers):  # the whole HAProxy, as the OOM killer would
        os.kill(pid, signal.SIGKILL)
    reap(lab, s.name("haproxy"))
    gone = wait_until(
        lambda: lb_prefixes(bgp_paths(lab), "lb1"),
        timeout=15,
        interval=0.05,
        check=lambda got: got == {r: set() for r in ROUTERS},
        what="every lb1 VIP gone from both routers",
    )
    took = time.monotonic() - started
    bound = FALL * INTERVAL + 1.0
    print(f"HAProxy killed on lb1: all its VIPs gone from both routers after {took:.2f}s")
    assert gone == {r: set() for r in ROUTERS}
    assert took <= bound, f"{took:.2f}s > fall x interval + 1 s = {bound}s"
    assert lb_prefixes(bgp_paths(lab), "lb2") == want()  # lb2 carries everything
    s.start_haproxy()
    wait_lb1(lab, ANNOUNCED_VIPS, timeout=30)


# ------------------------------------------------------------------ gobgpd killed


def gobgp_rib(lab: Lab, lb: str) -> set[str]:
    out: set[str] = set()
    for family in ("ipv4", "ipv6"):
        rib = lab.gobgp_json(lb, "global", "rib", "-a", family)
        if isinstance(rib, dict):
            out |= set(rib)
    return out


def test_gobgpd_killed_again_and_again_ends_with_the_complete_set(lab: Lab) -> None:
    s = stack(lab)
    wait_lb1(lab, ANNOUNCED_VIPS)
    log_at = len(s.announcer_log())
    rng = random.Random(4)
    argv = lab.proc("lb1-gobgpd").argv
    for _ in range(4):
        lab.signal("lb1-gobgpd", signal.SIGKILL)
        reap(lab, "lb1-gobgpd")
        time.sleep(rng.uniform(0.0, 1.0))
        lab.start("lb1", argv, name="lb1-gobgpd")
        # Kill it again at a random point: before, during or after the re-sync.
        time.sleep(rng.uniform(0.2, 2.5))
    started = time.monotonic()
    wait_lb1(lab, ANNOUNCED_VIPS, timeout=30)
    print(f"after 4 kills of gobgpd: complete set back {time.monotonic() - started:.2f}s later")
    assert gobgp_rib(lab, "lb1") == set(ANNOUNCED_VIPS)
    assert lb_prefixes(bgp_paths(lab), "lb2") == want()
    assert "gobgpd event stream ended" in s.announcer_log()[log_at:]
