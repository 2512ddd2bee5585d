"""Summarise a py-spy `--format raw` profile (collapsed stacks): where the CPU goes.

    .venv/bin/python -m tests.bench.profile bench-results/profile-n10000-*.txt [--top 25]

Prints, per function, the share of samples spent in it (self) and below it
(inclusive), plus a few buckets that answer "what dominates" for announcer:
probing, the check bookkeeping in service.py, logging, metrics, asyncio itself.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# A frame is `function (file:line)`; the line is dropped so one function is one row.
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")

BUCKETS = {
    "probes (HTTP probe I/O and parsing)": ("announcer/probe",),
    "service.py check loop and bookkeeping": ("announcer/service.py",),
    "health.py state machine": ("announcer/health.py",),
    "logging": ("logging/",),
    "metrics (prometheus_client)": ("prometheus_client/", "announcer/metrics.py"),
    "asyncio event loop and transports": ("asyncio/",),
    "gRPC / protobuf (gobgpd adapter)": ("grpc/", "google/protobuf", "announcer/gobgp"),
    "discovery / DataPlaneAPI": (
        "announcer/discovery.py",
        "announcer/dataplane.py",
        "announcer/dpapi_http.py",
        "h11/",
    ),
}


def load(path: Path) -> list[tuple[list[str], int]]:
    """(frames root first, samples) per distinct stack."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = []
        for raw in head.split(";"):
            m = _FRAME.match(raw.strip())
            frames.append(f"{m['fn']} ({m['file']})" if m else raw.strip())
        stacks.append((frames, int(count)))
    return stacks


def summarise(stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    total = sum(n for _, n in stacks) or 1
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        # Bucket by the innermost frame that belongs to a bucket: time in asyncio
        # called from probes.py counts as asyncio, probes.py's own work as probes.
        for f in reversed(frames):
            hit = next((b for b, keys in BUCKETS.items() if any(k in f for k in keys)), None)
            if hit is not None:
                buckets[hit] += n
                break
        else:
            buckets["other"] += n
    out = [f"{total} samples"]
    out.append("\nBy area (innermost matching frame):")
    for name, n in buckets.most_common():
        out.append(f"  {100 * n / total:5.1f} %  {name}")
    out.append(f"\nTop {top} functions by own time (self %, inclusive %):")
    for f, n in own.most_common(top):
        out.append(f"  {100 * n / total:5.1f} %  {100 * incl[f] / total:5.1f} %  {f}")
    out.append(f"\nTop {top} announcer functions by inclusive time:")
    ours = [(f, n) for f, n in incl.most_common() if "announcer/" in f]
    for f, n in ours[:top]:
        out.append(f"  {100 * n / total:5.1f} %  {f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    print(summarise(load(args.profile), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
