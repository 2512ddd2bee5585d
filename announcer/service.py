"""The daemon: the loops that wire the pure core to the adapters.

Reads as an outline (the uvicorn shape): `run()` starts the loops, waits until
`stop` is set, then shuts down in order (drain, stop the loops, withdraw, release
the keeper). Every rule lives elsewhere; this module moves values between them:

* discoverer.py polls DataPlaneAPI; intake.py takes each good answer into the core
  (vips.py makes the VIP specs, core.apply the new and retired checks, state changes
  and the VIP-loss hold). A failure of any kind keeps the last known VIPs.
* scheduler.py runs each check when due; results go to the core (core.record),
  whose changes are logged and counted here, and wake the reconcile.
* reconciler.py makes gobgpd hold the core's plan (gobgp_sync.py owns the actual
  set), runs the start-up sequence (the start-up rule is core.started_up) and
  enables the peers once gobgpd holds the set (fate-sharing, docs/operations.md).
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

from . import collector, liveness, status
from .config import Config, reloaded
from .core import Change, CheckState, Core, VipState
from .discoverer import Discoverer
from .drainer import Drainer
from .drains import Drains
from .errors import GobgpError
from .gobgp_sync import GobgpSync, WatchableRouteTable
from .intake import PLAN_LOG_LIMIT, Intake
from .locality import Locality
from .model import (
    CheckResult,
    CheckSpec,
    IPAddress,
    IPNetwork,
    KeeperHandle,
    MetricsSink,
    Notifier,
    Probe,
    VipSource,
)
from .reconciler import DAMPED, Reconciler
from .scheduler import Scheduler

log = logging.getLogger("announcer.service")
log_health = logging.getLogger("announcer.health")
log_bgp = logging.getLogger("announcer.gobgp")
log_drain = logging.getLogger("announcer.drain")


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
        locality: Callable[[Core, Callable[[], None]], Locality] | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.table = table
        self.clock = clock
        self.keeper = keeper
        self.notifier = notifier
        self.metrics = metrics
        self._started = 0.0
        self._progress_at = float("-inf")
        self._last_result = float("-inf")  # when a check last finished (the watchdog)
        # Every allow-list this process has run with: after a reload that shrinks
        # it, the routes it announced under the old one are still ours to withdraw.
        self._owned: tuple[IPNetwork, ...] = cfg.allowed_prefixes
        current = lambda: self.cfg  # noqa: E731 - every piece reads the config of now
        # Every VIP and check, the start-up rule and what to plan (core.py, pure).
        self.core = Core(0.0, cfg.service.startup_grace, random.Random(), cfg.guard, cfg.damping)
        self.scheduler = Scheduler(prober, clock, self._result)  # the probes run there
        # gobgpd: the actual set, its lifetimes and peers (gobgp_sync.py).
        self.sync = GobgpSync(table, current, clock, stale=self._mark_all, metrics=metrics)
        # The reconcile pass and the start-up sequence (reconciler.py).
        self.reconciler = Reconciler(
            self.core,
            self.sync,
            current,
            clock,
            drains=lambda: self.drains,
            owned=lambda: self._owned,
            discovered=lambda: self.intake.discovered,
            status_line=self._status_line,
            guard_changed=self._guard_changed,
            notifier=notifier,
            metrics=metrics,
        )
        # Whether the kernel delivers each VIP here (locality.py; None: not checked).
        self.locality = locality(self.core, self.reconciler.wake) if locality else None
        # Drain commands, the disable file, the saved state (drainer.py, drains.py).
        self.drainer = Drainer(current, clock, vips=lambda: self.vips, changed=self._mark_all)
        # DataPlaneAPI's answers into the core (intake.py)...
        self.intake = Intake(
            self.core,
            self.scheduler,
            current,
            clock,
            table=table,
            sync=self.sync,
            drains=lambda: self.drains,
            owned=lambda: self._owned,
            changed=self._changed,
            guard_changed=self._guard_changed,
            wake=self.reconciler.wake,
            found=self.locality.check if self.locality else None,
        )
        # ...polled by the discoverer, which also keeps DataPlaneAPI's health for status.
        self.discoverer = Discoverer(
            source,
            current,
            clock,
            take=self.intake.take,
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
    def synced(self) -> asyncio.Event:
        """Set once the first complete reconcile pass is done (READY=1)."""
        return self.reconciler.synced

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
        The garbage collector, held off by `announcer run`, is on once the start is
        done (collector.py).
        """
        schedule = asyncio.create_task(collector.run(self.synced), name="gc")
        try:
            await self._run(stop, hurry)
        finally:
            schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await schedule

    async def _run(self, stop: asyncio.Event, hurry: asyncio.Event | None) -> None:
        self._started = self.core.started = self.reconciler.started = self.clock()
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
            asyncio.create_task(self.reconciler.run(), name="reconcile"),
            asyncio.create_task(self.sync.watch(watch_stop), name="watch"),
            asyncio.create_task(self.drainer.watch(), name="drain"),
            asyncio.create_task(self.sync.poll_peers(), name="peers"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
            asyncio.create_task(self.scheduler.run(), name="checks"),
        ]
        if self.locality is not None:
            loops.append(asyncio.create_task(self.locality.run(), name="locality"))
        stopped = asyncio.create_task(stop.wait())

        async def halt() -> None:
            watch_stop.set()
            self.table.cancel_watch()
            for t in [*loops, stopped]:
                t.cancel()
            self.scheduler.cancel_all()
            await asyncio.gather(*loops, stopped, return_exceptions=True)
            if self.locality is not None:
                self.locality.close()

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
        wanted = self.core.desired(self.clock(), self.drains.phase, self.cfg.allowed_prefixes)
        if not self.synced.is_set() or not wanted:
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
        if self.keeper is not None:
            self.keeper.own(self._owned)
        self.cfg = new
        self.drains.delay = new.drain.delay
        self.core.truth.guard_policy = new.guard
        self.core.truth.damping_policy = new.damping
        self.intake.reload()
        self._mark_all()
        log.info("configuration reloaded: %d VIPs, %d checks", len(self.vips), len(self.checks))
        return ignored

    # --------------------------------------------------------------- checks

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
        if done.guard:
            self._guard_changed(done.guard)
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
        if change.damped_until is not None:
            log_health.warning(DAMPED, change.address, change.damped_until - self.clock())
        if self.metrics is not None:
            self.metrics.transition(change.old, change.new)
        if change.first and starting:
            self._log_progress(quiet)
        self.reconciler.wake()

    def _guard_changed(self, event: str) -> None:
        """The mass-withdrawal guard engaged or released (guard.py): one line each."""
        g, p = self.core.truth.guard, self.cfg.guard
        if event == "engaged" and g is not None:
            log_health.error(
                "mass-withdrawal guard engaged: %d of %d VIPs failed within %.0fs (more than "
                "%.0f%%); keeping them announced with 65535:0 and %d more AS-path prepends "
                "instead of withdrawing them (guard.*)",
                g.fell,
                g.total,
                p.window,
                p.max_down_fraction * 100,
                p.as_path_prepend,
            )
        elif event == "released":
            log_health.warning(
                "mass-withdrawal guard released: the VIPs still DOWN are withdrawn again",
            )
        if self.metrics is not None and event == "engaged":
            self.metrics.guard_engaged()
        self.reconciler.wake()

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
        self.reconciler.mark_all()

    def drain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Start draining VIPs (or the host); raises ControlError for an unknown VIP."""
        return self.drainer.drain(addresses, everything)

    def undrain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Stop draining VIPs (or everything the operator drained)."""
        return self.drainer.undrain(addresses, everything)

    async def progress(
        self, goal: str, addresses: Iterable[str], everything: bool = False
    ) -> dict[str, Any]:
        """How far a drain or undrain has taken effect in gobgpd (`drain --wait`)."""
        # gobgpd's routes count only once synced: before, they may be a previous run's.
        return await self.drainer.progress(
            goal,
            addresses,
            everything,
            core=self.core,
            actual=lambda: self.sync.actual if self.synced.is_set() else None,
        )

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
            reconcile_since=self.reconciler.since,
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
