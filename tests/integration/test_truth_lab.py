"""Issue 13 in the lab: routes that tell the truth (real FRR, HAProxy, gobgpd, announcer).

* A VIP that leaves lb1's `lo` while `ip_nonlocal_bind=1` keeps HAProxy bound to it: in
  the field its probe passes through the routers (answered by another LB) and the old
  code kept announcing a VIP lb1 blackholes (in this lab lb1 has no route to the VIPs, so
  the probe fails instead: the check is judged by how fast the route leaves, well under
  fall x interval). The local-VIP check withdraws it from lb1 at once, the client is
  served by lb2, and it is announced again as soon as the address is back.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.integration.lab import Lab, wait_until
from tests.support import labfaults as tf
from tests.support.labroutes import NH4, NH6, client_load, nexthops, wait_routers

pytestmark = pytest.mark.lab

lab = tf.lab  # the module-scoped fault lab (both LBs announce every VIP)
# tests/integration/announcer/lbN.yaml: interval 0.5 s, fall 3.
INTERVAL, FALL = 0.5, 3
BOUND = FALL * INTERVAL + 1.0  # the bound for a VIP that stops being local


@pytest.mark.parametrize(
    ("vip", "sysctl"),
    [
        ("192.0.2.11/32", "net.ipv4.ip_nonlocal_bind"),
        ("2001:db8:0:1::10/128", "net.ipv6.ip_nonlocal_bind"),
    ],
    ids=["v4", "v6"],
)
def test_a_vip_missing_from_lo_leaves_the_routers_and_the_client_is_served(
    lab: Lab, vip: str, sysctl: str
) -> None:
    s = tf.stack(lab)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    ns = lab.ns("lb1")
    ns.sysctl(sysctl, "1")  # HAProxy may bind (and stay bound to) an address lb1 lacks
    address = vip.split("/")[0]
    nexthop = NH6 if ":" in address else NH4
    url = f"http://{address}/" if ":" not in address else f"http://[{address}]/"
    log_before = len(s.announcer_log())
    try:
        with client_load(lab, url) as served:
            time.sleep(1.0)
            removed = time.monotonic()
            lab.del_vip("lb1", vip)  # the operator forgot it on this host
            # Both routers' RIB and kernel FIB: only lb2 left.
            withdrawn_at = wait_routers(lab, vip, {nexthop["lb2"]}, timeout=10)
            gone = withdrawn_at - removed
            time.sleep(3.0)  # the client goes on, now only to lb2
            status = {v["address"]: v for v in s.control("status")["vips"]}
            assert status[address]["local"] is False and status[address]["wanted"] is False
            lab.add_vip("lb1", vip)
            back_from = time.monotonic()
            back = wait_routers(lab, vip, set(nexthop.values()), timeout=10) - back_from
            time.sleep(1.0)
    finally:
        if not _has_addr(lab, vip):
            lab.add_vip("lb1", vip)
        ns.sysctl(sysctl, "0")
    after = [r for r in served if withdrawn_at < r[0] < back_from]
    assert after and all(ok and answer.startswith("lb2") for _, ok, answer in after), after[:5]
    blackholed = [r for r in served if removed < r[0] < withdrawn_at and not r[1]]
    log = s.announcer_log()[log_before:]
    assert log.count(f"VIP {address} is not local") == 1, log[-3000:]
    assert f"VIP {address} is local again" in log
    print(
        f"{vip}: gone from both routers {gone:.2f}s after `ip addr del` (bound {BOUND}s), "
        f"back {back:.2f}s after `ip addr add`; client requests {len(served)}, "
        f"{len(after)} after the withdrawal all served by lb2, "
        f"{len(blackholed)} failed in the {gone:.2f}s before it"
    )
    assert gone < BOUND


def _has_addr(lab: Lab, vip: str) -> bool:
    cp = lab.ns("lb1").ip("addr", "show", "dev", "lo", check=False)
    return vip in cp.stdout


# ------------------------------------------------------------ the mass-withdrawal guard

MONITORS = ("monitor fail if { nbsrv(be_web) lt 1 }", "monitor fail if { nbsrv(be_api) lt 1 }")
BAD_MONITOR = "monitor fail if TRUE"  # a bad reload: every monitor-uri answers 503


@contextmanager
def bad_haproxy_reload(lab: Lab, lbs: tuple[str, ...]) -> Iterator[None]:
    """Every frontend's monitor-uri fails on `lbs` while HAProxy runs and serves."""
    stacks = [tf.stack(lab, lb) for lb in lbs]
    originals = [s.cfg.read_text() for s in stacks]
    try:
        for s in stacks:
            for m in MONITORS:
                s.edit_cfg(m, BAD_MONITOR)
            s.reload_haproxy()
        yield
    finally:
        for s, text in zip(stacks, originals, strict=True):
            s.cfg.write_text(text)
            s.reload_haproxy()


def _reload_announcer(lab: Lab, lb: str, fall: int = 3) -> None:
    """lbN.yaml as the fault lab writes it, with `fall` (3 there), then SIGHUP."""
    s = tf.stack(lab, lb)
    before = s.announcer_log().count("configuration reloaded")
    s.write_announcer_cfg(health={"path": "/healthz", "fall": fall})
    lab.signal(f"{lb}-announcer", signal.SIGHUP)
    wait_until(
        lambda: s.announcer_log().count("configuration reloaded") > before,
        timeout=10,
        interval=0.1,
        what=f"{lb} reloaded",
    )


@pytest.fixture
def guard_timing(lab: Lab) -> Iterator[None]:
    """fall 4: (fall - 1) x fast_interval (0.6 s) covers the lab's 0.5 s interval, so
    every VIP has failed once before the first reaches fall (guard.py); the defaults
    (fall 3, 0.5 s, 1 s) do the same."""
    for lb in tf.LBS:
        _reload_announcer(lab, lb, fall=4)
    yield
    for lb in tf.LBS:
        _reload_announcer(lab, lb)


def _lb1_state(lab: Lab) -> dict[str, set[str]]:
    """Per VIP, the LBs the routers' FIBs send it to (r1 and r2 must agree)."""
    out: dict[str, set[str]] = {}
    for vip in tf.ANNOUNCED_VIPS:
        by_router = nexthops(lab, vip)
        nh = NH6 if ":" in vip else NH4
        lbs = [{lb for lb, a in nh.items() if a in kern} for _, kern in by_router.values()]
        out[vip] = lbs[0] if all(x == lbs[0] for x in lbs) else set()
    return out


def test_every_check_failing_on_lb1_keeps_its_routes_de_preferred(
    lab: Lab, guard_timing: None
) -> None:
    s = tf.stack(lab)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    log_before = len(s.announcer_log())
    # Sampled from before the bad reload until lb1 is healthy again: no sample may lack
    # a route of lb1's (it is made worse, never withdrawn).
    with tf.Sampler(lab) as sampler:
        with bad_haproxy_reload(lab, ("lb1",)):
            wait_until(
                lambda: _lb1_state(lab),
                timeout=15,
                interval=0.1,
                check=lambda got: all(v == {"lb2"} for v in got.values()),
                what="every VIP only via lb2 in both routers' FIBs",
            )
            time.sleep(2.0)
            status = s.control("status")
            assert status["guard"]["engaged"] and len(status["guard"]["guarded"]) == 4
        wait_until(
            lambda: _lb1_state(lab),
            timeout=15,
            interval=0.1,
            check=lambda got: all(v == {"lb1", "lb2"} for v in got.values()),
            what="every VIP via lb1 and lb2 again",
        )
    assert_all_there(sampler)
    log = s.announcer_log()[log_before:]
    assert log.count("mass-withdrawal guard engaged") == 1 and "withdraw 192.0.2" not in log
    wait_until(  # calm for guard.release_after (10 s)
        lambda: "guard released" in s.announcer_log()[log_before:],
        timeout=20,
        interval=0.2,
        what="the guard released",
    )


def test_the_same_fault_on_every_lb_keeps_every_vip_reachable(lab: Lab, guard_timing: None) -> None:
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    with bad_haproxy_reload(lab, tf.LBS), client_load(lab, "http://192.0.2.10/") as served:
        with tf.Sampler(lab) as sampler:
            wait_until(
                lambda: all(
                    tf.stack(lab, lb).control("status")["guard"]["engaged"] for lb in tf.LBS
                ),
                timeout=15,
                interval=0.2,
                what="the guard engaged on lb1 and lb2",
            )
            time.sleep(3.0)
        # Equally worse on both: the routers keep spreading over both.
        assert all(v == {"lb1", "lb2"} for v in _lb1_state(lab).values()), _lb1_state(lab)
    assert_all_there(sampler)
    failed = [r for r in served if not r[1]]
    assert served and not failed, failed[:5]
    print(f"every check failing on both LBs: {len(served)} client requests, none failed")


def assert_all_there(sampler: tf.Sampler) -> None:
    """Every sample: every VIP at both routers from both LBs (nothing withdrawn)."""
    assert not sampler.errors, sampler.errors[:3]
    assert len(sampler.samples) >= 10
    for t, paths in sampler.samples:
        for lb in tf.LBS:
            assert tf.lb_prefixes(paths, lb) == tf.want(), (t, lb)


# ------------------------------------------------------------------- flap damping

DAMP_VIP = "192.0.2.15"
FLAP_PERIOD = 3  # seconds down, then as many up: one cycle every 6 s
FLAP_FOR = 120.0  # the two-minute flap


def damp_frontend() -> str:
    """A frontend that fails its check for FLAP_PERIOD seconds, then passes as long."""
    return (
        f"\nfrontend fe_damp\n    bind {DAMP_VIP}:80\n"
        "    http-request return status 503 content-type text/plain string down"
        f" if {{ date,mod({2 * FLAP_PERIOD}) lt {FLAP_PERIOD} }}\n"
        "    http-request return status 200 content-type text/plain string up\n"
    )


def test_a_backend_flapping_for_two_minutes_moves_the_route_a_few_times(lab: Lab) -> None:
    s = tf.stack(lab)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    wait_until(  # a guard of an earlier test lets go after guard.release_after
        lambda: not s.control("status")["guard"]["engaged"],
        timeout=30,
        interval=0.5,
        what="no guard engaged on lb1",
    )
    prefix = f"{DAMP_VIP}/32"
    anchor = "\nfrontend fe_local"
    lab.add_vip("lb1", prefix)
    s.edit_cfg(anchor, damp_frontend() + anchor)
    s.reload_haproxy()
    log_before = len(s.announcer_log())
    try:
        wait_until(
            lambda: tf.lb_prefixes(tf.bgp_paths(lab), "lb1")["r1"],
            timeout=30,
            interval=0.2,
            check=lambda got: prefix in got,
            what=f"{prefix} announced by lb1 (in an up half of its cycle)",
        )
        with tf.Sampler(lab) as sampler:
            time.sleep(FLAP_FOR)
        vip = next(v for v in s.control("status")["vips"] if v["address"] == DAMP_VIP)
    finally:
        s.edit_cfg(damp_frontend(), "")
        s.reload_haproxy()
        wait_until(
            lambda: tf.lb_prefixes(tf.bgp_paths(lab), "lb1"),
            timeout=30,
            interval=0.2,
            check=lambda got: got == tf.want(),
            what="lb1 back to its VIPs",
        )
        lab.del_vip("lb1", prefix)
    log = s.announcer_log()[log_before:]
    flaps = log.count(f"VIP {DAMP_VIP}: FALLING -> DOWN")
    changes = sampler.changes("lb1", prefix) // len(tf.ROUTERS)  # per router
    print(
        f"{FLAP_FOR:.0f}s of a backend failing {FLAP_PERIOD}s in every {2 * FLAP_PERIOD}s: "
        f"{flaps} withdrawals by health, {changes} route changes at each router "
        f"(without damping: {2 * flaps}); damped until {vip['damped_until']}"
    )
    assert flaps >= 15  # it really flapped all along
    assert log.count(f"VIP {DAMP_VIP} flaps: held withdrawn") == 1
    assert vip["damped_until"] is not None and vip["wanted"] is False
    assert changes <= 7  # 3 withdrawals and their announcements, +1 if sampled mid-way
