"""`announcer drain --all --wait` and `undrain --all --wait` in the lab (issue 13, item 6).

Automation blocks on these (an HAProxy upgrade, a reboot), so the question is what the
*routers* have when the command returns: lb1's paths gone from r1 and r2 (or, with
bgp.drained keeping them, carrying 65535:0 and bgp.drained's MED), and after the
undrain back at both without 65535:0. The command judges by what gobgpd holds; the
routers follow within one BGP UPDATE, which is measured here and bounded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.lab import Lab, wait_until
from tests.integration.stack import ANNOUNCED_VIPS, LbStack
from tests.support.labroutes import GS, NH4, NH6, ROUTERS, WELL_KNOWN, wait_all, wait_routers

pytestmark = pytest.mark.lab

DELAY = 2.0  # lb1's drain.delay here: long enough to see 65535:0 at the routers first
LAG = 1.0  # longest the routers may trail gobgpd once the command returned


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(enable_peers=False, wait_established=False) as lab:
        s1 = LbStack(lab, "lb1")
        s1.write_announcer_cfg(drain={"delay": DELAY})
        stacks = {"lb1": s1.start(), "lb2": LbStack(lab, "lb2").start()}
        lab.stacks = stacks  # type: ignore[attr-defined]
        try:
            wait_all(lab)
        except Exception:
            for s in stacks.values():
                print(s.announcer_log())
            raise
        yield lab


def lb1(lab: Lab) -> LbStack:
    return lab.stacks["lb1"]  # type: ignore[attr-defined,no-any-return]


def lb1_paths(lab: Lab, router: str) -> dict[str, dict[str, Any]]:
    """lb1's paths in `router`'s BGP table (multipath or not): VIP -> its communities
    and MED. A VIP lb1 does not announce is absent."""
    out: dict[str, dict[str, Any]] = {}
    for vip in ANNOUNCED_VIPS:
        v6 = ":" in vip
        nexthop = NH6["lb1"] if v6 else NH4["lb1"]
        family = "ipv6 unicast" if v6 else "ipv4 unicast"
        data = lab.vtysh_json(router, f"show bgp {family} {vip} json") or {}
        for p in data.get("paths", []):
            hops = {h.get("ip") for h in p.get("nexthops", [])}
            if nexthop in hops or p.get("peer", {}).get("peerId") == nexthop:
                names = p.get("community", {}).get("string", "").split()
                out[vip] = {
                    "communities": {WELL_KNOWN.get(c, c) for c in names},
                    "med": p.get("metric"),  # FRR calls the MED "metric"
                }
    return out


def everywhere(lab: Lab, ok: Any) -> bool:
    """`ok(paths)` holds for lb1's paths at both routers."""
    return all(ok(lb1_paths(lab, r)) for r in ROUTERS)


def announcer(lab: Lab, *args: str, timeout: float = 60) -> tuple[int, str, str, float]:
    """`announcer ARGS --socket ...` in lb1's namespace, as automation runs it; returns
    (exit status, stdout, stderr, seconds it took)."""
    argv = [sys.executable, "-m", "announcer", *args, "--socket", str(lb1(lab).control_socket)]
    t0 = time.monotonic()
    cp: subprocess.CompletedProcess[str] = lab.exec("lb1", argv, check=False, timeout=timeout)
    took = time.monotonic() - t0
    print(f"$ announcer {' '.join(args)}  -> exit {cp.returncode} after {took:.2f}s")
    print(cp.stdout + cp.stderr)
    return cp.returncode, cp.stdout, cp.stderr, took


def lag(lab: Lab, ok: Any, what: str) -> str:
    """How far the routers trail the command: they must agree with `ok` within LAG."""
    t0 = time.monotonic()
    sweeps = 0

    def sweep() -> dict[str, dict[str, dict[str, Any]]]:
        nonlocal sweeps
        sweeps += 1
        return {r: lb1_paths(lab, r) for r in ROUTERS}  # the last one is in the error

    wait_until(
        sweep,
        timeout=LAG,
        interval=0.02,
        check=lambda seen: all(ok(p) for p in seen.values()),
        what=what,
    )
    if sweeps == 1:
        return f"the routers agreed at once (one look at both took {time.monotonic() - t0:.2f}s)"
    return f"the routers agreed {time.monotonic() - t0:.2f}s later ({sweeps} looks)"


def undrain_all(lab: Lab) -> None:
    rc, out, _, took = announcer(lab, "undrain", "--all", "--wait")
    assert rc == 0 and "undrained in gobgpd" in out
    back = lag(lab, lambda p: set(p) == set(ANNOUNCED_VIPS), "lb1's paths back at r1 and r2")
    assert everywhere(lab, lambda p: all(GS not in x["communities"] for x in p.values()))
    print(f"undrain --all --wait returned after {took:.2f}s; {back}")
    wait_all(lab, timeout=5)  # both LBs in the RIB and the kernel again


def test_drain_all_wait_returns_once_lb1_is_gone_at_both_routers(lab: Lab) -> None:
    result: list[tuple[int, str, str, float]] = []
    cli = threading.Thread(target=lambda: result.append(announcer(lab, "drain", "--all", "--wait")))
    cli.start()
    try:
        # 65535:0 first, at both routers, while the command still waits.
        wait_until(
            lambda: everywhere(
                lab, lambda p: len(p) == 4 and all(GS in x["communities"] for x in p.values())
            ),
            timeout=DELAY,
            interval=0.05,
            what="65535:0 on every lb1 path at r1 and r2",
        )
        assert cli.is_alive(), "returned before the drain delay was over"
    finally:
        cli.join(timeout=60)
    rc, out, err, took = result[0]
    assert rc == 0, err
    assert took >= DELAY
    assert "drain: done after" in out and "4 VIPs drained in gobgpd (4 withdrawn)" in out
    behind = lag(lab, lambda p: not p, "lb1's paths gone from r1 and r2")
    print(f"drain --all --wait returned after {took:.2f}s; {behind}")
    wait_all(lab, ("lb2",), timeout=2)  # lb2 carries every VIP meanwhile
    undrain_all(lab)


def test_drain_all_wait_with_routes_kept_by_bgp_drained(lab: Lab) -> None:
    """bgp.drained {announce: true}: done when the routers have lb1's paths with
    bgp.drained's MED and 65535:0 (the draining route has 65535:0 but not the MED)."""
    s1 = lb1(lab)
    original = s1.run_cfg.read_text()
    cfg = yaml.safe_load(original)
    cfg.setdefault("bgp", {})["drained"] = {"announce": True, "med": 500}

    def reload(text: str) -> None:
        n = s1.announcer_log().count("configuration reloaded")
        s1.run_cfg.write_text(text)
        lab.signal("lb1-announcer", signal.SIGHUP)
        wait_until(
            lambda: s1.announcer_log().count("configuration reloaded") > n,
            timeout=10,
            what="lb1's announcer reloaded",
        )

    reload(yaml.safe_dump(cfg))
    try:
        rc, out, err, took = announcer(lab, "drain", "--all", "--wait")
        assert rc == 0, err
        assert took >= DELAY and "4 kept with bgp.drained's attributes and 65535:0" in out

        def kept(p: dict[str, dict[str, Any]]) -> bool:
            return len(p) == 4 and all(
                GS in x["communities"] and x["med"] == 500 for x in p.values()
            )

        behind = lag(lab, kept, "lb1's paths kept with 65535:0 and MED 500 at r1 and r2")
        print(f"drain --all --wait (kept) returned after {took:.2f}s; {behind}")
        wait_all(lab, ("lb2",), timeout=2)  # LOCAL_PREF 0: out of the multipath set
        undrain_all(lab)
    finally:
        reload(original)
    wait_all(lab)


def test_drain_wait_timeout_exits_75_and_the_drain_goes_on(lab: Lab) -> None:
    rc, _, err, took = announcer(lab, "drain", "--all", "--wait", "--timeout", "0.5")
    assert rc == 75
    assert 0.5 <= took < 0.5 + 5  # the interpreter's start-up is most of the rest
    assert "timed out after 0.5s: 0 of 4 VIPs drained in gobgpd; 4 not yet:" in err
    assert "192.0.2.10: draining: 65535:0" in err
    assert "the drain itself stays in effect" in err
    # The drain goes on: 65535:0 now, withdrawn after the delay, without any wait.
    wait_until(lambda: everywhere(lab, lambda p: not p), timeout=DELAY + 5, what="lb1 withdrawn")
    # Argument errors are refused before anything is sent.
    rc, _, err, _ = announcer(lab, "undrain", "--all", "--timeout", "5")
    assert rc == 64 and "--timeout needs --wait" in err
    rc, _, err, _ = announcer(lab, "undrain", "--all", "--wait", "--timeout", "nan")
    assert rc == 64 and "argument --timeout" in err
    assert everywhere(lab, lambda p: not p)  # still drained
    undrain_all(lab)


def test_undrain_wait_does_not_block_on_a_down_vip(lab: Lab) -> None:
    s1 = lb1(lab)
    s1.stop_backend("api")  # fe_api's monitor-uri answers 503: 192.0.2.11 DOWN on lb1
    try:
        wait_routers(lab, "192.0.2.11/32", {NH4["lb2"]}, timeout=15)
        rc, out, err, _ = announcer(lab, "drain", "--all", "--wait")
        assert rc == 0, err
        assert "4 VIPs drained in gobgpd (4 withdrawn)" in out
        rc, out, err, _ = announcer(lab, "undrain", "--all", "--wait")
        assert rc == 0, err
        assert "(3 announced, 1 DOWN)" in out
        assert "192.0.2.11: DOWN (its checks fail): announced once they pass" in out
        lag(lab, lambda p: set(p) == set(ANNOUNCED_VIPS) - {"192.0.2.11/32"}, "3 back")
    finally:
        s1.start_backend("api")
    wait_all(lab)
