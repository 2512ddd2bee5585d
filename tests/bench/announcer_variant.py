"""`announcer` with experimental changes switched on, to measure proposals (A/B).

    python -m tests.bench.announcer_variant [--no-keepalive] [--cached-planner] run -c ...

* `--no-keepalive`: probes connect once per check (what announcer did before the
  keep-alive pool): the baseline of the keep-alive measurement.
* `--memory-report`: a thread that, ANNOUNCER_MEMORY_REPORT_AT seconds after the
  start (default 25), writes where the memory is to ANNOUNCER_MEMORY_REPORT (a
  path): /proc/self/smaps_rollup, glibc's heap (mallinfo2) before and after
  malloc_trim(0), and tracemalloc's largest allocation sites with
  ANNOUNCER_MEMORY_REPORT_FRAMES frames (default 1; 0: no tracemalloc; it runs from
  the start and slows the process down).
* `--gc-report`: times the cyclic garbage collector's passes (gc.callbacks) and,
  ANNOUNCER_GC_REPORT_AT seconds after the start (default 40), writes per
  generation the passes, the time they took and the objects they freed, over the
  whole run and over the last ANNOUNCER_GC_REPORT_WINDOW seconds (default 30), to
  ANNOUNCER_GC_REPORT (a path).
* `--cached-planner`: memoises `host_prefix` and `allowed` (the planner builds an
  `ipaddress` network and walks the allow-list for every VIP on every reconcile).
  It only shows what caching them would save; the real change belongs in
  planner.py/service.py (docs/performance.md, "What limits what").

Nothing here is used by announcer itself.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

from announcer import cli, model, planner, probes, service
from announcer.model import HostPrefix, IPAddress, IPNetwork


def _no_keepalive() -> None:
    probes.Prober.__init__ = functools.partialmethod(  # type: ignore[method-assign,assignment]
        probes.Prober.__init__, keepalive=False
    )


def _cached_planner() -> None:
    host_prefix = functools.lru_cache(maxsize=1 << 17)(model.host_prefix)
    original_allowed = planner.allowed

    @functools.lru_cache(maxsize=1 << 17)
    def _allowed(prefix: IPNetwork, allow_list: tuple[IPNetwork, ...]) -> bool:
        return original_allowed(prefix, allow_list)

    def allowed(prefix: IPNetwork, allow_list: Sequence[IPNetwork]) -> bool:
        return _allowed(prefix, tuple(allow_list))

    def cached_host_prefix(address: IPAddress) -> HostPrefix:
        return host_prefix(address)

    for module in (model, planner):
        module.host_prefix = cached_host_prefix  # type: ignore[attr-defined]
    for module in (planner, service):
        module.allowed = allowed  # type: ignore[attr-defined]


def _memory_report() -> None:
    import ctypes
    import os
    import threading
    import time
    import tracemalloc

    frames = int(os.environ.get("ANNOUNCER_MEMORY_REPORT_FRAMES", "1"))
    if frames:
        tracemalloc.start(frames)
    at = float(os.environ.get("ANNOUNCER_MEMORY_REPORT_AT", "25"))
    out = os.environ.get("ANNOUNCER_MEMORY_REPORT", "announcer-memory.txt")

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2

    def rollup() -> str:
        with open("/proc/self/smaps_rollup") as f:
            return "".join(
                line
                for line in f
                if line.split(":")[0]
                in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Anonymous", "Private_Dirty")
            )

    def heap() -> str:
        m = libc.mallinfo2()
        return (
            f"glibc heap: arena {m.arena >> 10} KiB, mmapped {m.hblkhd >> 10} KiB, "
            f"in use {m.uordblks >> 10} KiB, free {m.fordblks >> 10} KiB\n"
        )

    def mappings() -> str:
        """The largest mappings by RSS (anonymous ones are the heaps and stacks)."""
        found: list[tuple[int, str]] = []
        name = ""
        with open("/proc/self/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    parts = line.split()
                    name = f"{parts[0]} {parts[5] if len(parts) > 5 else '[anon]'}"
                elif first == "Rss:":
                    found.append((int(line.split()[1]), name))
        found.sort(reverse=True)
        return "".join(f"{kib:8} KiB {what}\n" for kib, what in found[:20])

    def pymalloc() -> str:
        """pymalloc's own summary (sys._debugmallocstats writes to stderr's fd)."""
        import sys
        import tempfile

        with tempfile.TemporaryFile("w+") as tmp:
            saved = os.dup(2)
            os.dup2(tmp.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read()
        keep = (
            "arenas allocated current",
            "bytes/arena",
            "bytes in allocated blocks",
            "bytes in available blocks",
            "unused pools",
        )
        return "pymalloc:\n" + "".join(
            line + "\n" for line in text.splitlines() if any(k in line for k in keep)
        )

    def census() -> str:
        """Live objects by type (count and shallow size), the untracked ones (str, bytes,
        int...) reached from them counted once, and what holds the strings and tuples:
        one walk over the collector's objects."""
        import collections
        import gc
        import sys

        count: collections.Counter[str] = collections.Counter()
        size: collections.Counter[str] = collections.Counter()
        shapes: collections.Counter[str] = collections.Counter()
        seen: set[int] = set()

        def tally(obj: object, prefix: str = "") -> None:
            kind = type(obj)
            name = f"{prefix}{kind.__module__}.{kind.__qualname__}"
            count[name] += 1
            size[name] += sys.getsizeof(obj)

        for obj in gc.get_objects():
            tally(obj)
            owner = type(obj).__qualname__
            for ref in gc.get_referents(obj):
                if not gc.is_tracked(ref) and id(ref) not in seen:
                    seen.add(id(ref))
                    tally(ref, "(untracked) ")
                if isinstance(ref, str) and not isinstance(obj, dict | type):
                    shapes[f"str in {owner}"] += 1
                elif isinstance(ref, tuple) and ref:
                    shapes[f"tuple[{type(ref[0]).__qualname__}, ...] in {owner}"] += 1
            if isinstance(obj, dict):
                try:
                    items = list(obj.items())  # other threads may change it meanwhile
                except RuntimeError:
                    continue
                for k, v in items:
                    if isinstance(v, str):
                        shapes[f"str value in dict keyed by {type(k).__qualname__}"] += 1
                    if isinstance(k, str):
                        shapes["str key in dict"] += 1
        tail = "\nreferences (str, tuple), by referrer:\n" + "".join(
            f"{n:8} {what}\n" for what, n in shapes.most_common(30)
        )
        return (
            tail
            + "\nlive objects, by shallow size:\n"
            + "".join(
                f"{size[name] >> 10:8} KiB {count[name]:8} {name}\n"
                for name, _ in size.most_common(50)
            )
        )

    def report() -> None:
        time.sleep(at)
        lines = [rollup(), heap(), mappings(), pymalloc(), census()]
        libc.malloc_trim(0)
        lines += ["after malloc_trim(0):\n", rollup(), heap()]
        if not frames:
            with open(out, "w") as f:
                f.writelines(lines)
            return
        snap = tracemalloc.take_snapshot()
        traced, peak = tracemalloc.get_traced_memory()
        lines.append(f"tracemalloc: {traced >> 10} KiB now, peak {peak >> 10} KiB\n\nby line:\n")
        for stat in snap.statistics("lineno")[:40]:
            lines.append(f"{stat.size >> 10:8} KiB {stat.count:8} {stat.traceback[0]}\n")
        lines.append("\nby traceback:\n")
        for stat in snap.statistics("traceback")[:25]:
            lines.append(f"{stat.size >> 10:8} KiB {stat.count:8}\n")
            lines.extend(f"        {frame}\n" for frame in stat.traceback)
        with open(out, "w") as f:
            f.writelines(lines)

    threading.Thread(target=report, daemon=True, name="memory-report").start()


def _gc_report() -> None:
    import gc
    import os
    import threading
    import time

    at = float(os.environ.get("ANNOUNCER_GC_REPORT_AT", "40"))
    window = float(os.environ.get("ANNOUNCER_GC_REPORT_WINDOW", "30"))
    out = os.environ.get("ANNOUNCER_GC_REPORT", "announcer-gc.txt")
    started: list[float] = [0.0]
    passes: list[tuple[float, int, float, int]] = []  # (end, generation, seconds, freed)

    def timer(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            started[0] = now
        else:
            passes.append((now, info["generation"], now - started[0], info["collected"]))

    gc.callbacks.append(timer)
    t0 = time.perf_counter()

    def report() -> None:
        time.sleep(at)
        end = time.perf_counter()
        lines = [
            f"gc thresholds {gc.get_threshold()}, counts {gc.get_count()}, "
            f"tracked objects {len(gc.get_objects())}, frozen {gc.get_freeze_count()}\n"
        ]
        for label, since in (("whole run", t0), (f"last {window:.0f} s", end - window)):
            span = end - since
            lines.append(f"{label} ({span:.1f} s):\n")
            for gen in (0, 1, 2):
                mine = [p for p in passes if p[1] == gen and p[0] >= since]
                spent = sum(p[2] for p in mine)
                lines.append(
                    f"  gen {gen}: {len(mine)} passes, {spent * 1e3:.1f} ms "
                    f"({100 * spent / span:.2f} % of a core), longest "
                    f"{max((p[2] for p in mine), default=0) * 1e3:.2f} ms, "
                    f"freed {sum(p[3] for p in mine)}\n"
                )
        lines.append("the longest passes (seconds after the start: generation, ms):\n")
        longest = sorted(passes, key=lambda p: -p[2])[:15]
        lines += [f"  {p[0] - t0:7.3f}: gen {p[1]}, {p[2] * 1e3:.1f} ms\n" for p in longest]
        with open(out, "w") as f:
            f.writelines(lines)

    threading.Thread(target=report, daemon=True, name="gc-report").start()


def _switch_interval_1ms() -> None:
    sys.setswitchinterval(0.001)


def _batch_2500() -> None:
    from announcer import gobgp

    init = gobgp.GobgpClient.__init__

    def forced(self: gobgp.GobgpClient, *args: Any, **kwargs: Any) -> None:
        kwargs["batch_size"] = 2500
        init(self, *args, **kwargs)

    gobgp.GobgpClient.__init__ = forced  # type: ignore[method-assign]


SWITCHES = {
    "--switch-interval-1ms": _switch_interval_1ms,
    "--batch-2500": _batch_2500,
    "--gc-report": _gc_report,
    "--memory-report": _memory_report,
    "--no-keepalive": _no_keepalive,
    "--cached-planner": _cached_planner,
}


def main(argv: list[str]) -> int:
    while argv and argv[0] in SWITCHES:
        SWITCHES[argv.pop(0)]()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
