"""The keeper process itself (keeper.py says what it is for): wait, and act if announcer dies.

It spends its whole life blocked on a pipe, so it loads as little as it can: the
standard library's argument parser and `ipaddress`, no logging, no grpc and none of
announcer's other modules until the pipe's EOF says announcer died. Waiting costs
about 12 MiB of RSS instead of 15 (and 36 with grpc loaded; issue 16). What it does
when it acts is keeper.act's.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys

TYPE_CHECKING = False  # typing itself is not imported at run time (its RSS)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import IO

RELEASE = b"release\n"  # what announcer writes before a clean stop (keeper.Keeper)


def released(stream: IO[bytes]) -> bool:
    """Block until announcer closes the pipe; whether it said `release` first."""
    said = False
    for line in stream:
        said = line == RELEASE
    return said


def main(argv: Sequence[str] | None = None) -> int:
    # SIGABRT too: systemd's watchdog sends it to the whole cgroup, and a watchdog
    # abort is exactly when the keeper must act.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGABRT):
        signal.signal(sig, signal.SIG_IGN)
    p = argparse.ArgumentParser(prog="announcer.keeper_process")
    p.add_argument("--gobgp", required=True)
    p.add_argument("--api-version", choices=["auto", "3", "4"], default="auto")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--peer", action="append", default=[])
    # Checked now, not when acting: a bad argument fails at the spawn, visibly.
    p.add_argument("--allow", action="append", default=[], type=ipaddress.ip_network)
    args = p.parse_args(argv)
    if released(sys.stdin.buffer):
        return 0
    # Only now: logging, grpc and the generated code (about 75 ms here, in the rare
    # case the keeper acts).
    from .keeper import act

    version = {"auto": "auto", "3": 3, "4": 4}[args.api_version]
    return act(args.gobgp, version, args.timeout, args.peer, args.allow)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
