"""Production operation, in the lab with real HAProxy, gobgpd and FRR (issue 4).

Here gobgpd's neighbors stay admin-down as gobgp/lbN.toml says (the lab does not
enable them): announcer injects its complete set and only then enables the peers,
and its keeper disables them when announcer dies. Every assertion is on what the
routers see, except status and metrics, which are read the way an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.lab import LBS, Lab, wait_until
from tests.integration.stack import ANNOUNCED_VIPS, PASSWORD, REPO, LbStack, lb_nexthops
from tests.support.labroutes import (
    GS,
    NH4,
    NH6,
    V4_VIPS,
    V6_VIP,
    WELL_KNOWN,
    wait_all,
    wait_routers,
)
from tests.support.supervisor import Supervisor

pytestmark = pytest.mark.lab

DRAIN_DELAY = 1.0  # tests/integration/announcer/lbN.yaml


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(enable_peers=False, wait_established=False) as lab:
        stacks = {lb: LbStack(lab, lb).start() for lb in LBS}
        lab.stacks = stacks  # type: ignore[attr-defined]
        try:
            wait_all(lab)
        except Exception:
            for s in stacks.values():
                print(s.announcer_log())
            raise
        yield lab


def stack(lab: Lab, lb: str) -> LbStack:
    return lab.stacks[lb]  # type: ignore[attr-defined,no-any-return]


def lb1_paths(lab: Lab, router: str = "r1") -> tuple[set[str], set[str]]:
    """The v4 and v6 VIP prefixes `router` has from lb1 (best or multipath)."""
    out: list[set[str]] = []
    for cmd, nh in (("show ip bgp json", NH4["lb1"]), ("show bgp ipv6 unicast json", NH6["lb1"])):
        routes = (lab.vtysh_json(router, cmd) or {}).get("routes", {})
        have = set()
        for prefix, paths in routes.items():
            for p in paths:
                hops = {h.get("ip") for h in p.get("nexthops", [])}
                if nh in hops or p.get("peerId") == nh:
                    have.add(prefix)
        out.append(have)
    return out[0], out[1]


def communities_at(lab: Lab, router: str, prefix: str, nexthop: str) -> set[str] | None:
    """The communities of `nexthop`'s path for `prefix` at `router`, None if there is none."""
    family = "ipv6 unicast" if ":" in prefix else "ipv4 unicast"
    data = lab.vtysh_json(router, f"show bgp {family} {prefix} json") or {}
    for p in data.get("paths", []):
        hops = {h.get("ip") for h in p.get("nexthops", [])}
        if nexthop in hops or p.get("peer", {}).get("peerId") == nexthop:
            names = set(p.get("community", {}).get("string", "").split())
            # FRR shows well-known communities by name
            return {WELL_KNOWN.get(c, c) for c in names}
    return None


def test_peers_come_up_after_the_first_sync(lab: Lab) -> None:
    """At a start the peers are enabled once gobgpd holds what has a verdict (leftovers
    withdrawn); the complete set before the peers is the gobgpd-restart test below."""
    log = stack(lab, "lb1").announcer_log()
    injected = log.index("first sync with gobgpd done")
    enabled = log.index("peer 198.51.100.1 enabled")
    assert injected < enabled
    assert log.count("enabled: gobgpd has the complete set") == 4  # r1, r2 x v4, v6


def test_gobgpd_restart_never_shows_routers_a_partial_set(lab: Lab) -> None:
    """Sample r1's RIB continuously while lb1's gobgpd restarts and announcer re-injects."""
    full4, full6 = {p for p in V4_VIPS}, {V6_VIP}
    samples: list[tuple[float, set[str], set[str]]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            v4, v6 = lb1_paths(lab)
            samples.append((time.monotonic(), v4, v6))

    argv = lab.proc("lb1-gobgpd").argv
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        lab.signal("lb1-gobgpd", signal.SIGKILL)  # killed: no NOTIFICATION, no cleanup
        wait_until(lambda: not lab.proc("lb1-gobgpd").alive(), timeout=5, what="gobgpd dead")
        wait_until(lambda: lb1_paths(lab) == (set(), set()), timeout=15, what="lb1 gone at r1")
        started = time.monotonic()
        lab.start("lb1", argv, name="lb1-gobgpd")
        wait_until(lambda: lb1_paths(lab) == (full4, full6), timeout=30, what="lb1 back at r1")
        back = time.monotonic() - started
        time.sleep(0.5)
    finally:
        done.set()
        sampler.join()
    # announcer's side: from the end of the event stream to the peers enabled again
    log = stack(lab, "lb1").announcer_log().splitlines()
    ended = [ln for ln in log if "gobgpd event stream ended" in ln][-1]
    enabled = [ln for ln in log if "enabled: gobgpd has the complete set" in ln][-1]
    print(f"announcer: stream ended at {ended[11:23]}, peers enabled at {enabled[11:23]}")
    partial = [
        (t, v4, v6) for t, v4, v6 in samples if v4 not in (set(), full4) or v6 not in (set(), full6)
    ]
    print(
        f"gobgpd restart: lb1's complete set back at r1 {back:.2f}s after gobgpd started; "
        f"{len(samples)} samples of r1's RIB, {len(partial)} partial"
    )
    assert len(samples) > 10
    assert not partial, partial[:5]
    wait_all(lab)


def test_sigkill_of_announcer_takes_the_lbs_routes_away(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    pid = lab.proc("lb1-announcer").pid
    started = time.monotonic()
    lab.signal("lb1-announcer", signal.SIGKILL)
    for vip in ANNOUNCED_VIPS:
        wait_routers(lab, vip, lb_nexthops(vip, ("lb2",)), timeout=10)
    took = time.monotonic() - started
    print(f"announcer SIGKILLed on lb1: every lb1 route gone from both routers after {took:.2f}s")
    # Why so fast: the keeper reads EOF on its pipe at once, withdraws lb1's routes and
    # disables the peers (a Cease NOTIFICATION), so the routers drop lb1's paths
    # without waiting for the 9 s hold timer.
    assert took < 3.0, took
    log = s1.announcer_log()
    assert "announcer died: withdrawing its routes and disabling" in log
    assert "withdrew 4 routes and disabled 4 peers" in log
    assert not any(p == pid for p in lab.ns("lb1").pids())
    s1.start_announcer()
    wait_all(lab)


def test_drain_sends_graceful_shutdown_then_withdraws_and_undrain_restores(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    vip = "192.0.2.10/32"
    r = s1.control("drain", vips=["192.0.2.10"])
    assert r["draining"] == ["192.0.2.10"]
    t0 = time.monotonic()
    for router in ("r1", "r2"):
        wait_until(
            lambda router=router: GS in (communities_at(lab, router, vip, NH4["lb1"]) or set()),
            timeout=5,
            what=f"{router} sees 65535:0 on lb1's path",
        )
    seen_gs = time.monotonic() - t0
    # FRR honours 65535:0 (RFC 8326) by giving the path LOCAL_PREF 0: lb1's path
    # stays in the BGP table but leaves the multipath set, so traffic moves to lb2
    # at once, before anything is withdrawn.
    wait_routers(lab, vip, {NH4["lb2"]}, timeout=5)
    moved = time.monotonic() - t0
    assert communities_at(lab, "r1", vip, NH4["lb1"]) is not None  # not withdrawn yet
    wait_until(
        lambda: all(communities_at(lab, r, vip, NH4["lb1"]) is None for r in ("r1", "r2")),
        timeout=10,
        interval=0.05,
        what="lb1's path withdrawn at both routers",
    )
    gone = time.monotonic() - t0
    print(
        f"drain: 65535:0 at both routers after {seen_gs:.2f}s, traffic on lb2 only after "
        f"{moved:.2f}s, lb1's path withdrawn after {gone:.2f}s (drain.delay {DRAIN_DELAY}s)"
    )
    assert gone >= DRAIN_DELAY
    for other in ("192.0.2.11/32", "192.0.2.12/32"):  # other VIPs untouched
        assert communities_at(lab, "r1", other, NH4["lb1"]) == {""} or GS not in (
            communities_at(lab, "r1", other, NH4["lb1"]) or set()
        )
    status = s1.control("status")
    v = next(x for x in status["vips"] if x["address"] == "192.0.2.10")
    assert v["drain"] == "drained" and v["state"] == "UP" and v["in_gobgp"] is False
    s1.control("undrain", vips=["192.0.2.10"])
    wait_routers(lab, vip, set(NH4.values()), timeout=10)
    assert GS not in (communities_at(lab, "r1", vip, NH4["lb1"]) or set())


def test_disable_file_drains_the_whole_host(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    s1.disable_file.touch()
    try:
        wait_until(
            lambda: GS in (communities_at(lab, "r1", "192.0.2.11/32", NH4["lb1"]) or set()),
            timeout=5,
            what="r1 sees 65535:0 on lb1's 192.0.2.11",
        )
        wait_all(lab, ("lb2",), timeout=10)
        assert s1.control("status")["drain"]["host_by_file"] is True
    finally:
        s1.disable_file.unlink()
    wait_all(lab)
    log = s1.announcer_log()
    assert "exists: draining every VIP of this host" in log and "is gone: the host" in log


def test_sighup_applies_a_valid_config_and_keeps_running_on_an_invalid_one(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    before = s1.announcer_log().count("withdraw ")
    # A community for fe_api's VIP only: that VIP is re-announced, nothing flaps.
    doc_overrides = [{"frontends": ["fe_api"], "bgp": {"communities": ["65512:42"]}}]
    import yaml

    cfg = yaml.safe_load(s1.run_cfg.read_text())
    cfg["overrides"] = doc_overrides
    s1.run_cfg.write_text(yaml.safe_dump(cfg))
    lab.signal("lb1-announcer", signal.SIGHUP)
    wait_until(
        lambda: "65512:42" in (communities_at(lab, "r1", "192.0.2.11/32", NH4["lb1"]) or set()),
        timeout=10,
        what="r1 sees 65512:42 on lb1's 192.0.2.11",
    )
    assert "65512:42" not in (communities_at(lab, "r1", "192.0.2.10/32", NH4["lb1"]) or set())
    log = s1.announcer_log()
    assert "configuration reloaded" in log
    assert log.count("withdraw ") == before  # no VIP was withdrawn by the reload
    wait_all(lab)
    # An invalid config: rejected with a log line naming the key; the old one runs on.
    cfg["health"]["rise"] = 0
    s1.run_cfg.write_text(yaml.safe_dump(cfg))
    lab.signal("lb1-announcer", signal.SIGHUP)
    wait_until(
        lambda: "is invalid; the running configuration stays" in s1.announcer_log(),
        timeout=10,
        what="the reload refused",
    )
    assert "health.rise: 0 is out of range" in s1.announcer_log()
    assert lab.proc("lb1-announcer").alive()
    assert "65512:42" in (communities_at(lab, "r1", "192.0.2.11/32", NH4["lb1"]) or set())
    wait_all(lab)
    del cfg["overrides"]
    cfg["health"]["rise"] = 2
    s1.run_cfg.write_text(yaml.safe_dump(cfg))
    lab.signal("lb1-announcer", signal.SIGHUP)

    def community_gone() -> bool:
        c = communities_at(lab, "r1", "192.0.2.11/32", NH4["lb1"])
        return c is not None and "65512:42" not in c

    wait_until(community_gone, timeout=10, what="the community gone again")


def test_status_and_metrics_show_what_the_tests_drive(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    s1.stop_backend("api")
    try:
        wait_routers(lab, "192.0.2.11/32", {NH4["lb2"]}, timeout=10)
        # The CLI, as an operator runs it (the control socket is a file: no netns needed).
        argv = [sys.executable, "-m", "announcer", "status", "--socket", str(s1.control_socket)]
        cp = lab.exec("lb1", [*argv, "--json"], check=True)
        st = json.loads(cp.stdout)
        vips = {v["address"]: v for v in st["vips"]}
        assert vips["192.0.2.11"]["state"] == "DOWN" and vips["192.0.2.11"]["in_gobgp"] is False
        assert vips["192.0.2.10"]["state"] == "UP" and vips["192.0.2.10"]["in_gobgp"] is True
        assert "HTTP 503" in vips["192.0.2.11"]["checks"][0]["detail"]
        assert vips["192.0.2.12"]["frontends"] == ["fe_shared", "fe_shared_alt"]
        assert {p["state"] for p in st["peers"]} == {"established"} and len(st["peers"]) == 4
        table = lab.exec("lb1", argv, check=True).stdout
        assert "192.0.2.11" in table and "DOWN" in table and "established" in table
        metrics = lab.exec(
            "lb1", ["curl", "-s", "--max-time", "2", "http://127.0.0.1:9642/metrics"], check=True
        ).stdout
        assert 'announcer_vip_state{state="DOWN",vip="192.0.2.11"} 1.0' in metrics
        assert 'announcer_vip_state{state="UP",vip="192.0.2.10"} 1.0' in metrics
        assert 'announcer_bgp_peer_established{peer="198.51.100.1"} 1.0' in metrics
        assert "announcer_gobgp_up 1.0" in metrics
        assert 'announcer_vip_transitions_total{from="FALLING",to="DOWN"}' in metrics
    finally:
        s1.start_backend("api")
    wait_all(lab)


def test_peers_down_is_the_backstop_when_the_whole_cgroup_is_killed(lab: Lab) -> None:
    """ExecStopPost=announcer peers-down --if-failed: after an unclean stop (the keeper
    killed too) it disables the peers; after a clean one it does nothing."""
    s1 = stack(lab, "lb1")
    argv = [sys.executable, "-m", "announcer", "peers-down", "-c", str(s1.run_cfg), "--if-failed"]
    out = lab.exec("lb1", ["env", "SERVICE_RESULT=success", *argv], check=True).stdout
    assert "stopped cleanly; peers left" in out
    # The same from announcer-peers-down.service, the OnFailure= unit: systemd gives it the
    # failed unit's result as $MONITOR_SERVICE_RESULT.
    out = lab.exec("lb1", ["env", "MONITOR_SERVICE_RESULT=success", *argv], check=True).stdout
    assert "stopped cleanly; peers left" in out
    time.sleep(0.5)
    wait_all(lab, timeout=1)  # still announced from both
    out = lab.exec("lb1", ["env", "SERVICE_RESULT=signal", *argv], check=True).stdout
    assert "disabled 4 gobgpd peers (service result: signal)" in out
    wait_all(lab, ("lb2",), timeout=10)
    s1.stop_announcer()  # a new announcer enables the peers after its full sync
    s1.start_announcer()
    wait_all(lab)


def test_watchdog_restarts_a_hung_main_loop(lab: Lab) -> None:
    """announcer under our systemd emulation (WatchdogSec=3): a frozen loop is aborted
    and restarted; the keeper takes the routes away meanwhile and the restart brings
    them back."""
    s1 = stack(lab, "lb1")
    s1.stop_announcer()
    wait_all(lab, ("lb2",), timeout=15)
    env = {
        **os.environ,
        "ANNOUNCER_DPAPI_PASSWORD": PASSWORD,
        "PYTHONPATH": str(REPO),
        "ANNOUNCER_TEST_HOOKS": "1",
    }
    assert lab.tmp is not None
    sup = Supervisor(
        [sys.executable, "-m", "announcer", "run", "-c", str(s1.run_cfg)],
        env,
        watchdog_sec=3,
        restart_sec=0.5,
        log_path=lab.tmp / "lb1" / "supervised-announcer.log",
        netns=lab.ns("lb1").name,
        stop_timeout=10,
    )
    with sup:
        sup.start()
        ready = sup.wait_ready(timeout=30)
        assert "VIPs" in (ready.get("STATUS") or "")
        wait_all(lab)
        wait_until(lambda: len(sup.values("WATCHDOG")) >= 2, timeout=10, what="watchdog pings")
        s1.control("freeze", seconds=30)
        sup.wait_restarts(1, timeout=15)
        sup.wait_ready(timeout=30)
        wait_all(lab)
        aborts = [e for e in sup.exits if e.result == "watchdog"]
        assert aborts, sup.exits
        log = sup.log_tail(200)
        assert "announcer died: withdrawing its routes and disabling" in log
        sup.stop()
    s1.start_announcer()
    wait_all(lab)
