"""Which event loop runs the daemon: uvloop where it is installed and safe, else asyncio's.

At 10 000 checks a second the event loop's own work (handles, timers, transports)
is the largest part of announcer's CPU (docs/performance.md). uvloop does the same
work in C: the benchmark measured less CPU, a faster start and more checks done in
time. It is optional (Debian: python3-uvloop, a Suggests of the package; pip:
the `fast` extra).

One combination is not safe: uvloop starts command checks with fork() (libuv),
asyncio's loop with vfork(), which runs no fork handlers. grpcio 1.51 (Debian
bookworm's and trixie's python3-grpcio) installs a fork handler that waits for
gRPC's threads to go idle, and announcer's gobgpd watcher never is: the event loop
froze at the first command check (found by the systemd lab on trixie, with
uvloop 0.21; GRPC_ENABLE_FORK_SUPPORT=false does not remove that handler). grpcio
1.85 skips its handlers while other threads are in gRPC (checked with the same
script). So `auto` takes uvloop only with a grpcio from UVLOOP_SAFE_GRPCIO on.

`service.event_loop` picks: `auto`, `uvloop` (required: a start without it, or
with an unsafe grpcio, is a configuration error, exit 78) or `asyncio`. The choice
is fixed for the process's life; a reload does not change it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

LoopChoice = Literal["auto", "uvloop", "asyncio"]

# The oldest grpcio seen not to freeze a fork under uvloop (the tests' pip grpcio).
UVLOOP_SAFE_GRPCIO = (1, 85)


@dataclass(frozen=True)
class EventLoop:
    name: str  # what the start-up log says, e.g. "uvloop 0.21.0" or "asyncio"
    why: str
    factory: Callable[[], asyncio.AbstractEventLoop]


def grpcio_version() -> str | None:
    try:
        return importlib.metadata.version("grpcio")
    except importlib.metadata.PackageNotFoundError:
        return None


def _safe(grpcio: str | None) -> bool:
    if grpcio is None:
        return False
    try:
        major, minor = (int(x) for x in grpcio.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= UVLOOP_SAFE_GRPCIO


def choose(choice: LoopChoice, grpcio: str | None = None) -> EventLoop:
    """The loop for `service.event_loop: choice`; ConfigError if uvloop is required
    and cannot be imported or would freeze with this grpcio (default: the installed)."""
    if choice == "asyncio":
        return EventLoop("asyncio", "service.event_loop: asyncio", asyncio.new_event_loop)
    try:
        import uvloop
    except ImportError as e:
        if choice == "uvloop":
            problem = (
                f"service.event_loop: uvloop is not installed ({e}); "
                "install python3-uvloop or set auto or asyncio"
            )
            raise ConfigError(problem) from e
        return EventLoop("asyncio", "uvloop is not installed", asyncio.new_event_loop)
    grpcio = grpcio if grpcio is not None else grpcio_version()
    if not _safe(grpcio):
        unsafe = (
            f"grpcio {grpcio} would freeze uvloop's event loop at a command check's fork "
            f"(announcer/eventloop.py; grpcio {'.'.join(map(str, UVLOOP_SAFE_GRPCIO))} or "
            "later is safe)"
        )
        if choice == "uvloop":
            raise ConfigError(f"service.event_loop: uvloop: {unsafe}; set auto or asyncio")
        return EventLoop("asyncio", f"uvloop is installed, but {unsafe}", asyncio.new_event_loop)
    version = getattr(uvloop, "__version__", "?")
    return EventLoop(f"uvloop {version}", f"service.event_loop: {choice}", uvloop.new_event_loop)
