"""Pictures of a benchmark run (matplotlib, PNG, beside the run's JSON).

* startup-N.png   routes at the router over the seconds after announcer's start, with
                  its first discovery and first sync marked (one curve per N)
* resync.png      routes at the router after gobgpd's restart (the last round)
* failover.png    each failed VIP's time from failure to gone at the router, sorted,
                  against the fall x interval bound; ExaBGP's beside announcer's
* exabgp.png      CPU and memory of announcer and of ExaBGP + healthchecks at the same N

Only what the JSON holds is drawn (a phase that did not run has no picture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

ANNOUNCER = "#1f77b4"
EXABGP = "#d62728"


def _steps(arrivals: list[float]) -> tuple[list[float], list[int]]:
    """Arrival offsets -> a cumulative step curve (0 at t=0)."""
    xs, ys = [0.0], [0]
    for i, t in enumerate(sorted(arrivals), start=1):
        xs.append(t)
        ys.append(i)
    return xs, ys


def startup(run: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    xs, ys = _steps(run["arrivals_s"])
    ax.step(xs, ys, where="post", color=ANNOUNCER, label=f"routes at the router (N={run['n']})")
    for key, label in (
        ("start_to_first_discovery_s", "first discovery"),
        ("start_to_first_sync_s", "first sync with gobgpd"),
    ):
        if run.get(key) is not None:
            ax.axvline(run[key], color="grey", linestyle=":", linewidth=1)
            ax.text(run[key], run["n"] * 0.04, f" {label}", rotation=90, fontsize=7, color="grey")
    ax.set_xlabel("seconds since `announcer run`")
    ax.set_ylabel("routes")
    ax.set_title(f"Start-up: all {run['n']} at the router after {run['start_to_all_routes_s']} s")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out / f"startup-{run['n']}.png")


def resync(run: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    xs, ys = _steps(run["arrivals_s"])
    ax.step(xs, ys, where="post", color=ANNOUNCER, label="routes at the router")
    enabled = run.get("restart_to_peer_enabled_s", {}).get("p50")
    if enabled is not None:
        ax.axvline(enabled, color="grey", linestyle=":", linewidth=1)
        ax.text(enabled, run["n"] * 0.04, " peers enabled (complete set in gobgpd)", rotation=90,
                fontsize=7, color="grey")  # fmt: skip
    ax.set_xlabel("seconds since gobgpd's start")
    ax.set_ylabel("routes")
    p50 = run["restart_to_all_routes_s"]["p50"]
    ax.set_title(f"gobgpd restart with {run['n']} routes: all back after {p50} s (p50)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out / "resync.png")


def failover(results: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    runs = [("announcer", results["failover"], ANNOUNCER)]
    if results.get("exabgp") and results["exabgp"].get("failover"):
        runs.append(("ExaBGP healthcheck", results["exabgp"]["failover"], EXABGP))
    for name, run, color in runs:
        lat = sorted(run["latencies_s"])
        ax.plot(range(1, len(lat) + 1), lat, marker=".", color=color,
                label=f"{name} (N={run['n']}, p99 {run['latency_s']['p99']} s)")  # fmt: skip
    bound = results["failover"]["bound_fall_x_interval_s"]
    ax.axhline(bound, color="grey", linestyle="--", linewidth=1)
    ax.text(0.5, bound, " fall x interval", fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("failed VIPs, sorted by latency")
    ax.set_ylabel("seconds, failure -> gone at the router")
    ax.set_title("Failover: a frontend fails, its route leaves the router")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out / "failover.png")


def exabgp(results: dict[str, Any], out: Path) -> Path | None:
    ex = results.get("exabgp")
    same = [r for r in results.get("scale", []) if ex and r["n"] == ex["n"]]
    if not ex or not same:
        return None
    ours, theirs = same[0]["announcer"], ex["steady"]
    fig, (cpu, mem) = plt.subplots(1, 2, figsize=(7, 3.2), dpi=110)
    names = ["announcer", "ExaBGP + healthchecks"]
    cpu.bar(
        names,
        [ours["cpu_pct_of_one_core"], theirs["cpu_pct_of_one_core"]],
        color=[ANNOUNCER, EXABGP],
    )
    cpu.set_ylabel("% of one core")
    mem.bar(names, [ours["rss_mib"], theirs["rss_mib"]], color=[ANNOUNCER, EXABGP])
    mem.set_ylabel("RSS, MiB (all processes)")
    for ax in (cpu, mem):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{ex['n']} VIPs, checks every {results['settings']['interval']} s")
    return _save(fig, out / "exabgp.png")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    """Every picture the results allow, into `out`; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    made = [startup(r, out) for r in results.get("scale", []) if r.get("arrivals_s")]
    if results.get("resync") and results["resync"].get("arrivals_s"):
        made.append(resync(results["resync"], out))
    if results.get("failover") and results["failover"].get("latencies_s"):
        made.append(failover(results, out))
    if (p := exabgp(results, out)) is not None:
        made.append(p)
    return made
