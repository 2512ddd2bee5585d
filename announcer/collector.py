"""When the cyclic garbage collector runs: not during the start, then over new objects only.

At 10 000 VIPs the process holds about 300 000 objects the collector tracks, nearly
all long-lived: VIP specs, checks, connections, routes. On CPython's default schedule
a full pass over them (about 100 ms with the event loop blocked) ran 8 to 11 times
in the first 4 s of the start, half a second of the start's CPU, and every 10 to 15 s
after it; together with the younger generations' passes about 2.6 % of a core in the
steady state (`scripts/bench --variant=--gc-report`, docs/performance.md, issue 16).
Those passes found no garbage: one full pass after the start freed about 400 objects.

So the collector is off while the start runs (until the start-up sequence is done,
at most `HOLD_LIMIT` seconds), then one full pass collects what the start left and
`gc.freeze()` moves everything alive into the permanent generation, which later passes
skip: they see only what was made since. Reference counting frees frozen objects as
before; only a frozen object caught in a reference cycle would outlive its last use,
so every `REFREEZE` seconds the frozen objects are unfrozen, collected in one pass and
frozen again (one pass of about 100 ms every ten minutes, instead of one every ten
seconds). `announcer run` holds the collector off from before it loads its
configuration and modules; a service run inside another program (the tests) leaves
the collector alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

log = logging.getLogger("announcer")

HOLD_LIMIT = 30.0  # the collector stays off at most this long at the start (seconds)
REFREEZE = 600.0  # how often the frozen objects are collected (seconds)

_holders = 0  # services holding the collector off
_was_enabled = True  # the collector's state before the first holder


def hold() -> None:
    """Turn the collector off until `release` (the start of a service)."""
    global _holders, _was_enabled
    if _holders == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holders += 1


def _let_go() -> bool:
    """One holder fewer, the collector on again when none is left (if it was on
    before); False if nobody held it."""
    global _holders
    if _holders == 0:
        return False
    _holders -= 1
    if _holders == 0 and _was_enabled:
        gc.enable()
    return True


def release() -> None:
    """The start is over: collect once and freeze what is alive; the collector is on
    again when no other service holds it."""
    if _let_go():
        gc.collect()
        gc.freeze()


def refreeze() -> None:
    """Collect the frozen objects once (a cycle among them would otherwise stay), and
    freeze what is still alive."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def run(started: asyncio.Event) -> None:
    """The service's collector schedule after `hold()` (`announcer run` holds it before
    it loads the configuration and the service's modules). Releases when `started` is
    set or after HOLD_LIMIT, whichever is first, then refreezes every REFREEZE seconds
    until cancelled: then the frozen objects are the collector's again (or, cancelled
    during the start, the hold ends). Without a hold (a service run inside another
    program, the tests) it leaves the collector alone."""
    if _holders == 0:
        return
    released = False
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(started.wait(), HOLD_LIMIT)
        release()
        released = True
        log.debug("garbage collector on, %d objects frozen", gc.get_freeze_count())
        while True:
            await asyncio.sleep(REFREEZE)
            refreeze()
    finally:
        if released:
            gc.unfreeze()
        else:
            _let_go()
