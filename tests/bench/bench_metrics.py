"""Micro-benchmark: how long a /metrics scrape blocks the event loop (not collected by pytest).

    .venv/bin/python tests/bench/bench_metrics.py [--vips 2000 10000] [--scrapes 20]
        [--burst 64] [--bursts 5]

A real Service with fake adapters (tests/support/fakes.py) holds `--vips` VIPs,
all UP. A probe of the loop wakes every millisecond and records how late it woke:
that lateness is the time the loop could run nothing else (no check, no timer).
Each size is scraped two ways, over loopback TCP by a child process (so that the
client's own work does not compete with the loop for the GIL):

* before: announcer/metrics.py as of `--before` (a git revision; the default is
  the last one before issue 11): the whole page rendered on the loop, per request;
* after: `metrics.serve` (snapshot on the loop, text in a thread, one render per
  `min_render_interval` shared by every scrape in it).

Sequential scrapes are spaced by more than the interval, so each one renders; a
burst is `--burst` connections at once. Reported: the loop's longest stall per
scrape (median and worst), the worst stall during the bursts, and the time from
the first request to the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from announcer import metrics as m
from announcer import status
from announcer.health import State
from announcer.model import Discovery
from announcer.service import Service
from tests.support import fakes as ts

REPO = Path(__file__).resolve().parents[2]


class LoopProbe:
    """Wakes every millisecond and records (when, how late) it woke."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            now = loop.time()
            self.samples.append((now, now - due))

    def worst(self, start: float, end: float) -> float:
        """The longest stall seen between `start` and `end` (time.monotonic)."""
        # A stall is seen when it ends: look a little past `end`.
        return max((lag for t, lag in self.samples if start <= t <= end + 0.05), default=0.0)


def scrape(port: int) -> int:
    """GET /metrics; returns the bytes received."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        n = 0
        while chunk := s.recv(1 << 20):
            n += len(chunk)
    return n


def client(port: int, count: int, parallel: int, gap: float) -> None:
    """(In the child) `count` rounds of `parallel` scrapes at once, `gap` s apart; prints
    the [start, end] of each round (time.monotonic: the same clock in both processes)."""
    rounds = []
    for _ in range(count):
        start = time.monotonic()
        threads = [threading.Thread(target=scrape, args=(port,)) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rounds.append((start, time.monotonic()))
        time.sleep(gap)
    print(json.dumps({"rounds": rounds, "size": scrape(port)}))


def old_metrics(rev: str) -> ModuleType:
    """announcer/metrics.py as of git revision `rev`, imported beside the current one."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:announcer/metrics.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path("/tmp") / f"announcer_metrics_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"announcer.metrics_{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Source(ts.FakeSource):
    """DataPlaneAPI as the service sees it (async, whichever the unit tests' fake is)."""

    async def configuration_version(self) -> int:  # type: ignore[override]
        return self.version

    async def discover(self) -> Discovery:  # type: ignore[override]
        return Discovery(self.version, self.frontends)


async def service(n: int) -> tuple[Service, asyncio.Event, asyncio.Task[None]]:
    """A Service with `n` VIPs (10.0.0.0/16), all UP."""
    ts.ALLOW = (ipaddress.ip_network("10.0.0.0/16"),)
    addresses = [str(ipaddress.ip_address("10.0.0.1") + i) for i in range(n)]
    source = Source(*(ts.frontend(f"fe{i}", a) for i, a in enumerate(addresses)))
    cfg = ts.config(
        allowed_prefixes=["10.0.0.0/16"],
        health={"interval": 1.0, "fast_interval": 0.1, "timeout": 0.5, "rise": 1, "fall": 2},
        service={"startup_grace": 0.5},
    )
    svc = Service(cfg, source=source, table=ts.FakeTable(), prober=ts.FakeProber())
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await ts.until(
        lambda: len(svc.vips) == n and all(v.state is State.UP for v in svc.vips.values()),
        timeout=120,
    )
    return svc, stop, task


async def run_client(port: int, count: int, parallel: int, gap: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        str(port),
        str(count),
        str(parallel),
        str(gap),
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    result: dict[str, Any] = json.loads(out)
    return result


async def measure(
    label: str, port: int, probe: LoopProbe, args: argparse.Namespace, gap: float
) -> None:
    one = await run_client(port, args.scrapes, 1, gap)
    burst = await run_client(port, args.bursts, args.burst, gap)
    await asyncio.sleep(0.1)  # a stall is seen when it ends
    stalls = [probe.worst(a, b) for a, b in one["rounds"]]
    burst_stall = max(probe.worst(a, b) for a, b in burst["rounds"])
    burst_time = max(b - a for a, b in burst["rounds"])
    print(
        f"  {label:6} page {one['size'] / 1e6:.2f} MB | loop stall per scrape: median "
        f"{statistics.median(stalls) * 1e3:6.1f} ms, worst {max(stalls) * 1e3:6.1f} ms | "
        f"burst of {args.burst}: worst stall {burst_stall * 1e3:6.1f} ms, "
        f"all answered in {burst_time * 1e3:6.0f} ms"
    )


async def bench(n: int, args: argparse.Namespace) -> None:
    svc, stop, task = await service(n)
    probe = LoopProbe()
    probe.task = asyncio.create_task(probe.run())
    print(f"{n} VIPs:")
    metrics = m.Metrics(min_interval=args.interval)
    metrics.attach(svc)
    # The parts of one render, on their own.
    t0 = time.perf_counter()
    snap = status.take_now(svc)
    t1 = time.perf_counter()
    metrics._generate(snap)
    t2 = time.perf_counter()
    print(
        f"  parts of one render: snapshot {(t1 - t0) * 1e3:.1f} ms (on the loop, in steps "
        f"of {status.CHUNK} VIPs), text {(t2 - t1) * 1e3:.1f} ms (in a thread)"
    )
    before = old_metrics(args.before)
    old_m = before.Metrics()
    old_m.attach(svc)
    old = await before.serve(old_m, "127.0.0.1", 0)
    await measure("before", old.sockets[0].getsockname()[1], probe, args, 0.05)
    old.close()
    new = await m.serve(metrics, "127.0.0.1:0", m.Limits(max_connections=args.burst * 2))
    await measure("after", new.sockets[0].getsockname()[1], probe, args, args.interval + 0.05)
    new.close()
    probe.task.cancel()
    stop.set()
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vips", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--scrapes", type=int, default=10)
    parser.add_argument("--burst", type=int, default=32, help="connections at once")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.5, help="min_render_interval")
    parser.add_argument("--before", default="27c83e6", help="git revision of 'before'")
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, count, parallel, gap = args.client
        client(int(port), int(count), int(parallel), float(gap))
        return
    for n in args.vips:
        asyncio.run(bench(n, args))


if __name__ == "__main__":
    main()
