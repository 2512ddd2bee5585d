"""announcer benchmarks in the netns lab: scale, failover latency, re-sync, ExaBGP beside it.

    scripts/bench                 # the full run (N = 100, 1000, 10000; about 10 min)
    scripts/bench --quick         # N = 20, seconds per phase: a smoke test of the harness
    scripts/bench --only scale --scale 100 1000 --window 20

Everything is real software: gobgpd on the LB, FRR on the router, HAProxy (one
frontend per VIP, answering its monitor-uri) as the responder behind the VIPs,
the DataPlaneAPI emulator serving that generated haproxy.cfg, and announcer as
`python -m announcer run`. Routes are observed in the router's kernel table
through rtnetlink events (routewatch.py), so arrival and departure times are exact
and observing costs the machine nothing while idle.

Prints a table and writes JSON to bench-results/ (see docs/performance.md for
what each field means). Not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.bench import gen, plots
from tests.bench.announcer_variant import SWITCHES
from tests.bench.topo import (
    CLK_TCK,
    LB,
    LB_ADDR,
    ROUTER,
    ROUTER_ADDR,
    BenchLab,
    HaproxyRuntime,
    RouteWatch,
    cpu_percent,
    cpu_sample,
    cpu_ticks,
    descendants,
    hwm_mib,
    pss_mib,
    rss_mib,
    sys_ticks,
)
from tests.integration.lab import LabError, Proc, wait_until

REPO = Path(__file__).resolve().parents[2]
EMULATOR = REPO / "tests" / "support" / "dpapi_emulator.py"
RESULTS = REPO / "bench-results"
# Two HAProxy processes share the wildcard listener (see gen.responder_cfg), each
# with room for 9000 connections: 2 x 9000 + a few fds fit the 20 000 hard limit.
SHARDS = 2
RESPONDER_MAXCONN = 9000
PROGRESS = re.compile(
    r"start-up: \d+ of \d+ VIPs have a verdict \((\d+) UP, (\d+) DOWN\)"
    r"|start-up done after [0-9.]+s: (\d+) VIPs UP, (\d+) not announced"
)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


# How long after a crash gobgpd is started again in the crash rounds: systemd's
# default RestartSec (100 ms), 0.2 s and 0.5 s, and the 1 s the drop-in
# systemd/gobgpd.service.d/announcer.conf had until 2026-12-01.
CRASH_RESTART_DELAYS = (0.1, 0.2, 0.5, 1.0)


@dataclass
class Settings:
    """What to run and how hard; --quick swaps in small values."""

    interval: float = 1.0
    fast_interval: float = 0.5  # announcer's default: scale and re-sync run with it
    # The failover phase and ExaBGP use fast_interval = interval, so that a failure
    # is detected after at most fall x interval: the bound the excess is measured on.
    failover_fast_interval: float = 1.0
    rise: int = 3
    fall: int = 3
    timeout: float = 1.0
    scale: list[int] = field(default_factory=lambda: [100, 1000, 10000])
    failover_n: int = 1000
    failover_samples: int = 40
    resync_n: int = 10000
    resync_rounds: int = 5  # phases of the router's 1 s connect timer (resync())
    # gobgpd started again this long after it was killed (resync_crash())
    crash_delays: tuple[float, ...] = CRASH_RESTART_DELAYS
    exabgp_n: int = 100
    exabgp_failover_samples: int = 15
    starts: int = 1  # starts timed per N (the steady state is measured after the first)
    settle: float = 10.0  # after all routes arrived, before the CPU window
    window: float = 30.0  # steady-state measuring window
    only: list[str] = field(default_factory=lambda: ["scale", "failover", "resync", "exabgp"])
    profile: bool = False
    keepalive: bool = True  # False: announcer's probes connect once per check (A/B)
    variant: list[str] = field(default_factory=list)  # announcer_variant switches (A/B)
    event_loop: str = "auto"  # announcer's service.event_loop (A/B: asyncio, uvloop)
    keep_logs: bool = False  # copy announcer's log of each scale run next to the JSON
    out_dir: Path = RESULTS
    stamp: str = ""
    quick: bool = False

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(
            scale=[20],
            failover_n=20,
            failover_samples=4,
            resync_n=20,
            resync_rounds=1,
            starts=2,
            crash_delays=(0.1,),
            exabgp_n=4,
            exabgp_failover_samples=2,
            settle=1.0,
            window=3.0,
            quick=True,
        )


# ------------------------------------------------------------------ helpers


def log_time(line: str) -> float | None:
    """The unix time of an announcer log line (`2024-01-02 03:04:05,678 INFO ...`)."""
    m = LOG_TIME.match(line)
    if m is None:
        return None
    return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first_log_time(log: str, needle: str, after: float = 0.0) -> float | None:
    """The time of the first line containing `needle` logged at or after `after`."""
    for line in log.splitlines():
        if needle in line:
            t = log_time(line)
            if t is not None and t >= after - 0.001:
                return t
    return None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float | int | None]:
    """p50, p99, max (and min, mean, count) of a list of seconds; None fields if empty."""
    if not values:
        return {"count": 0, "min": None, "p50": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(values),
        "min": round(min(values), 4),
        "p50": round(percentile(values, 50), 4),
        "p99": round(percentile(values, 99), 4),
        "max": round(max(values), 4),
        "mean": round(statistics.fmean(values), 4),
    }


def host_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_cpu_pct(a: tuple[int, int], b: tuple[int, int]) -> float:
    """The whole machine's CPU between two host_busy() samples, percent of one core
    (all cores counted: 200 % is a 2-core machine fully busy)."""
    return 100.0 * (b[0] - a[0]) / max(1, b[1] - a[1]) * (os.cpu_count() or 1)


def version_of(argv: list[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(pattern, cp.stdout + cp.stderr)
    return m.group(1) if m else "?"


def machine() -> dict[str, Any]:
    """The machine and software versions, for the report."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    grpc_version = "?"
    try:
        import grpc

        grpc_version = grpc.__version__
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc_version,
        "gobgpd": version_of(["gobgpd", "--version"]),
        "frr": version_of(["/usr/lib/frr/bgpd", "--version"]),
        "haproxy": version_of(["haproxy", "-v"]),
        "exabgp": version_of(["exabgp", "--version"]),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# ------------------------------------------------------------------ one N


class LbRun:
    """The LB side for one N: VIPs on lo, HAProxy answering them, the emulator serving
    the same haproxy.cfg, and (started on demand) announcer or ExaBGP."""

    def __init__(self, lab: BenchLab, watch: RouteWatch, n: int, s: Settings) -> None:
        assert lab.tmp is not None
        self.lab, self.watch, self.n, self.s = lab, watch, n, s
        self.dir = lab.tmp / f"n{n}"
        self.vips = gen.vips(n)
        self.prefixes = {f"{v}/128" for v in self.vips}
        self.acl = self.dir / "failed.acl"
        self.runtime = HaproxyRuntime([self.dir / f"haproxy-{i}.sock" for i in range(SHARDS)])
        self.cfg = self.dir / "haproxy.cfg"
        self.announcer: Proc | None = None
        self.log_start = 0

    def __enter__(self) -> LbRun:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.acl.write_text("")
        self.cfg.write_text(gen.served_cfg(self.vips, acl_file=self.acl))
        self.lab.local_vips(str(gen.VIP_NET))
        for i, sock in enumerate(self.runtime.paths):
            cfg = self.dir / f"responder-{i}.cfg"
            cfg.write_text(
                gen.responder_cfg(acl_file=self.acl, stats_socket=sock, maxconn=RESPONDER_MAXCONN)
            )
            self.lab.start(LB, ["haproxy", "-W", "-db", "-f", str(cfg)], name=f"haproxy-{i}")
        wait_until(
            lambda: (
                self._http(self.vips[-1], gen.MONITOR_URI) == "200"
                and all(p.exists() for p in self.runtime.paths)
            ),
            timeout=30,
            interval=0.1,
            what=f"HAProxy answering for {self.n} VIPs",
        )
        self.lab.start(
            LB,
            [sys.executable, str(EMULATOR), "--config", str(self.cfg), "--api-version", "3",
             "--listen", "127.0.0.1:5555"],
            name="dpapi",
        )  # fmt: skip
        wait_until(
            lambda: self._http("127.0.0.1:5555", "/v3/info") in ("200", "401"),
            timeout=30,
            interval=0.1,
            what="DataPlaneAPI emulator",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("announcer", "dpapi", *(f"haproxy-{i}" for i in range(SHARDS))):
            if name in self.lab.procs.procs:
                self.lab.stop(name, timeout=15)
        self.lab.unlocal_vips(str(gen.VIP_NET))

    def _http(self, host: str, path: str) -> str:
        url_host = f"[{host}]" if host.count(":") > 1 else host
        cp = self.lab.exec(
            LB,
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
             f"http://{url_host}{path}"],
            check=False,
        )  # fmt: skip
        return cp.stdout.strip()

    def haproxy_pids(self) -> list[int]:
        return [p for i in range(SHARDS) for p in descendants(self.lab.proc(f"haproxy-{i}").pid)]

    # ---- announcer

    def start_announcer(self) -> float:
        """Start announcer; returns the start time (unix)."""
        path = self.dir / "announcer.yaml"
        path.write_text(
            gen.announcer_yaml(
                interval=self.s.interval,
                fast_interval=self.s.fast_interval,
                rise=self.s.rise,
                fall=self.s.fall,
                timeout=self.s.timeout,
                run_dir=self.dir,
                gobgp_address=f"unix://{self.lab.api_socket(LB)}",
                event_loop=self.s.event_loop,
            )
        )
        env = dict(os.environ, ANNOUNCER_DPAPI_PASSWORD=gen.PASSWORD, PYTHONPATH=str(REPO))
        if "--memory-report" in self.s.variant:
            report = self.s.out_dir / f"memory-n{self.n}-{self.s.stamp}.txt"
            env.setdefault("ANNOUNCER_MEMORY_REPORT", str(report))
        if "--gc-report" in self.s.variant:
            report = self.s.out_dir / f"gc-n{self.n}-{self.s.stamp}.txt"
            env.setdefault("ANNOUNCER_GC_REPORT", str(report))
        assert self.lab.tmp is not None
        log = self.lab.tmp / LB / "announcer.log"  # where Lab.start appends its output
        self.log_start = log.stat().st_size if log.exists() else 0
        t0 = time.time()
        switches = [*self.s.variant, *([] if self.s.keepalive else ["--no-keepalive"])]
        module = ["tests.bench.announcer_variant", *switches] if switches else ["announcer"]
        self.announcer = self.lab.start(
            LB, [sys.executable, "-m", *module, "run", "-c", str(path)], name="announcer", env=env
        )
        return t0

    def announcer_log(self) -> str:
        """What the running (or last) announcer logged: the lab appends every run of
        a process name to one file, so earlier runs are cut off."""
        assert self.announcer is not None
        with open(self.announcer.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def stop_announcer(self) -> dict[str, Any]:
        """SIGTERM (announcer withdraws everything); how long until the router is empty."""
        t0 = time.time()
        self.lab.stop("announcer", timeout=30)
        gone = self.watch.wait_none(self.prefixes, timeout=60)
        return {"withdraw_all_on_stop_s": round(gone - t0, 3) if gone else None}


# ------------------------------------------------------------------ phases


def start_py_spy(pid: int, out: Path, duration: float) -> subprocess.Popen[bytes] | None:
    """py-spy sampling `pid` 100 times a second without pausing it, collapsed stacks to `out`."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("   (py-spy not installed: no profile)", flush=True)
        return None
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "100",
         "--nonblocking", "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    """Wait for py-spy's own duration; SIGINT makes it write what it has and exit."""
    try:
        spy.wait(timeout=5)
    except subprocess.TimeoutExpired:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def steady_state(
    run_: LbRun,
    pids: Callable[[], list[int]],
    *,
    children: bool = False,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """CPU, memory and checks/s over the steady-state window, and flaps seen in it."""
    s = run_.s
    time.sleep(s.settle)
    flaps_before = sum(1 for p in run_.prefixes if p in run_.watch.gone)
    ha = run_.haproxy_pids()
    watched = pids()
    spy = start_py_spy(watched[0], profile_to, s.window) if profile_to is not None else None
    req0, host0 = run_.runtime.requests(), host_busy()
    a, h0 = cpu_sample(watched, children=children), cpu_sample(ha)
    m0 = cpu_sample(watched[:1], children=children)
    k0 = sys_ticks(watched[0])
    time.sleep(s.window)
    b, h1 = cpu_sample(watched, children=children), cpu_sample(ha)
    m1 = cpu_sample(watched[:1], children=children)
    k1 = sys_ticks(watched[0])
    req1, host1 = run_.runtime.requests(), host_busy()
    if spy is not None:
        stop_py_spy(spy)
    cpu = cpu_percent(a, b)
    flaps = sum(1 for p in run_.prefixes if p in run_.watch.gone) - flaps_before
    return {
        "window_s": s.window,
        "cpu_pct_of_one_core": round(cpu, 1),
        "cpu_pct_main_process": round(cpu_percent(m0, m1), 1),
        "cpu_pct_main_process_kernel": round(100.0 * (k1 - k0) / CLK_TCK / (m1.at - m0.at), 1),
        "rss_mib": round(sum(rss_mib(p) for p in watched), 1),
        "rss_mib_main_process": round(rss_mib(watched[0]), 1),
        "pss_mib": round(sum(pss_mib(p) for p in watched), 1),
        "peak_rss_mib": round(max(hwm_mib(p) for p in watched), 1),
        "processes": len(watched),
        "checks_per_s": round((req1 - req0) / (b.at - a.at), 1),
        "checks_per_s_expected": round(run_.n / s.interval, 1),
        "haproxy_cpu_pct": round(cpu_percent(h0, h1), 1),
        "machine_cpu_pct_all": round(machine_cpu_pct(host0, host1), 1),
        "routes_at_router_end": run_.watch.count(run_.prefixes),
        "routes_withdrawn_in_window": flaps,
    }


def loop_in_use(log: str) -> str | None:
    """The event loop announcer says it runs on ("uvloop 0.23.0", "asyncio")."""
    m = re.search(r"event loop: (.+?) \(", log)
    return m.group(1) if m else None


def scale(run_: LbRun, profile_to: Path | None) -> dict[str, Any]:
    """Start announcer with N VIPs: time to all N at the router, then steady state."""
    n = run_.n
    if run_.watch.count(run_.prefixes):
        raise LabError("router still has benchmark routes before the start")
    ha = run_.haproxy_pids()
    host0, h0 = host_busy(), cpu_sample(ha)
    t0 = run_.start_announcer()
    spy = None
    if profile_to is not None:
        time.sleep(0.3)  # py-spy needs an initialised interpreter to attach to
        assert run_.announcer is not None
        startup = profile_to.with_name(profile_to.name.replace("profile-", "profile-startup-"))
        spy = start_py_spy(run_.announcer.pid, startup, 120)
    try:
        t_all, start_cpu, start_sys = wait_started(run_)
        host1, h1 = host_busy(), cpu_sample(ha)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            stop_py_spy(spy)
    log = run_.announcer_log()
    t_disc = first_log_time(log, "first discovery:")
    t_sync = first_log_time(log, "first sync with gobgpd done")
    assert run_.announcer is not None
    pid = run_.announcer.pid
    gobgpd = run_.lab.proc("lb1-gobgpd").pid
    out: dict[str, Any] = {
        "n": n,
        "start_to_all_routes_s": round(t_all - t0, 3),
        "start_to_first_discovery_s": round(t_disc - t0, 3) if t_disc else None,
        "start_to_first_sync_s": round(t_sync - t0, 3) if t_sync else None,
        "start_cpu_s": round(start_cpu, 2),  # announcer's CPU from its start to all routes
        "start_cpu_kernel_s": round(start_sys, 2),
        # The whole machine over the start (all cores, 100 % = one core busy): with 2
        # cores, near 200 % means a second core would not have helped announcer.
        "start_machine_cpu_pct": round(machine_cpu_pct(host0, host1), 1),
        "start_haproxy_cpu_pct": round(cpu_percent(h0, h1), 1),
        "first_sync_to_all_routes_s": round(t_all - t_sync, 3) if t_sync else None,
        "rise_floor_s": round(run_.s.fast_interval * (run_.s.rise - 1), 3),
        "event_loop": loop_in_use(log),
        # When each route reached the router, seconds after the start (for the plots).
        "arrivals_s": arrivals(run_, t0),
    }
    g0 = cpu_sample([gobgpd])
    # announcer and its fate-sharing keeper (a child process).
    steady = steady_state(run_, lambda: descendants(pid), profile_to=profile_to)
    g1 = cpu_sample([gobgpd])
    out["announcer"] = steady
    out["gobgpd_rss_mib"] = round(rss_mib(gobgpd), 1)
    out["gobgpd_cpu_pct"] = round(cpu_percent(g0, g1), 1)
    out["log_lines"] = log.count("\n")
    out["startup"] = startup_timeline(log, t0, t_all)
    if run_.s.keep_logs:
        kept = run_.s.out_dir / f"announcer-n{n}-{run_.s.stamp}.log"
        kept.write_text(log)
        out["log"] = str(kept)
    return out


def wait_started(run_: LbRun) -> tuple[float, float, float]:
    """Wait for all N routes after announcer's start: when the last one arrived, and
    announcer's CPU and kernel seconds (main process) read right then, which against
    the wall time say whether the start waited for CPU or for time. LabError with
    the log's tail if they did not all come."""
    n = run_.n
    t_all = run_.watch.wait_all(run_.prefixes, timeout=60 + n / 50)
    assert run_.announcer is not None
    pid = run_.announcer.pid
    cpu, kernel = cpu_ticks(pid) / CLK_TCK, sys_ticks(pid) / CLK_TCK
    if t_all is None:
        have = run_.watch.count(run_.prefixes)
        log = run_.announcer_log()
        raise LabError(f"only {have} of {n} routes reached the router\n{log[-3000:]}")
    return t_all, cpu, kernel


def start_again(run_: LbRun) -> dict[str, Any]:
    """One more timed start, as the first: gobgpd restarted (empty RIB, peers
    admin-down), announcer started, timed to the last route, stopped again."""
    run_.lab.restart_gobgpd()
    # As before a run's first start (the lab's setup takes this long): the router's
    # idle hold after the stopped gobgpd's Cease (2 s, FRR) is over.
    time.sleep(3.0)
    t0 = run_.start_announcer()
    t_all, start_cpu, _ = wait_started(run_)
    t_disc = first_log_time(run_.announcer_log(), "first discovery:")
    out = {
        "start_to_all_routes_s": round(t_all - t0, 3),
        "start_to_first_discovery_s": round(t_disc - t0, 3) if t_disc else None,
        "start_cpu_s": round(start_cpu, 2),
    }
    out.update(run_.stop_announcer())
    return out


def arrivals(run_: LbRun, t0: float) -> list[float]:
    """Seconds from t0 to each of the run's routes at the router (millisecond steps)."""
    present = run_.watch.present
    return sorted(round(present[p] - t0, 3) for p in run_.prefixes if p in present)


def startup_timeline(log: str, t0: float, t_all: float) -> dict[str, Any]:
    """From announcer's log: how many VIPs were UP after each second, and the check
    failures (anything that went DOWN) before every route had reached the router."""
    up: list[float] = []
    down = 0
    # A start with many VIPs logs its first verdicts as a progress line a second
    # ("start-up: X of N VIPs have a verdict (U UP, D DOWN) ..."), later ones per VIP.
    progress: list[tuple[float, int, int]] = []
    for line in log.splitlines():
        if not line[:4].isdigit():
            continue
        t = log_time(line)
        if t is None or not t0 - 0.001 <= t <= t_all:
            continue
        if m := PROGRESS.search(line):
            u, d = (m[1], m[2]) if m[1] is not None else (m[3], m[4])
            progress.append((t - t0, int(u), int(d)))
        elif " VIP " not in line:
            continue
        elif "-> UP" in line:
            up.append(t - t0)
        elif "-> DOWN" in line:
            down += 1
    last = max([*up, *(p[0] for p in progress)], default=0.0)
    seconds = int(last) + 1

    def up_by(k: int) -> int:
        # Progress lines carry totals; with few VIPs each first verdict has its line.
        counted = max((u for at, u, _ in progress if at < k), default=0)
        return max(counted, sum(1 for u in up if u < k))

    return {
        "vips_up_after_second": [up_by(k) for k in range(1, seconds + 1)],
        "vips_down_before_all_routes": max(down, max((d for _, _, d in progress), default=0)),
    }


def failover(run_: LbRun, samples: int, bound: float, down_needle: str | None) -> dict[str, Any]:
    """Fail frontends one by one (staggered, so checks are hit at every phase), time
    until each route leaves the router; then heal them all and time the way back.

    `down_needle` (announcer only): the log line that marks the DOWN verdict, so the
    part after the verdict (reconcile + gobgpd + BGP + zebra) is measured on its own.
    """
    rng = random.Random(5)
    picks = rng.sample(run_.vips, samples)
    failed_at: dict[str, float] = {}
    for vip in picks:
        failed_at[vip] = time.time()
        run_.runtime.fail(run_.acl, vip)
        time.sleep(rng.uniform(0.2, 0.6))
    prefixes = {f"{v}/128" for v in picks}
    if run_.watch.wait_none(prefixes, timeout=bound + 30) is None:
        left = [p for p in prefixes if p in run_.watch.present]
        raise LabError(f"failed VIPs still at the router after {bound + 30:.0f}s: {left[:5]}")
    latency = [run_.watch.gone[f"{v}/128"] - failed_at[v] for v in picks]
    pipeline: list[float] = []
    decided: list[float] = []
    sent: list[float] = []
    if down_needle is not None:
        log = run_.announcer_log()
        for v in picks:
            gone = run_.watch.gone[f"{v}/128"]
            t_down = first_log_time(log, down_needle.format(vip=v), after=failed_at[v])
            t_plan = first_log_time(log, f"withdraw {v}/128", after=failed_at[v])
            if t_down is not None:
                pipeline.append(gone - t_down)
            if t_down is not None and t_plan is not None:
                decided.append(t_plan - t_down)
            if t_plan is not None:
                sent.append(gone - t_plan)
    healed_at = time.time()
    run_.runtime.heal_all(run_.acl)
    t_back = run_.watch.wait_all(prefixes, timeout=60)
    back = [run_.watch.present[p] - healed_at for p in prefixes] if t_back else []
    return {
        "n": run_.n,
        "samples": samples,
        "bound_fall_x_interval_s": bound,
        "latency_s": summary(latency),
        "latencies_s": [round(x, 4) for x in latency],
        "excess_over_bound_s": summary([x - bound for x in latency]),
        "verdict_to_router_s": summary(pipeline),
        # announcer's log has millisecond stamps: DOWN verdict -> the withdrawal planned
        # (reconcile woke up), then planned -> gone from the router's FIB (the gRPC
        # call, gobgpd, the BGP UPDATE, FRR's bgpd and zebra).
        "verdict_to_withdraw_planned_s": summary(decided),
        "withdraw_planned_to_router_s": summary(sent),
        "recovery_s": summary(back),
        "other_routes_withdrawn": sum(
            1 for p in run_.prefixes - prefixes if p not in run_.watch.present
        ),
    }


def resync(run_: LbRun, rounds: int) -> dict[str, Any]:
    """gobgpd stopped and started again: time from its start until the router has all N.

    The router dials the (passive) gobgpd on its own schedule from the moment the
    session dropped (FRR: after its 2 s idle hold, then once a second, `timers connect
    1`), so how long a restarted gobgpd waits for its session depends on when it came
    back. Round k of n starts gobgpd k/n s later after the routes left the router, so
    the rounds cover one second of that schedule evenly instead of measuring one
    instant n times (until 2026-12-01 every round started at the same one).
    """
    lab = run_.lab
    times, api = [], []
    enabled: list[float | None] = []  # per round; None: not found in the log
    sessions: list[float | None] = []
    last: list[float] = []
    for k in range(rounds):
        lab.stop("lb1-gobgpd", timeout=10)
        if run_.watch.wait_none(run_.prefixes, timeout=60) is None:
            raise LabError("router kept routes after gobgpd stopped")
        time.sleep(k / rounds)  # the phase of the router's connect timer (above)
        t0 = time.time()
        lab.start_gobgpd()
        t_api = time.time()
        t_all = run_.watch.wait_all(run_.prefixes, timeout=120)
        if t_all is None:
            have = run_.watch.count(run_.prefixes)
            raise LabError(f"after a gobgpd restart only {have} of {run_.n} routes came back")
        times.append(t_all - t0)
        last = arrivals(run_, t0)
        api.append(t_api - t0)
        t_enabled, up = peer_enabled_and_session_up(run_, t0)
        enabled.append(None if t_enabled is None else t_enabled - t0)
        sessions.append(None if up is None else up - t0)
        time.sleep(2.0)
    return {
        "n": run_.n,
        "rounds": rounds,
        "restart_to_all_routes_s": summary(times),
        # Per round, in phase order (0, 1/n, ... s after the router dropped the session).
        "each_round": [
            {
                "all_routes_s": round(t, 3),
                "peer_enabled_s": round(e, 3) if e is not None else None,
                "session_up_s": round(u, 3) if u is not None else None,
            }
            for t, e, u in zip(times, enabled, sessions, strict=True)
        ],
        "restart_to_gobgpd_api_s": summary(api),
        "restart_to_peer_enabled_s": summary([e for e in enabled if e is not None]),
        "restart_to_session_up_s": summary([u for u in sessions if u is not None]),
        "arrivals_s": last,  # the last round's, for the plot
    }


def resync_crash(run_: LbRun, delays: tuple[float, ...]) -> dict[str, Any]:
    """gobgpd killed (SIGKILL: a panic, the OOM killer) and started again `delay` later,
    as systemd's Restart= does: time from the kill until the router has all N again.

    A killed gobgpd sends no NOTIFICATION, its connection is only closed, and FRR then
    waits its idle hold of 1 s before it dials again; after a NOTIFICATION (a stopped
    gobgpd's Cease, resync()) it waits 2 s (bgpd's bgp_stop_with_error doubles it).
    A gobgpd that has not enabled its peer by the time the router dials refuses that
    connection, and the router tries again a second later (`timers connect 1`).
    """
    lab = run_.lab
    rounds: list[dict[str, float | None]] = []
    for delay in delays:
        t_kill = time.time()
        lab.signal("lb1-gobgpd", signal.SIGKILL)
        lab.stop("lb1-gobgpd", timeout=10)  # reaps it
        time.sleep(max(0.0, t_kill + delay - time.time()))
        t0 = time.time()
        lab.start_gobgpd()
        t_all = run_.watch.wait_all(run_.prefixes, timeout=120, since=t_kill)
        if t_all is None:
            have = run_.watch.count(run_.prefixes)
            raise LabError(f"after a gobgpd crash only {have} of {run_.n} routes came back")
        gone = [run_.watch.gone.get(p, 0.0) for p in run_.prefixes]
        t_enabled, up = peer_enabled_and_session_up(run_, t0)
        rounds.append(
            {
                "restart_delay_s": delay,
                "kill_to_all_removed_s": round(max(gone) - t_kill, 3),
                "started_after_kill_s": round(t0 - t_kill, 3),
                "peer_enabled_after_kill_s": None
                if t_enabled is None
                else round(t_enabled - t_kill, 3),
                "session_up_after_kill_s": None if up is None else round(up - t_kill, 3),
                "all_routes_after_kill_s": round(t_all - t_kill, 3),
                "all_routes_after_start_s": round(t_all - t0, 3),
            }
        )
        time.sleep(2.0)
    return {"n": run_.n, "each_round": rounds}


def peer_enabled_and_session_up(run_: LbRun, t0: float) -> tuple[float | None, float | None]:
    """After a gobgpd (re)start at `t0`: when announcer enabled the peer (its log) and
    when the router had the session up (bgpd's log); None where a log has no line."""
    enabled = first_log_time(run_.announcer_log(), "enabled: gobgpd has the complete", t0)
    return enabled, frr_session_up_time(run_.lab, after=t0)


def frr_session_up_time(lab: BenchLab, after: float) -> float | None:
    """When bgpd logged the session to lb1 Up (its log has millisecond timestamps)."""
    log = lab.proc(f"{ROUTER}-bgpd").log_path.read_text(errors="replace")
    for line in log.splitlines():
        if "ADJCHANGE" in line and LB_ADDR in line and " Up" in line:
            try:
                t = dt.datetime.strptime(line[:23], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            except ValueError:
                continue
            if t >= after:
                return t
    return None


def exabgp(lab: BenchLab, watch: RouteWatch, s: Settings) -> dict[str, Any]:
    """The old way at N VIPs: ExaBGP plus one healthcheck process (and curl) per VIP."""
    lab.stop("lb1-gobgpd", timeout=10)  # ExaBGP is the BGP speaker now
    try:
        with LbRun(lab, watch, s.exabgp_n, s) as run_:
            conf = run_.dir / "exabgp.conf"
            conf.write_text(
                gen.exabgp_conf(
                    run_.vips,
                    interval=s.interval,
                    fast_interval=s.failover_fast_interval,
                    rise=s.rise,
                    fall=s.fall,
                    timeout=s.timeout,
                    router=ROUTER_ADDR,
                    local=LB_ADDR,
                )
            )
            env = dict(os.environ)
            env.update(
                {
                    "exabgp.daemon.user": "root",
                    "exabgp.daemon.drop": "false",
                    "exabgp.daemon.daemonize": "false",
                    "exabgp.api.cli": "false",
                    "exabgp.log.destination": "stdout",
                    "exabgp.log.processes": "false",
                    "exabgp.log.network": "false",
                    "exabgp.tcp.bind": "",
                }
            )
            t0 = time.time()
            proc = lab.start(LB, ["exabgp", str(conf)], name="exabgp", env=env)
            t_all = watch.wait_all(run_.prefixes, timeout=120 + s.exabgp_n)
            if t_all is None:
                raise LabError(
                    f"ExaBGP: {watch.count(run_.prefixes)} of {s.exabgp_n} routes\n"
                    f"{proc.log_tail(30)}"
                )
            out: dict[str, Any] = {"n": s.exabgp_n, "start_to_all_routes_s": round(t_all - t0, 3)}
            # exabgp and its healthcheck children; curl and sh are counted when their
            # parent reaps them (cutime/cstime), so `children=True`.
            tree = descendants(proc.pid)
            out["steady"] = steady_state(run_, lambda: tree, children=True)
            bound = s.fall * s.interval
            out["failover"] = failover(run_, s.exabgp_failover_samples, bound, None)
            lab.stop("exabgp", timeout=10)
            leftovers = [p for p in tree if Path(f"/proc/{p}").exists()]
            for p in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGTERM)
            watch.wait_none(run_.prefixes, timeout=30)
            return out
    finally:
        if "lb1-gobgpd" not in lab.procs.procs:
            lab.start_gobgpd()


# ------------------------------------------------------------------ report


def table(results: dict[str, Any]) -> str:
    """The human summary of a results document."""
    lines = []

    def row(*cols: object) -> None:
        lines.append("| " + " | ".join(str(c) for c in cols) + " |")

    def fmt(v: object, unit: str = "") -> str:
        return "-" if v is None else f"{v}{unit}"

    if results.get("scale"):
        lines.append("Scale (announcer, one LB, interval 1 s):")
        row("N", "start->all at router", "first sync", "CPU % core", "RSS MiB", "checks/s",
            "gobgpd RSS MiB", "withdrawn in window")  # fmt: skip
        row(*["---"] * 8)
        for r in results["scale"]:
            a = r["announcer"]
            row(r["n"], fmt(r["start_to_all_routes_s"], " s"),
                fmt(r["start_to_first_sync_s"], " s"), a["cpu_pct_of_one_core"], a["rss_mib"],
                f"{a['checks_per_s']} / {a['checks_per_s_expected']}", r["gobgpd_rss_mib"],
                a["routes_withdrawn_in_window"])  # fmt: skip
    for key, title in (("failover", "Failover (announcer)"), ("exabgp", "ExaBGP")):
        f = results.get(key)
        if key == "exabgp" and f:
            lines.append("")
            st = f["steady"]
            lines.append(
                f"ExaBGP healthcheck, N={f['n']}: start->all {f['start_to_all_routes_s']} s, "
                f"CPU {st['cpu_pct_of_one_core']} % of a core, RSS {st['rss_mib']} MiB "
                f"(PSS {st['pss_mib']} MiB, {st['processes']} processes), "
                f"checks/s {st['checks_per_s']} / {st['checks_per_s_expected']}"
            )
            f = f["failover"]
            title = "Failover (ExaBGP)"
        if not f:
            continue
        lines.append("")
        lines.append(
            f"{title}, N={f['n']}, {f['samples']} VIPs, bound {f['bound_fall_x_interval_s']} s:"
        )
        row("", "p50", "p99", "max")
        row("---", "---", "---", "---")
        for label, k in (("fault -> gone at router", "latency_s"),
                         ("excess over fall x interval", "excess_over_bound_s"),
                         ("DOWN verdict -> gone", "verdict_to_router_s"),
                         ("  of which: withdrawal planned -> gone", "withdraw_planned_to_router_s"),
                         ("heal -> back at router", "recovery_s")):  # fmt: skip
            v = f[k]
            if v["count"]:
                row(label, fmt(v["p50"], " s"), fmt(v["p99"], " s"), fmt(v["max"], " s"))
    r = results.get("resync")
    if r:
        lines.append("")
        v = r["restart_to_all_routes_s"]
        sess = r["restart_to_session_up_s"]
        lines.append(
            f"Re-sync, N={r['n']}, {r['rounds']} gobgpd restarts: all routes back after "
            f"p50 {v['p50']} s, max {v['max']} s (BGP session up after p50 {sess['p50']} s)"
        )
        for i, e in enumerate(r.get("each_round", [])):
            lines.append(
                f"  round {i + 1} (phase {i}/{r['rounds']} s): "
                f"peer enabled {e['peer_enabled_s']} s, session up {e['session_up_s']} s, "
                f"all routes {e['all_routes_s']} s"
            )
    r = results.get("resync_crash")
    if r:
        lines.append("")
        lines.append(f"Re-sync, N={r['n']}, gobgpd killed and started again after a delay:")
        for e in r["each_round"]:
            lines.append(
                f"  started {e['started_after_kill_s']} s after the kill: "
                f"routes gone {e['kill_to_all_removed_s']} s, "
                f"peer enabled {e['peer_enabled_after_kill_s']} s, "
                f"session up {e['session_up_after_kill_s']} s, "
                f"all routes back {e['all_routes_after_kill_s']} s after the kill "
                f"({e['all_routes_after_start_s']} s after the start)"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def run_bench(s: Settings, out_dir: Path) -> tuple[dict[str, Any], Path]:
    """Run the selected phases; returns the results and the JSON file written."""
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": s.quick,
        "settings": asdict(s),
        "machine": machine(),
        "scale": [],
        "failover": None,
        "resync": None,
        "resync_crash": None,
        "exabgp": None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    s.out_dir, s.stamp = out_dir, stamp
    path = out_dir / f"bench-{stamp}{'-quick' if s.quick else ''}.json"
    ns = sorted(set(s.scale if "scale" in s.only else []))
    if "failover" in s.only and s.failover_n not in ns:
        ns.append(s.failover_n)
    if "resync" in s.only and s.resync_n not in ns:
        ns.append(s.resync_n)
    with BenchLab() as lab:
        watch = RouteWatch(lab)
        try:
            for n in sorted(ns):
                print(f"== N={n}", flush=True)
                lab.restart_gobgpd()  # each N starts like a boot: empty RIB, peer admin-down
                with LbRun(lab, watch, n, s) as run_:
                    prof = out_dir / f"profile-n{n}-{stamp}.txt" if s.profile else None
                    r = scale(run_, prof)
                    if prof is not None and prof.exists():
                        r["profile"] = str(prof)
                    if "scale" in s.only and n in s.scale:
                        results["scale"].append(r)
                        cpu = r["announcer"]["cpu_pct_of_one_core"]
                        took = r["start_to_all_routes_s"]
                        print(
                            f"   all {n} at the router after {took} s (announcer's CPU until "
                            f"then {r['start_cpu_s']} s, the machine's "
                            f"{r['start_machine_cpu_pct']} % of one core, HAProxy's "
                            f"{r['start_haproxy_cpu_pct']} %); {cpu} % CPU",
                            flush=True,
                        )
                    if "resync" in s.only and n == s.resync_n:
                        results["resync"] = resync(run_, s.resync_rounds)
                        results["resync_crash"] = resync_crash(run_, s.crash_delays)
                        if s.keep_logs:  # the scale run's log, now with the re-syncs
                            Path(r["log"]).write_text(run_.announcer_log())
                    r.update(run_.stop_announcer())
                    if "scale" in s.only and n in s.scale and s.starts > 1:
                        r["more_starts"] = []
                        for _ in range(s.starts - 1):
                            again = start_again(run_)
                            r["more_starts"].append(again)
                            print(
                                f"   started again: all {n} at the router after "
                                f"{again['start_to_all_routes_s']} s (CPU "
                                f"{again['start_cpu_s']} s)",
                                flush=True,
                            )
                    if "failover" in s.only and n == s.failover_n:
                        run_.s = replace(s, fast_interval=s.failover_fast_interval)
                        run_.start_announcer()
                        if run_.watch.wait_all(run_.prefixes, timeout=60 + n / 50) is None:
                            raise LabError(f"failover phase: not all {n} routes came up")
                        time.sleep(s.settle)
                        bound = s.fall * s.interval
                        results["failover"] = failover(
                            run_, min(s.failover_samples, n), bound, "VIP {vip}: FALLING -> DOWN"
                        )
                        run_.stop_announcer()
                        run_.s = s
                _write(path, results)
            if "exabgp" in s.only:
                print(f"== ExaBGP, N={s.exabgp_n}", flush=True)
                results["exabgp"] = exabgp(lab, watch, s)
            results["routewatch_overflows"] = watch.overflows
        finally:
            watch.stop()
    results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # Pictures beside the JSON, in a directory named like it.
    pictures = plots.write_all(results, path.with_suffix(""))
    results["plots"] = [str(p) for p in pictures]
    _write(path, results)
    return results, path


def _write(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small N and short windows (CI smoke)")
    p.add_argument("--only", nargs="+", choices=["scale", "failover", "resync", "exabgp"])
    p.add_argument("--scale", nargs="+", type=int, metavar="N", help="VIP counts to scale to")
    p.add_argument("--failover-n", type=int)
    p.add_argument("--resync-n", type=int)
    p.add_argument("--exabgp-n", type=int)
    p.add_argument(
        "--starts", type=int, help="timed starts per N (gobgpd restarted before each; 1, --quick 2)"
    )
    p.add_argument("--window", type=float, help="steady-state window, seconds")
    p.add_argument("--settle", type=float, help="wait before the window, seconds")
    p.add_argument("--profile", action="store_true", help="py-spy the announcer in each window")
    p.add_argument("--keep-logs", action="store_true", help="keep announcer's logs")
    p.add_argument(
        "--variant",
        nargs="+",
        action="extend",  # --variant=--a --variant=--b: both
        default=[],
        choices=[s for s in SWITCHES if s != "--no-keepalive"],  # that one has its own flag
        help="experimental announcer changes (tests/bench/announcer_variant.py)",
    )
    p.add_argument(
        "--event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="announcer's service.event_loop (A/B of uvloop and asyncio's loop)",
    )
    p.add_argument(
        "--no-keepalive", action="store_true", help="announcer probes without keep-alive (A/B)"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 77
    s = Settings.quick_settings() if args.quick else Settings()
    for key in ("only", "scale", "failover_n", "resync_n", "exabgp_n", "window", "settle"):
        value = getattr(args, key)
        if value is not None:
            setattr(s, key, value)
    s.profile = args.profile
    s.keepalive = not args.no_keepalive
    s.keep_logs = args.keep_logs
    s.variant = args.variant
    s.event_loop = args.event_loop
    if args.starts is not None:
        if args.starts < 1:
            print("bench: --starts must be at least 1", file=sys.stderr)
            return 2
        s.starts = args.starts
    results, path = run_bench(s, args.out)
    print()
    print(table(results))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
