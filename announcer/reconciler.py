"""The reconcile pass: make gobgpd hold what the core wants, and the start-up sequence.

One loop, woken by `wake()` (a VIP changed, a drain, a reload, gobgpd came back) or by
the re-sync timer of gobgp_sync.py. Each pass asks the core for the plan against the
actual set (gobgp_sync.py reads gobgpd back when that is unknown or due), applies it,
and enables the peers once gobgpd holds the set (fate-sharing, docs/operations.md).

At a start the first pass withdraws what no VIP accounts for, and each VIP is announced
once its checks pass `rise`; when the routers already saw gobgpd's routes (a restart of
announcer alone), the routes of VIPs without a verdict stay as they are until they get
one or startup_grace ends (the start-up rule, core.started_up). The first complete pass
tells systemd READY=1.

A failure to reach gobgpd is retried with a short backoff, or at once when gobgpd's
event stream opens again; health checks go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .backoff import Backoff
from .config import Config
from .core import Core
from .drains import Drains
from .errors import GobgpError, InvalidRoute
from .gobgp_sync import GobgpSync
from .model import HostPrefix, IPNetwork, MetricsSink, Notifier, Route
from .planner import Plan

log = logging.getLogger("announcer.gobgp")
log_health = logging.getLogger("announcer.health")
DAMPED = "VIP %s flaps: held withdrawn for %.0fs whatever its checks say (damping)"


class Reconciler:
    """Runs the reconcile passes; `synced` is set after the first complete one."""

    def __init__(
        self,
        core: Core,
        sync: GobgpSync,
        cfg: Callable[[], Config],
        clock: Callable[[], float],
        *,
        drains: Callable[[], Drains],
        owned: Callable[[], tuple[IPNetwork, ...]],
        discovered: Callable[[], bool],
        status_line: Callable[[], str],
        guard_changed: Callable[[str], None],
        notifier: Notifier | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        self.core = core
        self.sync = sync
        self.cfg = cfg
        self.clock = clock
        self.drains = drains
        self.owned = owned
        self.discovered = discovered
        self.status_line = status_line
        self.guard_changed = guard_changed  # the guard released at a timer (logged)
        self.notifier = notifier
        self.metrics = metrics
        self.synced = asyncio.Event()  # a first full reconcile succeeded
        self.since: float | None = None  # a pass in progress since (the watchdog)
        self.started = 0.0  # when the service started (the start-up log line)
        self._dirty = asyncio.Event()
        # Whether the routers saw gobgpd's paths when we started (peers not admin-down,
        # or no fate-sharing): then the routes of VIPs without a first verdict are kept
        # as they are until they get one, so a restart of announcer flaps nothing.
        self._inherit: bool | None = None

    def wake(self) -> None:
        """Something changed: run a pass soon."""
        self._dirty.set()

    def mark_all(self) -> None:
        """Anything else changed (VIP set, policies, drains, gobgpd): plan everything."""
        self.core.mark_all()
        self._dirty.set()

    async def run(self) -> None:
        # A short cap: once gobgpd is back it must be re-synced within about 2 s, and
        # a failed attempt against a local daemon that is down costs next to nothing.
        backoff = Backoff(first=0.25, cap=2.0)
        failing = False
        while True:
            timeout = self.sync.until_resync()
            if not self.synced.is_set():  # wake when startup_grace ends
                timeout = max(0.0, min(timeout, self.core.grace_left(self.clock())))
            wake = self.core.next_wake()  # a withdrawal waiting for the guard (guard.py)
            if wake is not None:
                timeout = max(0.0, min(timeout, wake - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=timeout)
            if not self.discovered():
                # Without one good discovery we do not know which routes are healthy:
                # touching gobgpd now could withdraw everything a previous run announced.
                await asyncio.sleep(0.1)
                continue
            self._dirty.clear()
            self.since = self.clock()
            try:
                try:
                    await self.once()
                finally:
                    self.since = None
                if failing:
                    log.info("gobgpd reachable again; routes re-synced")
                failing = False
                self.sync.ok, self.sync.error = True, ""
                backoff.reset()
            except GobgpError as e:
                delay = backoff.next()
                log.warning("%s; health checks go on, retrying in %.1fs", e, delay)
                failing = True
                self.sync.ok, self.sync.error = False, str(e)
                if self.metrics is not None:
                    self.metrics.gobgp_error()
                self.sync.invalidate()
                # ...or as soon as gobgpd's event stream opens again: a restarted
                # gobgpd is re-synced the moment it serves, not after the backoff.
                if await self.sync.wait_back(delay):
                    log.info("gobgpd serves again: re-syncing now")
                    backoff.reset()
                self.mark_all()
            except InvalidRoute as e:
                delay = backoff.next()
                log.error("refused to send a route: %s; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                self.mark_all()

    async def once(self) -> Plan:
        """One pass: read gobgpd if due, plan, apply, enable peers if due."""
        actual, fresh = await self.sync.read()
        if fresh:
            self.core.mark_all()
        now = self.clock()
        expired = self.core.expire(now)
        for a in expired.reused:
            log_health.info("VIP %s: damping over, announced again if healthy", a)
        for a, until in expired.damped:
            log_health.warning(DAMPED, a, until - now)
        if expired.guard:
            self.guard_changed(expired.guard)
        starting = not self.synced.is_set()
        started = True
        keep: dict[HostPrefix, Route] | None = None
        if starting:
            if self._inherit is None:
                self._inherit = await self.sync.routers_see_gobgpd()
            started = self.core.started_up(self.clock())
            if started:
                self.core.mark_all()  # the kept routes are decided now: plan everything
            elif self._inherit:
                keep = actual
        try:
            plan = self.core.plan(
                actual,
                self.clock(),
                self.drains().phase,
                self.cfg().allowed_prefixes,
                self.owned(),
                keep,
            )
            await self.sync.apply(plan)
        except BaseException:
            self.core.mark_all()
            raise
        if starting and self.sync.applied == 0:
            log.info(
                "first sync with gobgpd done: %d routes announced%s",
                len(actual),
                "" if started else " (more as their VIPs' checks pass)",
            )
        # Peers come up once gobgpd holds the set: after a restart of gobgpd the
        # complete set, at a start whatever has a verdict (the rest follows).
        await self.sync.enable_peers()
        self.sync.synced()
        if starting and started:
            up, down, undecided = self.core.verdicts()
            log.info(
                "start-up done after %.2fs: %d VIPs UP, %d not announced%s; %d routes in gobgpd",
                self.clock() - self.started,
                up,
                down + undecided,
                f" ({undecided} without a verdict at startup_grace)" if undecided else "",
                len(actual),
            )
            self.synced.set()
            if self.notifier is not None:
                self.notifier.ready(self.status_line())
        return plan
