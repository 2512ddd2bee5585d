"""Micro-benchmark: GobgpClient.apply of a full re-sync (not collected by pytest: bench_*).

    .venv/bin/python tests/bench/bench_apply.py [--versions 3 4] [--v6 10000] [--v4 768]
        [--rounds 3] [--batch-size 500] [--modes old nocache cold warm]

Starts a real gobgpd (tests/support/gobgpd_proc.py, loopback only) per API version and
times the apply of every route into an empty gobgpd, as after a gobgpd restart:
10 000 IPv6 /128s from 2001:db8:be::/64 plus up to 768 IPv4 /32s from the three
documentation networks. gobgpd is restarted before every timed apply (untimed).

Modes:
  old      what apply did before paths were cached: Path messages built per route,
           serialized by grpc (rebuilt here with the codec's message API)
  nocache  the current apply with path_cache_size=0: bytes encoded afresh each time
  cold     the current apply, cache emptied first (the first sync after a start)
  warm     the current apply after the same routes were applied before (a re-sync)

Each mode runs alone and beside a Python thread that holds the GIL as a busy
event loop does (the daemon's apply runs in a worker thread). Reported per mode:
wall time, CPU of the applying thread, CPU of the whole process minus the GIL
burner's (so gRPC's own threads count), median over the rounds. Then the memory a
warm cache holds, measured with tracemalloc. gobgpd is killed by its PID at the
end, even on failure.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from announcer.errors import GobgpError
from announcer.gobgp import GobgpClient
from announcer.gobgp_paths import PathCache
from announcer.gobgp_versions import CODECS
from announcer.model import Community, Route, validate_route
from tests.support.gobgpd_proc import BINARIES, GobgpdProc

ASN = 65001
V6_NET = ipaddress.ip_network("2001:db8:be::/64")
V4_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
MODES = ("old", "nocache", "cold", "warm")


def make_routes(v6: int, v4: int) -> list[Route]:
    """`v6` IPv6 and `v4` IPv4 host routes, attributes as a VIP policy sets them."""
    if v4 > sum(n.num_addresses for n in V4_NETS):
        raise SystemExit(f"--v4 at most {sum(n.num_addresses for n in V4_NETS)}")
    communities = (Community(65001, 100),)
    routes = [
        Route(
            ipaddress.ip_network(f"{V6_NET.network_address + i + 1}/128"),
            next_hop=ipaddress.ip_address("2001:db8::1"),
            med=10,
            communities=communities,
        )
        for i in range(v6)
    ]
    addresses = (a for n in V4_NETS for a in n)
    routes += [
        Route(ipaddress.ip_network(f"{next(addresses)}/32"), med=10, communities=communities)
        for _ in range(v4)
    ]
    return routes


# ------------------------------------------------------------------ GIL burner


class GilBurner:
    """A thread running pure Python without pause, as an event loop busy with checks."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-burner", daemon=True)
        self._clock = 0

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            for i in range(200):
                n += i

    def cpu(self) -> float:
        """The burner thread's CPU seconds so far (read from another thread)."""
        return time.clock_gettime(self._clock)

    def __enter__(self) -> GilBurner:
        self._thread.start()
        assert self._thread.ident is not None
        self._clock = time.pthread_getcpuclockid(self._thread.ident)
        time.sleep(0.05)  # running before the timed part starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ the modes


def old_apply(client: GobgpClient, routes: Sequence[Route]) -> None:
    """The apply of announces as it was before the path cache (messages per route)."""
    for route in routes:
        validate_route(route)
    api = client._current("bench")
    codec = api.codec
    request_class, response_class = codec.rpcs["AddPathStream"]
    stream = client._channel.stream_unary(
        f"/{codec.service}/AddPathStream",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    asn = client.local_asn() if any(r.as_path_prepend for r in routes) else None
    for start in range(0, len(routes), client.batch_size):
        batch = routes[start : start + client.batch_size]
        request = codec.add_path_stream_request([codec.announce_path(r, asn) for r in batch])
        stream(iter([request]), timeout=client.timeout)


@dataclass
class Sample:
    wall: float
    thread_cpu: float
    process_cpu: float  # minus the burner's
    built: int  # paths encoded during the apply (None for old: all of them)


def connect(client: GobgpClient, deadline: float = 10.0) -> None:
    """One successful call after a restart (the channel reconnects, untimed)."""
    end = time.monotonic() + deadline
    while True:
        try:
            client.local_asn()
            return
        except GobgpError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def measure(fn: Callable[[], None], contended: bool) -> tuple[float, float, float]:
    burner = GilBurner() if contended else None
    if burner is not None:
        burner.__enter__()
    try:
        burned0 = burner.cpu() if burner is not None else 0.0
        wall0, thread0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
        fn()
        wall = time.perf_counter() - wall0
        thread_cpu = time.thread_time() - thread0
        process_cpu = time.process_time() - proc0
        if burner is not None:
            process_cpu -= burner.cpu() - burned0
    finally:
        if burner is not None:
            burner.__exit__()
    return wall, thread_cpu, process_cpu


def run_mode(
    proc: GobgpdProc, mode: str, routes: list[Route], contended: bool, batch_size: int
) -> Sample:
    cache_size = 0 if mode == "nocache" else len(routes) * 2
    with GobgpClient(
        proc.api_target, timeout=30.0, batch_size=batch_size, path_cache_size=cache_size
    ) as client:
        connect(client)
        if mode == "warm":
            client.apply([], routes)  # what was announced before gobgpd restarted
        proc.restart()
        connect(client)
        paths = client._current("bench").paths
        misses = paths.misses
        if mode == "old":
            wall, thread_cpu, process_cpu = measure(lambda: old_apply(client, routes), contended)
        else:
            wall, thread_cpu, process_cpu = measure(lambda: client.apply([], routes), contended)
        built = len(routes) if mode == "old" else paths.misses - misses
        got = proc.cli("global", "rib", "summary", "-a", "ipv6")
        got += proc.cli("global", "rib", "summary", "-a", "ipv4")
    # `gobgp global rib summary` prints "Number of destinations: N" per family.
    counts = [int(line.split(":")[1].split(",")[0]) for line in got.splitlines() if "Dest" in line]
    if sum(counts) != len(routes):
        raise RuntimeError(f"{mode}: gobgpd holds {counts} destinations, expected {len(routes)}")
    return Sample(wall, thread_cpu, process_cpu, built)


# ------------------------------------------------------------------ memory


def cache_memory(routes: list[Route], batch_size: int) -> list[str]:
    lines = []
    for version, codec in sorted(CODECS.items()):
        cache = PathCache(codec, max_prefixes=len(routes) * 2)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, len(routes), batch_size):
            cache.announce_request(routes[start : start + batch_size], ASN)
        announce = tracemalloc.get_traced_memory()[0] - before
        cache.withdraw_request([r.prefix for r in routes])
        both = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        n = len(routes)
        lines.append(
            f"  {version}.x: announces {announce / 2**20:5.2f} MiB ({announce / n:4.0f} B/route),"
            f" with withdraws {both / 2**20:5.2f} MiB ({both / n:4.0f} B/route)"
        )
    return lines


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", choices=sorted(BINARIES), default=[3, 4])
    parser.add_argument("--v6", type=int, default=10000, help="IPv6 /128 routes")
    parser.add_argument("--v4", type=int, default=768, help="IPv4 /32 routes (at most 768)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval, ms"
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval / 1e3)

    routes = make_routes(args.v6, args.v4)
    print(
        f"{args.v6} IPv6 + {args.v4} IPv4 routes, batch {args.batch_size}, "
        f"median of {args.rounds} rounds, switch interval {sys.getswitchinterval() * 1e3:.0f} ms"
    )
    header = (
        f"  {'mode':8} {'GIL burner':10} {'wall s':>7} {'thread CPU s':>12}"
        f" {'process CPU s':>13} {'paths built':>11}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        for version in args.versions:
            proc = GobgpdProc(Path(tmp) / f"v{version}", asn=ASN, name="a", version=version)
            try:
                proc.start()
                print(f"\ngobgpd {version}.x ({proc.gobgpd})")
                print(header)
                for contended in (False, True):
                    for mode in args.modes:
                        samples = [
                            run_mode(proc, mode, routes, contended, args.batch_size)
                            for _ in range(args.rounds)
                        ]

                        def med(values: list[Any]) -> float:
                            return float(statistics.median(values))

                        print(
                            f"  {mode:8} {'yes' if contended else 'no':10}"
                            f" {med([s.wall for s in samples]):7.3f}"
                            f" {med([s.thread_cpu for s in samples]):12.3f}"
                            f" {med([s.process_cpu for s in samples]):13.3f}"
                            f" {int(med([s.built for s in samples])):11d}",
                            flush=True,
                        )
            finally:
                proc.stop()  # by PID, even when a round failed
    print(f"\nwarm cache size for these {len(routes)} routes (tracemalloc):")
    for line in cache_memory(routes, args.batch_size):
        print(line)


if __name__ == "__main__":
    main()
