"""Micro-benchmark: probes per second and CPU per probe (not collected by pytest: bench_*).

    .venv/bin/python tests/bench/bench_probes.py [--kind http|tcp|command] [--probes 2000]
        [--rounds 5] [--max-sockets 512] [--max-commands 16] [--keepalive]
        [--repeat 1] [--cprofile FILE]

The HTTP responder runs in a child process, so the CPU time reported is the
prober's alone (time.process_time of this process, which excludes children; it
counts the kernel time of our connects and closes, which dominates a probe).
Without --keepalive every probe opens and closes a connection (what `probe()`
does); with it, `--probes` distinct checks each keep one connection (what the
daemon's Prober does), and the responder answers HTTP/1.1 keep-alive; the first
round (every check connects) is then reported apart from the later ones (every
check reuses its connection), with user and kernel CPU. `--repeat` runs the whole
thing again, each time with a fresh Prober (no connection kept), for a spread.
`--cprofile FILE` profiles the first round (the connects) with cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from announcer.model import CheckSpec
from announcer.probes import Prober

if TYPE_CHECKING:
    import cProfile

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
KEEPALIVE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def responder() -> None:
    """A minimal HTTP responder on 127.0.0.1; prints its port, serves until stdin closes.

    It answers every request on a connection until the client closes, and says
    `Connection: close` only to requests that asked for it.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"connection: close" in head.lower():
                    writer.write(RESPONSE)
                    await writer.drain()
                    break
                writer.write(KEEPALIVE_RESPONSE)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # parent gone or done: stop
    server.close()


def _profiler() -> cProfile.Profile:
    """cProfile, imported past tests/bench/profile.py (which shadows the stdlib `profile`)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    import cProfile

    return cProfile.Profile()


def _cpu() -> tuple[float, float]:
    """User and kernel CPU seconds of this process (not the responder's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def bench(
    specs: list[CheckSpec], rounds: int, prober: Prober, profile: cProfile.Profile | None = None
) -> None:
    failures: dict[str, int] = {}
    total = 0
    spec = specs[0]
    # Per round: wall, user, system.
    per_round: list[tuple[float, float, float]] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for n in range(rounds):
        w, (u, k) = time.perf_counter(), _cpu()
        if profile is not None and n == 0:
            profile.enable()
        results = await asyncio.gather(*(prober.run(s) for s in specs))
        if profile is not None and n == 0:
            profile.disable()
        u1, k1 = _cpu()
        per_round.append((time.perf_counter() - w, u1 - u, k1 - k))
        for r in results:
            total += 1
            if not r.ok:
                failures[r.detail] = failures.get(r.detail, 0) + 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    pool = prober.pool
    prober.close()
    await asyncio.sleep(0.1)  # let the closed transports finish
    print(f"{spec.target}: {total} probes in {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"  {total / wall:,.0f} probes/s, {cpu / total * 1e6:,.0f} us CPU per probe")
    if pool is not None:
        n = len(specs)

        def line(name: str, rows: list[tuple[float, float, float]]) -> None:
            if not rows:
                return
            probes = n * len(rows)
            w, u, k = (sum(r[i] for r in rows) for i in range(3))
            print(
                f"  {name}: {(u + k) / probes * 1e6:6.1f} us CPU per probe"
                f" (user {u / probes * 1e6:5.1f}, sys {k / probes * 1e6:5.1f}),"
                f" {probes / w:,.0f} probes/s"
            )

        line("first round (connect)", per_round[:1])
        line("later rounds (reuse) ", per_round[1:])
        print(f"  pool: opened {pool.opened}, reused {pool.reused}")
    if failures:
        print(f"  failures: {failures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["http", "tcp", "command"], default="http")
    parser.add_argument("--probes", type=int, default=2000, help="concurrent probes per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-sockets", type=int, default=512)
    parser.add_argument("--max-commands", type=int, default=16)
    parser.add_argument("--keepalive", action="store_true", help="keep-alive connections")
    parser.add_argument("--repeat", type=int, default=1, help="run it all again, new Prober")
    parser.add_argument("--cprofile", metavar="FILE", help="cProfile the first round into FILE")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(responder())
        return

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        address = ipaddress.ip_address("127.0.0.1")
        if args.kind == "http":
            # Distinct checks (the Host header differs), like distinct VIPs: one
            # keep-alive connection each.
            specs = [
                CheckSpec(kind="http", address=address, port=port, timeout=5.0, host=f"vip{i}")
                for i in range(args.probes)
            ]
        elif args.kind == "tcp":
            specs = [CheckSpec(kind="tcp", address=address, port=port, timeout=5.0)] * args.probes
        else:
            cmd = CheckSpec(kind="command", address=address, command="true %s", timeout=5.0)
            specs = [cmd] * args.probes
        for n in range(args.repeat):
            prober = Prober(
                max_sockets=args.max_sockets,
                max_commands=args.max_commands,
                keepalive=args.keepalive,
            )
            profile = _profiler() if args.cprofile and n == 0 else None
            asyncio.run(bench(specs, args.rounds, prober, profile))
            if profile is not None:
                profile.dump_stats(args.cprofile)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(5)
        assert server.stdout is not None
        server.stdout.close()


if __name__ == "__main__":
    main()
