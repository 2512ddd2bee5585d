"""From ExaBGP to announcer in the lab (issue 15): same routes at the routers, and the
cut-over runbook of docs/migration.md on lb1 with zero failed client requests.

The seed's configuration (tests/fixtures/exabgp-seed/exabgp.conf) with the lab's
addresses substituted (`lab_exabgp_conf`, every substitution listed there) runs on
lb1 under Debian's ExaBGP, as scripts/bench runs it; its healthcheck process is
tests/support/healthcheck_haproxy.py, which lists the VIPs from DataPlaneAPI as the seed's
script does and leaves the rest to Debian's own exabgp-healthcheck. `announcer
migrate` turns the same file into gobgpd.toml and announcer.yaml; the test changes
nothing in them but the paths the lab's LBs cannot share (gobgpd's API socket,
announcer's control socket and state directory). lb2 runs gobgpd + announcer with its
usual lab configuration (plus MED 100, as migrated) throughout, so the routers always
have a second LB.

What is compared: every attribute FRR shows for lb1's path to each VIP at r1 and r2
(AS path, origin, MED, local preference, communities, large communities, next hop,
atomic aggregate, aggregator), once with every VIP healthy and once with 192.0.2.11
DOWN (its backend stopped: ExaBGP re-announces it with MED 1000, and the migrated
configuration must do the same).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.lab import RACK_ADDR, Lab, wait_until
from tests.integration.stack import PASSWORD, REPO, LbStack, have_tools
from tests.support import handoff
from tests.support.labroutes import GS, WELL_KNOWN, client_load

pytestmark = pytest.mark.lab

SEED = REPO / "tests" / "fixtures" / "exabgp-seed"
VARIANT = REPO / "tests" / "support" / "healthcheck_haproxy.py"
LB1 = RACK_ADDR["lb1"][0]
VIPS = ("192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32", "192.0.2.200/32")
DOWN_VIP = "192.0.2.11/32"  # fe_api: its monitor-uri fails when be_api has no server
URLS = ("http://192.0.2.10/", "http://192.0.2.12/")
KEPT = ("192.0.2.10", "192.0.2.12")  # the keep-alive clients' hosts
ATTRS = ("aspath", "origin", "metric", "locPrf", "community", "largeCommunity",
         "nexthop", "atomicAggregate", "aggregatorAs", "aggregatorId")  # fmt: skip


def lab_exabgp_conf(disable_file: Path) -> str:
    """The seed's exabgp.conf with the lab's addresses, password, monitor-uri, program
    and a disable file (the runbook's step 0 for a healthcheck without --disable)."""
    text = (SEED / "exabgp.conf").read_text()
    for old, new in (
        ("192.0.2.5", LB1),  # router-id, local-address: lb1's rack address
        ("neighbor 192.0.2.2", f"neighbor {RACK_ADDR['r1'][0]}"),
        ("neighbor 192.0.2.3", f"neighbor {RACK_ADDR['r2'][0]}"),
        ("/usr/bin/python3 /usr/local/sbin/healthcheck-haproxy.py", f"/usr/bin/python3 {VARIANT}"),
        ("-s --api-password", f"-s --disable {disable_file} --api-password"),
        ("<set a password>", PASSWORD),
        ("/_healthcheck", "/healthz"),  # the lab's monitor-uri
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


def migrate(out: Path, conf: Path) -> None:
    from announcer import cli

    argv = ["migrate", "--exabgp-conf", str(conf), "--out", str(out),
            "--junos-config", str(SEED / "junos-lb-group.txt")]  # fmt: skip
    assert cli.main(argv) == 0


def lb1_attrs(lab: Lab, vips: tuple[str, ...] = VIPS) -> dict[tuple[str, str], dict[str, Any]]:
    """(router, VIP) -> the attributes of lb1's path there, as FRR shows them."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ("r1", "r2"):
        for vip in vips:
            data = lab.vtysh_json(r, f"show bgp ipv4 unicast {vip} json") or {}
            for p in data.get("paths", []):
                if p.get("peer", {}).get("peerId") != LB1:
                    continue
                got = {
                    "aspath": p.get("aspath", {}).get("string"),
                    "origin": p.get("origin"),
                    "metric": p.get("metric"),
                    "locPrf": p.get("locPrf"),
                    "community": " ".join(
                        WELL_KNOWN.get(c, c)
                        for c in p.get("community", {}).get("string", "").split()
                    ),
                    "largeCommunity": p.get("largeCommunity", {}).get("string"),
                    "nexthop": sorted(h.get("ip") for h in p.get("nexthops", [])),
                    "atomicAggregate": p.get("atomicAggregate"),
                    "aggregatorAs": p.get("aggregatorAs"),
                    "aggregatorId": p.get("aggregatorId"),
                }
                assert set(got) == set(ATTRS)
                out[(r, vip)] = got
    return out


def wait_attrs(
    lab: Lab, want: dict[str, Any], what: str, timeout: float = 40.0
) -> dict[tuple[str, str], dict[str, Any]]:
    """Wait until lb1's path for every VIP at both routers has the attributes `want`
    (per VIP: a dict of attribute -> value, or None for no path from lb1)."""

    def now() -> dict[tuple[str, str], dict[str, Any]]:
        return lb1_attrs(lab)

    def ok(got: dict[tuple[str, str], dict[str, Any]]) -> bool:
        for r in ("r1", "r2"):
            for vip in VIPS:
                w = want[vip]
                have = got.get((r, vip))
                if w is None:
                    if have is not None:
                        return False
                elif have is None or any(have[k] != v for k, v in w.items()):
                    return False
        return True

    return wait_until(now, timeout=timeout, interval=0.3, check=ok, what=what)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    have_tools()
    assert shutil.which("exabgp") or Path("/usr/sbin/exabgp").exists(), "exabgp not installed"
    assert Path("/usr/bin/exabgp-healthcheck").exists(), "exabgp-healthcheck not installed"
    assert shutil.which("nft") or Path("/usr/sbin/nft").exists(), "nftables not installed"
    with Lab(enable_peers=False, wait_established=False) as lab:
        lab.stop("lb1-gobgpd")  # lb1's BGP speaker is ExaBGP first
        # lb2 stands for an LB migrated before: its usual lab configuration with the MED
        # migrate keeps from ExaBGP (healthcheck.py's up-metric, 100). Without it lb2
        # would send no MED (0) and win every route: MED decides between the LBs.
        lb2 = LbStack(lab, "lb2")
        lb2.write_announcer_cfg(bgp={"med": 100})
        lab.stacks = {  # type: ignore[attr-defined]
            "lb2": lb2.start(),
            "lb1": LbStack(lab, "lb1").start(announcer=False),
        }
        lb1 = lab.stacks["lb1"]  # type: ignore[attr-defined]
        # The seed's variant logs in as `dataplaneapi` (the emulator re-reads the file).
        lb1.edit_cfg(
            "user admin insecure-password lab-only-secret",
            "user admin insecure-password lab-only-secret\n"
            "    user dataplaneapi insecure-password lab-only-secret",
        )
        # docs/migration.md's stray hand-off, disarmed: set up (and so conntrack
        # running) before any client connects.
        handoff.install(lab)
        yield lab


def stack(lab: Lab) -> LbStack:
    return lab.stacks["lb1"]  # type: ignore[attr-defined,no-any-return]


def start_exabgp(lab: Lab, conf: Path) -> None:
    env = dict(os.environ)
    env.update({  # as scripts/bench (tests/bench/run.py) runs Debian's ExaBGP
        "exabgp.daemon.user": "root",
        "exabgp.daemon.drop": "false",
        "exabgp.daemon.daemonize": "false",
        "exabgp.api.cli": "false",
        "exabgp.log.destination": "stdout",
        "exabgp.tcp.bind": "",  # dial the routers, listen on nothing
    })  # fmt: skip
    lab.start("lb1", ["exabgp", str(conf)], name="lb1-exabgp", env=env)


def start_announcer_stack(lab: Lab, out: Path) -> Path:
    """gobgpd + announcer with migrate's output; only the lab's own paths changed."""
    s = stack(lab)
    doc = yaml.safe_load((out / "announcer.yaml").read_text())
    doc["gobgp"]["address"] = f"unix://{lab.api_socket('lb1')}"
    doc["service"] = {"control_socket": str(s.control_socket), "state_dir": str(s.dir / "state")}
    run_cfg = out / "announcer-lab.yaml"
    run_cfg.write_text(yaml.safe_dump(doc))
    lab.start("lb1", ["gobgpd", "-t", "toml", "-f", str(out / "gobgpd.toml"),
                      "--api-hosts", f"unix://{lab.api_socket('lb1')}", "--pprof-disable", "-p"],
              name="lb1-gobgpd")  # fmt: skip
    wait_until(lambda: lab.api_socket("lb1").exists(), timeout=10, what="lb1 gobgpd API")
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(out), PYTHONPATH=str(REPO))
    lab.start("lb1", [sys.executable, "-m", "announcer", "run", "-c", str(run_cfg)],
              name="lb1-announcer", env=env)  # fmt: skip
    return run_cfg


UP = {"aspath": "65512", "origin": "IGP", "metric": 100, "nexthop": [LB1], "community": ""}


def test_routers_get_the_same_routes_from_announcer_as_from_exabgp(
    lab: Lab, tmp_path: Path
) -> None:
    s = stack(lab)
    conf = tmp_path / "exabgp.conf"
    conf.write_text(lab_exabgp_conf(s.dir / "exabgp-disable"))
    out = tmp_path / "migrated"
    migrate(out, conf)

    start_exabgp(lab, conf)
    exa_up = wait_attrs(lab, dict.fromkeys(VIPS, UP), "ExaBGP: every VIP from lb1")
    s.stop_backend("api")
    down = {**UP, "metric": 1000}
    exa_down = wait_attrs(
        lab, {**dict.fromkeys(VIPS, UP), DOWN_VIP: down}, "ExaBGP: 192.0.2.11 DOWN"
    )
    s.start_backend("api")
    wait_attrs(lab, dict.fromkeys(VIPS, UP), "ExaBGP: 192.0.2.11 back")
    lab.stop("lb1-exabgp", timeout=10)
    wait_attrs(lab, dict.fromkeys(VIPS), "lb1 gone at the routers")

    start_announcer_stack(lab, out)
    try:
        ann_up = wait_attrs(lab, dict.fromkeys(VIPS, UP), "announcer: every VIP from lb1")
        s.stop_backend("api")
        ann_down = wait_attrs(lab, {**dict.fromkeys(VIPS, UP), DOWN_VIP: down}, "announcer: DOWN")
        s.start_backend("api")
        wait_attrs(lab, dict.fromkeys(VIPS, UP), "announcer: 192.0.2.11 back")
    finally:
        lab.stop("lb1-announcer", timeout=15)
        lab.stop("lb1-gobgpd")
    print("ExaBGP, all up:", exa_up)
    print("announcer, all up:", ann_up)
    assert ann_up == exa_up  # every attribute, both routers, every VIP
    assert ann_down == exa_down
    assert len(exa_up) == 2 * len(VIPS)


def test_the_cut_over_runbook_and_its_rollback_under_client_load(lab: Lab, tmp_path: Path) -> None:
    """docs/migration.md on lb1, then its rollback, with the stray hand-off armed, while
    clients fetch two VIPs served by lb1 and lb2: curl (a new connection per request)
    and keep-alive connections that live through every step. No request may fail."""
    s = stack(lab)
    disable = s.dir / "exabgp-disable"
    disable.unlink(missing_ok=True)
    conf = tmp_path / "exabgp.conf"
    conf.write_text(lab_exabgp_conf(disable))
    out = tmp_path / "migrated"
    start_exabgp(lab, conf)  # where lb1 is before the cut-over
    wait_attrs(lab, dict.fromkeys(VIPS, UP), "ExaBGP announces lb1")
    exabgp_drained = {**UP, "metric": 500}
    drained = {**UP, "metric": 500, "community": GS}
    served: list[list[Any]] = []
    # The moments lb1 leaves or rejoins the routers' ECMP set: (step, start, end).
    moves: list[tuple[str, float, float]] = []
    handed = {lb: handoff.handed_off(lab, lb) for lb in ("lb1", "lb2")}

    def step(name: str, action: Any, want: dict[str, Any] | None, what: str) -> None:
        started = time.monotonic()
        action()
        wait_attrs(lab, dict.fromkeys(VIPS, want), what, timeout=60)
        moves.append((name, started, time.monotonic() + 1.0))
        time.sleep(2)  # requests in flight finish

    with (
        client_load(lab, URLS[0]) as a,
        client_load(lab, URLS[1]) as b,
        handoff.keepalive_load(lab, KEPT) as kept,
    ):
        served += [a, b, kept]
        time.sleep(2)
        # 0. The stray hand-off armed on every LB (before the first ECMP change).
        handoff.arm(lab)
        # 1-2. `announcer migrate`; installed beside ExaBGP, nothing started.
        migrate(out, conf)
        # 3. Drain on ExaBGP (its disable file): MED 500, the routers prefer lb2's 100.
        step("3 drain on ExaBGP", disable.touch, exabgp_drained, "ExaBGP drained lb1")
        # 4. Stop ExaBGP: lb1's paths leave; no traffic used them.
        lab.stop("lb1-exabgp", timeout=10)
        wait_attrs(lab, dict.fromkeys(VIPS), "ExaBGP stopped")
        # 5. gobgpd + announcer; the disable file is drain.disable_file: lb1 comes
        #    back drained (65535:0 and MED 500).
        start_announcer_stack(lab, out)
        wait_attrs(lab, dict.fromkeys(VIPS, drained), "announcer drained lb1", timeout=60)
        # 6. Check: gobgp neighbor, announcer status.
        neighbors = lab.gobgp("lb1", "neighbor").stdout
        assert neighbors.count("Establ") == 2, neighbors
        status = s.control("status")
        synced = {v["address"] for v in status["vips"] if v["in_gobgp"] and v["in_sync"]}
        assert synced == {v.split("/")[0] for v in VIPS}, status
        # 7. Undrain: lb1 is back in the ECMP set.
        step("7 undrain", disable.unlink, UP, "announcer undrained lb1")
        # Rollback 1: drain announcer (65535:0 at once, MED 500 after drain.delay).
        step("rollback 1 drain announcer", disable.touch, drained, "announcer drained lb1")
        # Rollback 2: stop announcer and gobgpd.
        lab.stop("lb1-announcer", timeout=15)
        lab.stop("lb1-gobgpd")
        wait_attrs(lab, dict.fromkeys(VIPS), "announcer stopped")
        # Rollback 3: ExaBGP again; it finds the disable file: MED 500.
        start_exabgp(lab, conf)
        wait_attrs(lab, dict.fromkeys(VIPS, exabgp_drained), "ExaBGP back, disabled")
        # Rollback 4: remove the disable file: MED 100, lb1 back in the ECMP set.
        step("rollback 4 undrain ExaBGP", disable.unlink, UP, "ExaBGP undrained lb1")
    handoff.disarm(lab)  # the clients are gone: nothing is handed off any more
    lab.stop("lb1-exabgp", timeout=10)
    handed = {lb: handoff.handed_off(lab, lb) - n for lb, n in handed.items()}
    results = [tuple(r[:3]) for rs in served for r in rs]
    by_lb = {lb: sum(1 for r in results if r[2].startswith(lb)) for lb in ("lb1", "lb2")}
    failed = [r for r in results if not r[1]]
    at_move = {name: [r for r in failed if t0 <= r[0] <= t1] for name, t0, t1 in moves}
    elsewhere = [r for r in failed if not any(t0 <= r[0] <= t1 for _, t0, t1 in moves)]
    print(
        f"cut-over and rollback: {len(results)} requests ({len(kept)} on "
        f"{len({(r[3], r[4]) for r in kept})} keep-alive connections), served {by_lb}, "
        f"packets handed off {handed}, {len(failed)} failed: "
        f"{', '.join(f'{n}: {len(f)}' for n, f in at_move.items())}, elsewhere: {len(elsewhere)}"
    )
    assert by_lb["lb1"] > 0 and by_lb["lb2"] > 0
    assert kept and all(isinstance(r[1], bool) for r in kept)
    # The drains move lb1's connections to lb2, the undrains some of lb2's to lb1: each
    # LB received packets of connections the other had, and passed them on.
    assert handed["lb2"] > 0 and handed["lb1"] > 0, handed
    # ... so no request failed: not while the BGP speaker was swapped, and not when lb1
    # left or rejoined the routers' ECMP set.
    assert failed == [], (at_move, elsewhere)
