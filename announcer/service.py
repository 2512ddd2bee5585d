"""The daemon: the loops that wire the pure core to the adapters.

Reads as an outline (the uvicorn shape): `run()` starts the loops, waits until
`stop` is set, then shuts down in order (drain, stop the loops, withdraw, release
the keeper). Every rule lives elsewhere; this module moves values between them:

* discoverer.py polls DataPlaneAPI; each good answer becomes VIP specs (vips.py)
  that the core takes (core.apply: new and retired checks, state changes, the
  VIP-loss hold). A failure of any kind keeps the last known VIPs.
* scheduler.py runs each check when due; results go to the core (core.record),
  whose changes are logged, counted, and wake the reconcile.
* the reconcile pass asks the core for the plan against what gobgpd holds
  (gobgp_sync.py: read back when unknown or due, advanced by what is applied) and
  applies it; at a start, routes the routers already see are kept for the VIPs
  without a verdict (the start-up rule, core.started_up). Peers are enabled once
  gobgpd holds the set (fate-sharing, docs/operations.md).
* drainer.py handles drain commands, the disable file and the saved drains; the
  core asks drains.py for each VIP's phase.
* gobgp_sync.py also watches gobgpd's restarts and its peers (alarms).
* the watchdog loop pings systemd while checks finish and reconciles end
  (liveness.py); DataPlaneAPI is not part of it.

Loops share state on one asyncio event loop, so no locks are needed. The
DataPlaneAPI client is asyncio; the blocking gRPC adapter runs in threads via
asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import liveness, shrink, status
from .backoff import Backoff
from .config import Config, reloaded
from .core import Change, CheckState, Core, VipState, addresses_of
from .discoverer import Discoverer
from .drainer import Drainer
from .drains import Drains
from .errors import GobgpError, InvalidRoute
from .gobgp_sync import GobgpSync, WatchableRouteTable
from .model import (
    CheckResult,
    CheckSpec,
    Frontend,
    HostPrefix,
    IPAddress,
    IPNetwork,
    KeeperHandle,
    MetricsSink,
    Notifier,
    Probe,
    Route,
    VipSource,
    by_version,
)
from .planner import Drain, Plan
from .scheduler import Scheduler
from .vips import VipSpecs, vip_specs

log = logging.getLogger("announcer.service")
log_health = logging.getLogger("announcer.health")
log_disc = logging.getLogger("announcer.discovery")
log_bgp = logging.getLogger("announcer.gobgp")
log_drain = logging.getLogger("announcer.drain")

PLAN_LOG_LIMIT = 50  # bigger plans are logged as one summary line


# ------------------------------------------------------------------ the state


class Service:
    """The announcer daemon; `run(stop)` until `stop` is set."""

    def __init__(
        self,
        cfg: Config,
        *,
        source: VipSource,
        table: WatchableRouteTable,
        prober: Probe,
        clock: Callable[[], float] = time.monotonic,
        keeper: KeeperHandle | None = None,
        notifier: Notifier | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.table = table
        self.clock = clock
        self.keeper = keeper
        self.notifier = notifier
        self.metrics = metrics
        # Every VIP and check, the start-up rule and what to plan (core.py, pure).
        self.core = Core(0.0, cfg.service.startup_grace, random.Random())
        self.scheduler = Scheduler(prober, clock, self._result)  # the probes run there
        self.discovered = False  # a first discovery succeeded
        self.synced = asyncio.Event()  # a first full reconcile succeeded
        self._dirty = asyncio.Event()
        self._frontends: tuple[Frontend, ...] = ()  # the last good discovery
        # Whether the routers saw gobgpd's paths when we started (peers not admin-down,
        # or no fate-sharing): then the routes of VIPs without a first verdict are kept
        # as they are until they get one, so a restart of announcer flaps nothing.
        self._inherit: bool | None = None
        self._progress_at = float("-inf")
        self._started = 0.0
        self._outside_logged: set[IPAddress] = set()
        # Every allow-list this process has run with: after a reload that shrinks
        # it, the routes it announced under the old one are still ours to withdraw.
        self._owned: tuple[IPNetwork, ...] = cfg.allowed_prefixes
        # gobgpd: the actual set, its lifetimes and peers (gobgp_sync.py).
        self.sync = GobgpSync(table, lambda: self.cfg, clock, stale=self._mark_all, metrics=metrics)
        # Drain commands, the disable file, the saved state (drainer.py, drains.py).
        self.drainer = Drainer(
            lambda: self.cfg, clock, vips=lambda: self.vips, changed=self._mark_all
        )
        self._last_result = float("-inf")  # when a check last finished (the watchdog)
        self._reconcile_since: float | None = None  # a reconcile pass in progress since
        # DataPlaneAPI: the poll, and its health for status (discoverer.py).
        self.discoverer = Discoverer(
            source,
            lambda: self.cfg,
            clock,
            take=self._take,
            holding=lambda: self.core.hold is not None,
            known=lambda: len(self.vips),
            metrics=metrics,
        )

    @property
    def drains(self) -> Drains:
        return self.drainer.drains

    @property
    def vips(self) -> dict[IPAddress, VipState]:
        return self.core.vips

    @property
    def checks(self) -> dict[CheckSpec, CheckState]:
        return self.core.checks

    @property
    def prober(self) -> Probe:
        return self.scheduler.prober

    @prober.setter
    def prober(self, prober: Probe) -> None:
        self.scheduler.prober = prober

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event, hurry: asyncio.Event | None = None) -> None:
        """Start every loop, run until `stop` is set, then shut down in order.

        A graceful stop drains first (drain.on_stop): GRACEFUL_SHUTDOWN for
        drain.delay, or until `hurry` is set (a second SIGTERM), then withdraws.
        """
        self._started = self.core.started = self.clock()
        self.drainer.load()
        log.info(
            "starting: DataPlaneAPI %s, gobgpd %s, allowed %s",
            self.cfg.dataplaneapi.url,
            self.cfg.gobgp.address,
            ", ".join(map(str, self.cfg.allowed_prefixes)),
        )
        watch_stop = threading.Event()
        loops = [
            asyncio.create_task(self.discoverer.run(), name="discovery"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self.sync.watch(watch_stop), name="watch"),
            asyncio.create_task(self.drainer.watch(), name="drain"),
            asyncio.create_task(self.sync.poll_peers(), name="peers"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
            asyncio.create_task(self.scheduler.run(), name="checks"),
        ]
        stopped = asyncio.create_task(stop.wait())

        async def halt() -> None:
            watch_stop.set()
            self.table.cancel_watch()
            for t in [*loops, stopped]:
                t.cancel()
            self.scheduler.cancel_all()
            await asyncio.gather(*loops, stopped, return_exceptions=True)

        try:
            done, _ = await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in done if t is not stopped]
            if self.notifier is not None:
                self.notifier.stopping()
            if not crashed:
                await self._drain_for_stop(hurry or asyncio.Event())
        except BaseException:
            await asyncio.shield(halt())  # cancelled from outside: no loop may outlive run()
            raise
        # Ordered shutdown: stop producing changes, then withdraw, then close.
        await halt()
        if self.cfg.service.withdraw_on_stop:
            await self.sync.withdraw_all(self._owned, self.cfg.service.stop_timeout)
        for t in crashed:  # a crashed loop must end the process so systemd restarts it
            if not t.cancelled() and t.exception() is not None:
                # No release(): the keeper sees announcer die and disables the peers.
                raise t.exception()  # type: ignore[misc]
        if self.keeper is not None:
            self.keeper.release()
        log.info("stopped")

    async def _drain_for_stop(self, hurry: asyncio.Event) -> None:
        d = self.cfg.drain
        if not (self.cfg.service.withdraw_on_stop and d.on_stop and d.delay > 0):
            return
        if not self.synced.is_set() or not self.desired():
            return  # nothing announced: nothing to move traffic away from
        self.drains.stop = self.clock()
        applied = self.sync.applied
        self._mark_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.service.stop_timeout):
                while self.sync.applied == applied:
                    await asyncio.sleep(0.02)
        log_drain.info(
            "stopping: routes re-announced with GRACEFUL_SHUTDOWN; withdrawing in %.1fs "
            "(send SIGTERM again to withdraw now)",
            d.delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), timeout=d.delay)

    # --------------------------------------------------------------- reload

    def reload(self, new: Config) -> list[str]:
        """Take a new configuration (SIGHUP); returns the changes that need a restart.

        VIPs whose settings did not change keep their checks and state; a VIP whose
        check changed keeps its state until the new check says otherwise (see
        health.seeded), so a reload flaps nothing by itself.
        """
        new, ignored = reloaded(self.cfg, new)
        for k in ignored:
            log.warning("reload: %s changed; it takes effect at the next restart", k)
        self._owned = tuple(dict.fromkeys((*self._owned, *new.allowed_prefixes)))
        self.cfg = new
        self.drains.delay = new.drain.delay
        self._outside_logged.clear()
        if self.discovered:
            self._apply_discovery(vip_specs(self._frontends, self.cfg), guarded=False)
        self._mark_all()
        log.info("configuration reloaded: %d VIPs, %d checks", len(self.vips), len(self.checks))
        return ignored

    # ------------------------------------------------------------ discovery

    async def _take(self, frontends: tuple[Frontend, ...]) -> None:
        """A good DataPlaneAPI answer (discoverer.py)."""
        found = vip_specs(frontends, self.cfg)
        if not await self._first_answer_held(found):
            self._frontends = frontends
            self._apply_discovery(found)

    def _apply_discovery(self, found: VipSpecs, guarded: bool = True) -> None:
        """Take a discovery's VIPs; `guarded`: a big loss is held (shrink.py), as it is
        for every answer of DataPlaneAPI (a reload's own changes are not held)."""
        for sk in found.skipped:
            log_disc.debug("frontend %s bind %s: no VIP (%s)", sk.frontend, sk.bind, sk.reason)
        for address, names in found.outside.items():
            if address not in self._outside_logged:
                self._outside_logged.add(address)
                log_disc.warning(
                    "VIP %s (frontends %s) is outside allowed_prefixes: never announced",
                    address,
                    ", ".join(names),
                )
        for u in found.unchecked:
            log_disc.warning(
                "VIP %s frontend %s bind %s has no port: cannot check it",
                u.address,
                u.frontend,
                u.bind,
            )
        known = len(self.vips)
        before = self.core.hold
        done = self.core.apply(
            found.specs,
            self.clock(),
            self.drains.phase,
            vip_loss=self.cfg.dataplaneapi.vip_loss if guarded else None,
        )
        if done.hold is not None:
            self._log_hold(done.hold, before, known)
        for spec in done.retired:
            self.scheduler.retire(spec)
        for c in done.new_checks:
            self._schedule(c)
        # Thousands of VIPs found at once (a start) are summed up in one line.
        added, removed = done.added, done.removed
        each = log_disc.info if len(added) + len(removed) <= PLAN_LOG_LIMIT else log_disc.debug
        for a in sorted(added, key=by_version):
            each("VIP %s discovered (frontends %s)", a, ", ".join(self.vips[a].vip.frontends))
        for a in sorted(removed, key=by_version):
            each("VIP %s is gone from HAProxy's configuration", a)
        if each is log_disc.debug and self.discovered:
            log_disc.info("%d VIPs discovered, %d gone", len(added), len(removed))
        for change in done.changes:
            self._changed(change)
        if not self.discovered:
            log_disc.info("first discovery: %d VIPs", len(self.vips))
        self.discovered = True
        self._dirty.set()

    async def _first_answer_held(self, answer: VipSpecs) -> bool:
        """Whether the first discovery of this process must wait for confirmation.

        A restart of announcer while the routers still see gobgpd's routes (peers
        enabled: withdraw_on_stop false, or no fate-sharing) has no VIPs of its own
        to compare an answer with, so it compares with what gobgpd announces: an
        empty or shrunken first answer is held like any other (nothing is touched)
        until it is confirmed.
        """
        if self.discovered or not self.cfg.dataplaneapi.vip_loss.enabled:
            return False
        try:
            routes = await asyncio.to_thread(self.table.local_routes)
            if not routes or not await self.sync.routers_see_gobgpd():
                return False
        except GobgpError:
            return False  # gobgpd away: the reconcile will wait for it anyway
        policy = self.cfg.dataplaneapi.vip_loss
        found = frozenset(answer.specs)
        known = addresses_of(routes, self._owned)
        v = self.core.first_answer(known, found, self.clock(), policy)
        if v.event == "held":
            log_disc.error(
                "DataPlaneAPI's first answer lacks %d of the %d VIPs gobgpd announces; "
                "touching nothing until %d answers over %.0fs agree (dataplaneapi.vip_loss)",
                len(known - found),
                len(known),
                policy.confirmations,
                policy.min_seconds,
            )
        elif v.event == "confirmed":
            log_disc.warning("DataPlaneAPI's first answer confirmed: starting with it")
        return v.hold is not None

    def _log_hold(
        self, v: shrink.Verdict[IPAddress], before: shrink.Hold[IPAddress] | None, known: int
    ) -> None:
        policy = self.cfg.dataplaneapi.vip_loss
        if v.event == "held":
            assert v.hold is not None
            log_disc.error(
                "DataPlaneAPI's answer lost %d of %d VIPs at once; keeping them until %d "
                "answers over %.0fs agree (dataplaneapi.vip_loss)",
                len(v.hold.lost),
                known,
                policy.confirmations,
                policy.min_seconds,
            )
        elif v.event == "confirmed":
            assert before is not None
            log_disc.warning(
                "loss of %d VIPs confirmed by %d answers over %.0fs: removing them",
                len(before.lost),
                before.seen + 1,
                self.clock() - before.since,
            )
        elif v.event == "released":
            log_disc.warning("DataPlaneAPI's answer has the held VIPs again: hold released")

    # --------------------------------------------------------------- checks

    def _schedule(self, c: CheckState) -> None:
        self.scheduler.add(c.spec, c.health.next_check)

    def _result(self, spec: CheckSpec, result: CheckResult) -> float | None:
        """A probe's result (from the scheduler); returns when to run the check again."""
        now = self.clock()
        self._last_result = now
        done = self.core.record(spec, result, now, self.drains.phase)
        if done is None:
            return None  # retired while the probe ran
        if self.metrics is not None:
            if result.local is not None:
                self.metrics.check_local_failure(result.local)
            else:
                self.metrics.check_done(spec.kind, result.ok, result.duration)
        if log_health.isEnabledFor(logging.DEBUG):
            log_health.debug(
                "%s: %s %s in %.3fs",
                spec.target,
                "ok" if result.ok else "FAIL",
                result.detail,
                result.duration,
            )
        if done.check is not None:
            # The VIP's line (INFO, below) names the check and the reason; this one
            # would double the log at 10 000 VIPs.
            log_health.debug("check %s: %s", spec.target, done.check)
        for change in done.changes:
            self._changed(change)
        return self.checks[spec].health.next_check

    def _changed(self, change: Change) -> None:
        """Log, count and plan one VIP's change of state."""
        starting = not self.synced.is_set()
        # A start with thousands of VIPs logs its first verdicts as a progress line
        # once a second (below) instead of two lines per VIP.
        quiet = starting and not change.was_settled and len(self.vips) > PLAN_LOG_LIMIT
        (log_health.debug if quiet else log_health.info)(
            "VIP %s: %s -> %s%s",
            change.address,
            change.old,
            change.new,
            f" ({change.why})" if change.why else "",
        )
        if self.metrics is not None:
            self.metrics.transition(change.old, change.new)
        if change.first and starting:
            self._log_progress(quiet)
        self._dirty.set()

    def _log_progress(self, quiet: bool) -> None:
        now = self.clock()
        if not quiet or now - self._progress_at < 1.0:
            return
        self._progress_at = now
        up, down, undecided = self.core.verdicts()
        log_health.info(
            "start-up: %d of %d VIPs have a verdict (%d UP, %d DOWN) after %.1fs",
            up + down,
            up + down + undecided,
            up,
            down,
            now - self._started,
        )

    def _mark_all(self) -> None:
        """Anything else changed (VIP set, policies, drains, gobgpd): plan everything."""
        self.core.mark_all()
        self._dirty.set()

    def phase(self, address: IPAddress, now: float | None = None) -> Drain:
        """The drain phase of one VIP now (drains.py)."""
        return self.drains.phase(address, self.clock() if now is None else now)

    def drain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Start draining VIPs (or the host); raises ControlError for an unknown VIP."""
        return self.drainer.drain(addresses, everything)

    def undrain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Stop draining VIPs (or everything the operator drained)."""
        return self.drainer.undrain(addresses, everything)

    # ------------------------------------------------------------ reconcile

    def desired(self) -> dict[HostPrefix, Route]:
        """The complete set of routes announcer wants in gobgpd now (core.desired)."""
        return self.core.desired(self.clock(), self.drains.phase, self.cfg.allowed_prefixes)

    async def _reconcile_loop(self) -> None:
        # A short cap: once gobgpd is back it must be re-synced within about 2 s, and
        # a failed attempt against a local daemon that is down costs next to nothing.
        backoff = Backoff(first=0.25, cap=2.0)
        failing = False
        while True:
            timeout = self.sync.until_resync()
            if not self.synced.is_set():  # wake when startup_grace ends
                timeout = max(0.0, min(timeout, self.core.grace_left(self.clock())))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=timeout)
            if not self.discovered:
                # Without one good discovery we do not know which routes are healthy:
                # touching gobgpd now could withdraw everything a previous run announced.
                await asyncio.sleep(0.1)
                continue
            self._dirty.clear()
            self._reconcile_since = self.clock()
            try:
                try:
                    await self.reconcile_once()
                finally:
                    self._reconcile_since = None
                if failing:
                    log_bgp.info("gobgpd reachable again; routes re-synced")
                failing = False
                self.sync.ok, self.sync.error = True, ""
                backoff.reset()
            except GobgpError as e:
                delay = backoff.next()
                log_bgp.warning("%s; health checks go on, retrying in %.1fs", e, delay)
                failing = True
                self.sync.ok, self.sync.error = False, str(e)
                if self.metrics is not None:
                    self.metrics.gobgp_error()
                self.sync.invalidate()
                # ...or as soon as gobgpd's event stream opens again: a restarted
                # gobgpd is re-synced the moment it serves, not after the backoff.
                if await self.sync.wait_back(delay):
                    log_bgp.info("gobgpd serves again: re-syncing now")
                    backoff.reset()
                self._mark_all()
            except InvalidRoute as e:
                delay = backoff.next()
                log_bgp.error("refused to send a route: %s; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                self._mark_all()

    async def reconcile_once(self) -> Plan:
        """One pass: read gobgpd if due, plan, apply, enable peers if due.

        A start does not wait for every check: the first pass withdraws what no VIP
        accounts for (and, when the routers could not see gobgpd, what a previous run
        left), the peers come up, and each VIP is announced once its checks pass
        `rise`. When the routers did see gobgpd (_inherit), the routes of VIPs still
        without a verdict stay as they are until they get one or startup_grace ends.
        """
        actual, fresh = await self.sync.read()
        if fresh:
            self.core.mark_all()
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
                self.drains.phase,
                self.cfg.allowed_prefixes,
                self._owned,
                keep,
            )
        except BaseException:
            self.core.mark_all()
            raise
        try:
            await self.sync.apply(plan)
        except BaseException:
            self.core.mark_all()
            raise
        if starting and self.sync.applied == 0:
            log_bgp.info(
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
            log_bgp.info(
                "start-up done after %.2fs: %d VIPs UP, %d not announced%s; %d routes in gobgpd",
                self.clock() - self._started,
                up,
                down + undecided,
                f" ({undecided} without a verdict at startup_grace)" if undecided else "",
                len(actual),
            )
            self.synced.set()
            if self.notifier is not None:
                self.notifier.ready(self._status_line())
        return plan

    # ------------------------------------------------------------- watchdog

    async def _watchdog_loop(self) -> None:
        """Ping systemd's watchdog while the loops make progress; respawn a dead keeper."""
        n = self.notifier
        interval = n.watchdog_interval if n is not None else None
        period = interval / 2 if interval else 1.0
        stuck_logged = False
        while True:
            await asyncio.sleep(period)
            if self.keeper is not None and not self.keeper.alive():
                log.error("the fate-sharing keeper process died; starting a new one")
                self.keeper.respawn()
            if n is None:
                continue
            why = self._stuck(self.clock())
            if why is None:
                if interval:
                    n.watchdog()
                n.status(self._status_line())
                stuck_logged = False
            elif not stuck_logged:
                log.error("not pinging systemd's watchdog: %s", why)
                stuck_logged = True

    def _stuck(self, now: float) -> str | None:
        """Why the machinery that moves routes is stuck, or None (liveness.py)."""
        sample = itertools.islice(self.checks.values(), 0, 1000)
        return liveness.stuck_reason(
            now,
            checks=len(self.checks),
            last_result=max(self._last_result, self._started),
            check_bound=liveness.check_bound(c.params.interval + c.spec.timeout for c in sample),
            reconcile_since=self._reconcile_since,
            reconcile_bound=liveness.RECONCILE_STUCK_AFTER,
        )

    def freeze(self, seconds: float) -> None:
        """Test hook (ANNOUNCER_TEST_HOOKS=1): block the event loop, as a hung loop would."""
        log.warning("test hook: freezing the main loop for %.1fs", seconds)
        time.sleep(seconds)

    # --------------------------------------------------------------- status

    def _status_line(self) -> str:
        return status.line(self)

    async def report(self, fresh: bool = True) -> dict[str, Any]:
        """Everything `announcer status` shows, JSON-ready. `fresh` re-reads gobgpd."""
        routes = self.sync.actual
        if fresh:
            try:
                routes = await asyncio.to_thread(self.table.local_routes)
                self.sync.peers = await asyncio.to_thread(self.table.peers)
            except GobgpError as e:
                log_bgp.debug("status: %s", e)
        return status.report(self, status.take_now(self), routes)
