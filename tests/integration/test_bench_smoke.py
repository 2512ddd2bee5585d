"""The benchmark harness itself, at N = 20 (`scripts/bench --quick`): it runs end to end
in the netns lab and writes a JSON document with every field docs/performance.md uses.

No number is asserted: benchmarks are not timed tests (the machine may be shared).
Only sanity: every route reached the router, nothing flapped, counts add up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import have_tools

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]

SUMMARY = ("count", "min", "p50", "p99", "max", "mean")
TOP = ("started", "finished", "quick", "settings", "machine", "scale", "failover", "resync",
       "exabgp", "routewatch_overflows")  # fmt: skip
MACHINE = ("cpu", "cores", "ram_gib", "kernel", "python", "grpcio", "gobgpd", "frr", "haproxy",
           "exabgp", "loadavg_at_start", "loadavg_at_end")  # fmt: skip
SCALE = ("n", "start_to_all_routes_s", "start_to_first_discovery_s", "start_to_first_sync_s",
         "first_sync_to_all_routes_s", "rise_floor_s", "announcer", "gobgpd_rss_mib",
         "gobgpd_cpu_pct", "log_lines", "startup", "withdraw_all_on_stop_s",
         "event_loop", "start_cpu_s", "start_machine_cpu_pct", "start_haproxy_cpu_pct",
         "more_starts")  # fmt: skip
STEADY = ("window_s", "cpu_pct_of_one_core", "cpu_pct_main_process",
          "cpu_pct_main_process_kernel", "rss_mib", "rss_mib_main_process", "pss_mib",
          "peak_rss_mib", "processes", "checks_per_s", "checks_per_s_expected",
          "haproxy_cpu_pct", "machine_cpu_pct_all", "routes_at_router_end",
          "routes_withdrawn_in_window")  # fmt: skip
FAILOVER = ("n", "samples", "bound_fall_x_interval_s", "latency_s", "excess_over_bound_s",
            "verdict_to_router_s", "verdict_to_withdraw_planned_s",
            "withdraw_planned_to_router_s", "recovery_s", "other_routes_withdrawn")  # fmt: skip
RESYNC = ("n", "rounds", "restart_to_all_routes_s", "restart_to_gobgpd_api_s",
          "restart_to_peer_enabled_s", "restart_to_session_up_s", "each_round")  # fmt: skip


def has(doc: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in doc]
    assert not missing, f"{where}: missing {missing}"


def test_quick_bench_writes_every_field(tmp_path: Path) -> None:
    have_tools()
    cp = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    files = list(tmp_path.glob("bench-*-quick.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert "Scale (announcer" in cp.stdout and "JSON:" in cp.stdout  # the table was printed

    has(doc, TOP, "document")
    has(doc["machine"], MACHINE, "machine")
    assert doc["quick"] is True and doc["routewatch_overflows"] == 0

    (scale,) = doc["scale"]
    has(scale, SCALE, "scale")
    has(scale["announcer"], STEADY, "scale.announcer")
    assert scale["n"] == 20
    assert scale["event_loop"].startswith("uvloop "), scale["event_loop"]  # auto, dev extras
    steady = scale["announcer"]
    assert steady["routes_at_router_end"] == 20
    assert steady["routes_withdrawn_in_window"] == 0
    assert steady["checks_per_s"] > 0 and steady["processes"] >= 1
    assert scale["startup"]["vips_up_after_second"][-1] == 20
    (again,) = scale["more_starts"]  # --quick times two starts
    assert again["start_to_all_routes_s"] > 0 and again["start_cpu_s"] > 0
    assert again["withdraw_all_on_stop_s"] is not None

    for key, keys in (("failover", FAILOVER), ("resync", RESYNC)):
        has(doc[key], keys, key)
    fo = doc["failover"]
    for k in ("latency_s", "excess_over_bound_s", "verdict_to_router_s", "recovery_s"):
        has(fo[k], SUMMARY, f"failover.{k}")
        assert fo[k]["count"] == fo["samples"], (k, fo[k])
    assert fo["other_routes_withdrawn"] == 0
    rs = doc["resync"]
    assert rs["restart_to_all_routes_s"]["count"] == rs["rounds"]

    ex = doc["exabgp"]
    has(ex, ("n", "start_to_all_routes_s", "steady", "failover"), "exabgp")
    has(ex["steady"], STEADY, "exabgp.steady")
    has(ex["failover"], FAILOVER, "exabgp.failover")
    assert ex["steady"]["routes_at_router_end"] == ex["n"]
    assert ex["failover"]["latency_s"]["count"] == ex["failover"]["samples"]

    # The pictures beside the JSON: startup (N=20), re-sync, failover, ExaBGP vs announcer
    # when the quick run measured announcer at ExaBGP's N.
    assert len(scale["arrivals_s"]) == 20 and rs["arrivals_s"]
    assert len(fo["latencies_s"]) == fo["samples"]
    plots = {Path(p).name for p in doc["plots"]}
    assert {"startup-20.png", "resync.png", "failover.png"} <= plots, plots
    for p in doc["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
