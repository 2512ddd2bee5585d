"""Which event loop runs the daemon: uvloop where it is installed, else asyncio's own.

At 10 000 checks a second the event loop's own work (handles, timers, transports)
is the largest part of announcer's CPU (docs/performance.md). uvloop does the same
work in C: the benchmark measured 10-20 % less CPU and more checks done in time.
It is optional (Debian: python3-uvloop, a Recommends of the package): without it
announcer runs on asyncio's loop, and behaves the same.

`service.event_loop` picks: `auto` (uvloop if importable), `uvloop` (required: a
start without it is a configuration error, exit 78) or `asyncio`. The choice is
fixed for the process's life; a reload does not change it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

LoopChoice = Literal["auto", "uvloop", "asyncio"]


@dataclass(frozen=True)
class EventLoop:
    name: str  # what the start-up log says, e.g. "uvloop 0.17.0" or "asyncio"
    why: str
    factory: Callable[[], asyncio.AbstractEventLoop]


def choose(choice: LoopChoice) -> EventLoop:
    """The loop for `service.event_loop: choice`; ConfigError if uvloop is required
    and cannot be imported."""
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
    version = getattr(uvloop, "__version__", "?")
    return EventLoop(f"uvloop {version}", f"service.event_loop: {choice}", uvloop.new_event_loop)
