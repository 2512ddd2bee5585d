"""The operator's side of drains: commands, the disable file, and the saved state.

Around the pure rules of drains.py: `announcer drain`/`undrain` (through the control
socket), the disable file watched once a second, and drains.json in the state
directory, restored at start as already DRAINED. A change wakes the planner
(`changed`); the core asks `drains.phase()` for each VIP. `progress` tells
`announcer drain --wait` how far a drain has got in gobgpd (the rules: drainwait.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from . import drains as rules
from . import statefile
from .config import Config
from .drains import Drains
from .drainwait import Goal, Judged, Seen, judge, report
from .errors import ControlError
from .model import HostPrefix, IPAddress, Route, host_prefix
from .planner import Drain

if TYPE_CHECKING:
    from .core import Core

# VIPs judged per step of the event loop by `progress` (about 7 us each): a
# `drain --all --wait` at 10 000 VIPs holds the loop for 4 ms at a time, not 70.
CHUNK = 500

log = logging.getLogger("announcer.drain")


class Drainer:
    """Drain commands, the disable file and the state file, for one service."""

    def __init__(
        self,
        config: Callable[[], Config],
        clock: Callable[[], float],
        *,
        vips: Callable[[], Collection[IPAddress]],
        changed: Callable[[], None],
    ) -> None:
        self.config = config  # read each time: a reload may change it
        self.clock = clock
        self.vips = vips  # the VIPs announcer knows
        self.changed = changed  # routes may change: plan everything
        self.drains = Drains(config().drain.delay)
        self.saved = True  # the state directory passed statefile.check_dir

    # ------------------------------------------------------------- commands

    def drain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Start draining VIPs (or the host); raises ControlError for an unknown VIP."""
        targets = self._parse(addresses)
        for line in self.drains.drain(targets, everything, self.clock()):
            log.info("%s", line)
        unsaved = self.save()
        self.changed()
        out: dict[str, Any] = {
            "draining": [str(a) for a in targets],
            "all": everything,
            "delay": self.config().drain.delay,
        }
        if unsaved:
            out["unsaved"] = unsaved
        return out

    def undrain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Stop draining VIPs (or everything the operator drained)."""
        targets, lines = self.drains.undrain(self._parse(addresses), everything)
        for line in lines:
            log.info("%s", line)
        unsaved = self.save()
        self.changed()
        out: dict[str, Any] = {"undrained": [str(a) for a in targets], "all": everything}
        if unsaved:
            out["unsaved"] = unsaved
        if self.drains.file is not None:
            out["warning"] = (
                f"{self.config().drain.disable_file} exists: the host stays drained until "
                "it is removed"
            )
        return out

    async def progress(
        self,
        goal: str,
        addresses: Iterable[str],
        everything: bool,
        *,
        core: Core,
        actual: Callable[[], dict[HostPrefix, Route] | None],
    ) -> dict[str, Any]:
        """How far a drain or undrain of these VIPs (`everything`: every VIP announcer
        knows) has taken effect in gobgpd; `actual`: gobgpd's routes, None if unknown.
        The rules are drainwait.py's; raises ControlError for a bad request."""
        try:
            g = Goal(goal)
        except ValueError:
            raise ControlError(f"progress of {goal!r}: say drain or undrain") from None
        # Not _parse: after an undrain a VIP gone from HAProxy is neither known nor
        # drained any more, and "not in gobgpd" is then the right answer, not an error.
        targets = dict.fromkeys(core.vips if everything else ())
        for text in addresses:
            try:
                targets[ipaddress.ip_address(text)] = None
            except ValueError:
                raise ControlError(f"{text!r} is not an IP address") from None
        cfg = self.config()
        judged: list[Judged] = []
        have = actual()
        for i, a in enumerate(targets):
            if i and i % CHUNK == 0:
                await asyncio.sleep(0)
                have = actual()  # gobgpd may have been re-read (or lost) meanwhile
            now = self.clock()
            phase = self.drains.phase(a, now)
            vs = core.vips.get(a)
            draining = phase is Drain.DRAINING
            seen = Seen(
                a,
                phase,
                None if vs is None else vs.state,
                None if vs is None else core.want(vs, phase, None, cfg.allowed_prefixes),
                None if have is None else have.get(host_prefix(a) if vs is None else vs.vip.prefix),
                self.drains.until_drained(a, now) if draining else 0.0,
                self.drains.causes(a) if phase is not Drain.NONE else (),
            )
            judged.append(judge(g, seen, have is not None))
        return report(g, judged, known=have is not None, delay=cfg.drain.delay)

    def _parse(self, addresses: Iterable[str]) -> list[IPAddress]:
        known = self.vips()
        out: list[IPAddress] = []
        for text in addresses:
            try:
                a = ipaddress.ip_address(text)
            except ValueError:
                raise ControlError(f"{text!r} is not an IP address") from None
            if a not in known and a not in self.drains.vips:
                raise ControlError(
                    f"{a} is not a VIP announcer knows ({len(known)} discovered; "
                    "see `announcer status`)"
                )
            out.append(a)
        return out

    # ---------------------------------------------------------- state file

    def save(self) -> str | None:
        """Persist the drains; returns why that failed (told to the CLI caller), or None."""
        d = self.config().service.state_dir
        if d is None:
            return None
        if not self.saved:
            return f"state directory {d} is unusable: not saved"
        try:
            rules.save(d, self.drains)
        except statefile.StateError as e:
            log.error("%s: the drains as they are now will not survive a restart", e)
            return str(e)
        return None

    def load(self) -> None:
        """Drains from a previous run, restored as already drained (the delay passed)."""
        d = self.config().service.state_dir
        if d is None:
            return
        try:
            statefile.check_dir(d)
        except statefile.StateError as e:
            # Nothing is read from a directory someone else could write (a planted
            # drains.json would drain the host), and nothing is written there.
            self.saved = False
            log.error("%s; drains are neither restored nor saved", e)
            return
        path = rules.state_path(d)
        try:
            if not rules.load(d, self.drains):
                return
        except (statefile.StateError, ValueError) as e:
            log.error("ignoring unreadable drain state %s: %s", path, e)
            return
        if self.drains.vips or self.drains.host is not None:
            log.warning(
                "restored drains from %s: %s",
                path,
                "the whole host"
                if self.drains.host is not None
                else ", ".join(map(str, self.drains.vips)),
            )

    # ------------------------------------------------------------- the loop

    async def watch(self) -> None:
        """Watch the disable file, and wake the planner when a drain delay ends."""
        last_phases: dict[IPAddress, Drain] = {}
        while True:
            now = self.clock()
            f = self.config().drain.disable_file
            present = f is not None and f.exists()
            if self.drains.disable_file(present, now):
                if present:
                    log.warning("%s exists: draining every VIP of this host", f)
                else:
                    log.warning("%s is gone: the host is no longer drained by it", f)
                self.changed()
            phases = self.drains.phases(self.vips(), now)
            if phases != last_phases:
                for a, p in phases.items():
                    if last_phases.get(a) is not p and p is Drain.DRAINED:
                        log.info("VIP %s drained: drain delay over", a)
                last_phases = phases
                self.changed()
            await asyncio.sleep(self.drains.next_wake(now))
