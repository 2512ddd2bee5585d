"""DataPlaneAPI's answers into the core: the one way VIPs enter announcer.

discoverer.py polls DataPlaneAPI and hands each good answer's frontends to `Intake.take`;
vips.py turns them into VIP specs; the core takes those (core.apply: new and retired
checks, state changes, the VIP-loss hold of shrink.py) and the scheduler gets the new
checks. What this module adds is what the pure parts cannot do: the log lines (one per
VIP found or gone, or one summary line at a start), and the first answer of a restarted
process, which has no VIPs of its own to compare with and is compared with the routes
gobgpd holds instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from . import shrink
from .config import Config
from .core import Change, Core, addresses_of
from .drains import Drains
from .errors import GobgpError
from .gobgp_sync import GobgpSync, WatchableRouteTable
from .model import Frontend, IPAddress, IPNetwork, by_version
from .scheduler import Scheduler
from .vips import VipSpecs, vip_specs

log = logging.getLogger("announcer.discovery")

PLAN_LOG_LIMIT = 50  # more VIPs found or gone at once are logged as one summary line


class Intake:
    """Takes discovery answers (and reloads) into the core and the scheduler."""

    def __init__(
        self,
        core: Core,
        scheduler: Scheduler,
        cfg: Callable[[], Config],
        clock: Callable[[], float],
        *,
        table: WatchableRouteTable,
        sync: GobgpSync,
        drains: Callable[[], Drains],
        owned: Callable[[], tuple[IPNetwork, ...]],
        changed: Callable[[Change], None],
        guard_changed: Callable[[str], None],
        wake: Callable[[], None],
        found: Callable[[Collection[IPAddress]], None] | None = None,
    ) -> None:
        self.core = core
        self.scheduler = scheduler
        self.cfg = cfg
        self.clock = clock
        self.table = table
        self.sync = sync
        self.drains = drains
        self.owned = owned
        self.changed = changed  # a VIP changed state (logged and counted by the service)
        self.guard_changed = guard_changed  # the mass-withdrawal guard engaged or released
        self.wake = wake  # something to plan
        self.found = found  # new VIPs, looked up in the kernel before their first plan
        self.discovered = False  # a first discovery succeeded
        self._frontends: tuple[Frontend, ...] = ()  # the last good answer
        self._outside_logged: set[IPAddress] = set()

    async def take(self, frontends: tuple[Frontend, ...]) -> None:
        """A good DataPlaneAPI answer (discoverer.py)."""
        found = vip_specs(frontends, self.cfg())
        if not await self._first_answer_held(found):
            self._frontends = frontends
            self.apply(found)

    def reload(self) -> None:
        """The configuration changed: the last answer again, under the new rules.

        Not held: what a reload removes is the operator's decision, not a fault.
        """
        self._outside_logged.clear()
        if self.discovered:
            self.apply(vip_specs(self._frontends, self.cfg()), guarded=False)

    def apply(self, found: VipSpecs, guarded: bool = True) -> None:
        """Take a discovery's VIPs; `guarded`: a big loss is held (shrink.py)."""
        self._log_found(found)
        known = len(self.core.vips)
        before = self.core.hold
        done = self.core.apply(
            found.specs,
            self.clock(),
            self.drains().phase,
            vip_loss=self.cfg().dataplaneapi.vip_loss if guarded else None,
        )
        if done.hold is not None:
            self._log_hold(done.hold, before, known)
        for spec in done.retired:
            self.scheduler.retire(spec)
        for c in done.new_checks:
            self.scheduler.add(c.spec, c.health.next_check)
        # Thousands of VIPs found at once (a start) are summed up in one line.
        added, removed = done.added, done.removed
        summed = len(added) + len(removed) > PLAN_LOG_LIMIT
        level = logging.DEBUG if summed else logging.INFO
        # Sorted only to be logged: at a start of 10 000 VIPs sorting them for debug
        # lines nobody sees took 30 ms of the first discovery (issue 16).
        if log.isEnabledFor(level):
            for a in sorted(added, key=by_version):
                vip = self.core.vips[a].vip
                log.log(level, "VIP %s discovered (frontends %s)", a, ", ".join(vip.frontends))
            for a in sorted(removed, key=by_version):
                log.log(level, "VIP %s is gone from HAProxy's configuration", a)
        if summed and self.discovered:
            log.info("%d VIPs discovered, %d gone", len(added), len(removed))
        for change in done.changes:
            self.changed(change)
        if done.guard:
            self.guard_changed(done.guard)
        if self.found is not None and added:
            self.found(added)
        if not self.discovered:
            log.info("first discovery: %d VIPs", len(self.core.vips))
        self.discovered = True
        self.wake()

    def _log_found(self, found: VipSpecs) -> None:
        for sk in found.skipped:
            log.debug("frontend %s bind %s: no VIP (%s)", sk.frontend, sk.bind, sk.reason)
        for address, names in found.outside.items():
            if address not in self._outside_logged:
                self._outside_logged.add(address)
                log.warning(
                    "VIP %s (frontends %s) is outside allowed_prefixes: never announced",
                    address,
                    ", ".join(names),
                )
        for u in found.unchecked:
            log.warning(
                "VIP %s frontend %s bind %s has no port: cannot check it",
                u.address,
                u.frontend,
                u.bind,
            )

    async def _first_answer_held(self, answer: VipSpecs) -> bool:
        """Whether the first discovery of this process must wait for confirmation.

        A restart of announcer while the routers still see gobgpd's routes (peers
        enabled: withdraw_on_stop false, or no fate-sharing) has no VIPs of its own
        to compare an answer with, so it compares with what gobgpd announces: an
        empty or shrunken first answer is held like any other (nothing is touched)
        until it is confirmed.
        """
        policy = self.cfg().dataplaneapi.vip_loss
        if self.discovered or not policy.enabled:
            return False
        try:
            routes = await asyncio.to_thread(self.table.local_routes)
            if not routes or not await self.sync.routers_see_gobgpd():
                return False
        except GobgpError:
            return False  # gobgpd away: the reconcile will wait for it anyway
        found = frozenset(answer.specs)
        known = addresses_of(routes, self.owned())
        v = self.core.first_answer(known, found, self.clock(), policy)
        if v.event == "held":
            log.error(
                "DataPlaneAPI's first answer lacks %d of the %d VIPs gobgpd announces; "
                "touching nothing until %d answers over %.0fs agree (dataplaneapi.vip_loss)",
                len(known - found),
                len(known),
                policy.confirmations,
                policy.min_seconds,
            )
        elif v.event == "confirmed":
            log.warning("DataPlaneAPI's first answer confirmed: starting with it")
        return v.hold is not None

    def _log_hold(
        self, v: shrink.Verdict[IPAddress], before: shrink.Hold[IPAddress] | None, known: int
    ) -> None:
        policy = self.cfg().dataplaneapi.vip_loss
        if v.event == "held":
            assert v.hold is not None
            log.error(
                "DataPlaneAPI's answer lost %d of %d VIPs at once; keeping them until %d "
                "answers over %.0fs agree (dataplaneapi.vip_loss)",
                len(v.hold.lost),
                known,
                policy.confirmations,
                policy.min_seconds,
            )
        elif v.event == "confirmed":
            assert before is not None
            log.warning(
                "loss of %d VIPs confirmed by %d answers over %.0fs: removing them",
                len(before.lost),
                before.seen + 1,
                self.clock() - before.since,
            )
        elif v.event == "released":
            log.warning("DataPlaneAPI's answer has the held VIPs again: hold released")
