"""The daemon: discovery, health checks and reconciliation, wired together.

Reads as an outline (the uvicorn shape): `run()` starts the loops, waits until
`stop` is set, then shuts down in order with a deadline. Three loops share state
on one asyncio event loop, so no locks are needed:

* discovery: polls DataPlaneAPI's configuration version, re-reads frontends when it
  moves (and every full_refresh_interval), and adds/removes checks. A DataPlaneAPI
  failure of any kind keeps the last known VIP set: a broken API answer must never
  withdraw a healthy route.
* checks: one small task per check (not a thread or a process), sleeping until its
  next due time; results go through the pure state machine in health.py.
* reconcile: on every change and every resync_interval, plans the complete desired
  set against gobgpd's actual paths (planner.py) and applies the plan. The actual
  set is re-read from gobgpd periodically, after any failure and whenever the
  WatchEvent stream ends (gobgpd restarted and forgot every path); in between it is
  advanced by the plans applied, so a failover costs one AddPathStream, not a full
  ListPath.

Blocking adapters (requests, grpc) run in threads via asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import health as hm
from .config import CheckConfig, Config
from .discovery import vips_from_frontends
from .errors import DataPlaneAuthError, DataPlaneError, GobgpError, InvalidRoute
from .health import Health, State
from .model import (
    CheckResult,
    CheckSpec,
    Frontend,
    HostPrefix,
    IPAddress,
    Listener,
    Probe,
    Route,
    RouteTable,
    Vip,
    VipSource,
    by_version,
)
from .planner import Plan, after, allowed, desired_routes, make_plan

log = logging.getLogger("announcer.service")
log_health = logging.getLogger("announcer.health")
log_disc = logging.getLogger("announcer.discovery")
log_bgp = logging.getLogger("announcer.gobgp")


class WatchableRouteTable(RouteTable, Protocol):
    """gobgpd as the service needs it: routes, plus a stream whose end means a restart."""

    def wait_closed(self) -> None:
        """Block until gobgpd's event stream ends (it restarted or went away)."""
        ...

    def cancel_watch(self) -> None:
        """Make a blocked wait_closed() return."""
        ...


# ------------------------------------------------------------------ pure bits


def check_spec(address: IPAddress, listener: Listener, cfg: CheckConfig) -> CheckSpec | None:
    """The check for one listener of a VIP, or None when it cannot be checked."""
    kind = cfg.type
    path = cfg.path or "/"
    if kind == "auto":
        if listener.accept_proxy:
            kind = "tcp"  # a plain HTTP request would be refused by accept-proxy
        elif listener.monitor_uri and listener.mode != "tcp":
            kind, path = "http", listener.monitor_uri
        elif cfg.path and listener.mode != "tcp":
            kind = "http"
        else:
            kind = "tcp"
    elif kind == "http" and listener.monitor_uri:
        path = listener.monitor_uri
    if kind == "command":
        return CheckSpec(
            "command", address, None, cfg.timeout, command=cfg.command, shell=cfg.shell
        )
    if listener.port is None:
        return None
    if kind == "tcp":
        return CheckSpec("tcp", address, listener.port, cfg.timeout)
    return CheckSpec(
        "http",
        address,
        listener.port,
        cfg.timeout,
        path=path,
        host=cfg.host,
        expect_status=cfg.expect_status,
        tls=listener.ssl,
        tls_verify=cfg.tls_verify,
    )


@dataclass
class Backoff:
    """Exponential backoff with jitter, reset on success."""

    first: float = 0.5
    cap: float = 30.0
    current: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        self.current = self.first if self.current == 0 else min(self.cap, self.current * 2)
        return self.current * self.rng.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = 0.0


# ------------------------------------------------------------------ the state


@dataclass
class _Check:
    spec: CheckSpec
    health: Health
    vips: set[IPAddress] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    last: CheckResult | None = None


@dataclass
class _VipState:
    vip: Vip
    specs: tuple[CheckSpec, ...]
    state: State = State.INIT


@dataclass(frozen=True)
class VipStatus:
    """One VIP for `announcer status` and the tests."""

    address: IPAddress
    frontends: tuple[str, ...]
    state: State
    checks: tuple[tuple[str, State, str], ...]  # (target, state, last detail)


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
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.table = table
        self.prober = prober
        self.clock = clock
        self.params = cfg.health.params
        self.vips: dict[IPAddress, _VipState] = {}
        self.checks: dict[CheckSpec, _Check] = {}
        self.discovered = False  # a first discovery succeeded
        self.synced = asyncio.Event()  # a first full reconcile succeeded
        self._dirty = asyncio.Event()
        self._actual: dict[HostPrefix, Route] | None = None  # None: re-read from gobgpd
        self._last_read = float("-inf")
        self._started = 0.0
        self._outside_logged: set[IPAddress] = set()
        self._rng = random.Random()
        self.resyncs = 0

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Start every loop, run until `stop` is set, then shut down in order."""
        self._started = self.clock()
        log.info(
            "starting: DataPlaneAPI %s, gobgpd %s, allowed %s",
            self.cfg.dataplaneapi.url,
            self.cfg.gobgp.address,
            ", ".join(map(str, self.cfg.allowed_prefixes)),
        )
        watch_stop = threading.Event()
        loops = [
            asyncio.create_task(self._discovery_loop(), name="discovery"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._watch_loop(watch_stop), name="watch"),
        ]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stopped]
        # Ordered shutdown: stop producing changes, then withdraw, then close.
        watch_stop.set()
        self.table.cancel_watch()
        for t in [*loops, stopped]:
            t.cancel()
        self._cancel_checks()
        await asyncio.gather(*loops, stopped, return_exceptions=True)
        if self.cfg.service.withdraw_on_stop:
            await self._withdraw_all()
        for t in crashed:  # a crashed loop must end the process so systemd restarts it
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        log.info("stopped")

    async def _withdraw_all(self) -> None:
        deadline = self.cfg.service.stop_timeout
        try:
            async with asyncio.timeout(deadline):
                actual = await asyncio.to_thread(self.table.local_routes)
                plan = make_plan({}, actual, self.cfg.allowed_prefixes)
                if plan:
                    await asyncio.to_thread(self.table.apply, plan.withdraw, ())
                log_bgp.info("withdrew %d routes on stop", len(plan.withdraw))
        except (GobgpError, TimeoutError) as e:
            log_bgp.error("could not withdraw routes on stop within %.0fs: %s", deadline, e)

    def _cancel_checks(self) -> None:
        for c in self.checks.values():
            if c.task is not None:
                c.task.cancel()

    # ------------------------------------------------------------ discovery

    async def _discovery_loop(self) -> None:
        dp = self.cfg.dataplaneapi
        backoff = Backoff(first=dp.poll_interval, cap=30.0)
        last_version: int | None = None
        last_full = float("-inf")
        failing = False
        while True:
            try:
                version = await asyncio.to_thread(self.source.configuration_version)
                if version != last_version or self.clock() - last_full >= dp.full_refresh_interval:
                    found = await asyncio.to_thread(self.source.discover)
                    self._apply_discovery(found.frontends)
                    last_version = found.version if found.version is not None else version
                    last_full = self.clock()
                if failing:
                    log_disc.info("DataPlaneAPI answers again (configuration version %s)", version)
                failing = False
                backoff.reset()
                delay = dp.poll_interval
            except DataPlaneError as e:
                delay = backoff.next()
                level = logging.ERROR if isinstance(e, DataPlaneAuthError) else logging.WARNING
                log_disc.log(
                    level,
                    "%s; keeping the last known %d VIPs unchanged, retrying in %.1fs",
                    e,
                    len(self.vips),
                    delay,
                )
                failing = True
            await asyncio.sleep(delay)

    def _apply_discovery(self, frontends: tuple[Frontend, ...]) -> None:
        dp = self.cfg.dataplaneapi
        found = vips_from_frontends(
            frontends, include=dp.include_frontends, exclude=dp.exclude_frontends
        )
        for s in found.skipped:
            log_disc.debug("frontend %s bind %s: no VIP (%s)", s.frontend, s.bind, s.reason)
        wanted: dict[IPAddress, _VipState] = {}
        for address, vip in found.vips.items():
            if not allowed(vip.prefix, self.cfg.allowed_prefixes):
                if address not in self._outside_logged:
                    self._outside_logged.add(address)
                    log_disc.warning(
                        "VIP %s (frontends %s) is outside allowed_prefixes: never announced",
                        address,
                        ", ".join(vip.frontends),
                    )
                continue
            specs = []
            for lst in vip.listeners:
                spec = check_spec(address, lst, self.cfg.health)
                if spec is None:
                    log_disc.warning(
                        "VIP %s frontend %s bind %s has no port: cannot check it",
                        address,
                        lst.frontend,
                        lst.bind,
                    )
                elif spec not in specs:
                    specs.append(spec)
            old = self.vips.get(address)
            wanted[address] = _VipState(vip, tuple(specs), old.state if old else State.INIT)
        added = wanted.keys() - self.vips.keys()
        removed = self.vips.keys() - wanted.keys()
        self.vips = wanted
        self._sync_checks()
        for a in sorted(added, key=by_version):
            log_disc.info("VIP %s discovered (frontends %s)", a, ", ".join(wanted[a].vip.frontends))
        for a in sorted(removed, key=by_version):
            log_disc.info("VIP %s is gone from HAProxy's configuration", a)
        for vs in wanted.values():
            self._update_vip_state(vs)
        if not self.discovered:
            log_disc.info("first discovery: %d VIPs", len(wanted))
        self.discovered = True
        if added or removed:
            self._dirty.set()

    def _sync_checks(self) -> None:
        """Start checks for new specs, stop checks nobody uses any more."""
        users: dict[CheckSpec, set[IPAddress]] = {}
        for address, vs in self.vips.items():
            for spec in vs.specs:
                users.setdefault(spec, set()).add(address)
        for spec in list(self.checks):
            if spec not in users:
                gone = self.checks.pop(spec)
                if gone.task is not None:
                    gone.task.cancel()
        now = self.clock()
        for spec, addresses in users.items():
            c = self.checks.get(spec)
            if c is None:
                # Splay first checks over one interval so thousands of VIPs found at
                # once do not all connect in the same millisecond.
                first = now + self._rng.uniform(0, min(self.params.interval, 1.0))
                c = _Check(spec, hm.initial(now, first))
                c.task = asyncio.create_task(self._check_loop(c), name=f"check {spec.target}")
                self.checks[spec] = c
            c.vips = addresses

    # --------------------------------------------------------------- checks

    async def _check_loop(self, c: _Check) -> None:
        while True:
            delay = c.health.next_check - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            result = await self.prober.run(c.spec)
            self._record(c, result)

    def _record(self, c: _Check, result: CheckResult) -> None:
        now = self.clock()
        c.last = result
        c.health, t = hm.observe(c.health, result.ok, now, self.params, result.detail)
        log_health.debug(
            "%s: %s %s in %.3fs",
            c.spec.target,
            "ok" if result.ok else "FAIL",
            result.detail,
            result.duration,
        )
        if t is not None:
            log_health.info("check %s: %s", c.spec.target, t)
            for address in c.vips:
                vs = self.vips.get(address)
                if vs is not None:
                    self._update_vip_state(vs, f"{c.spec.target} {t.reason}")

    def _update_vip_state(self, vs: _VipState, why: str = "") -> None:
        states = [self.checks[s].health.state for s in vs.specs if s in self.checks]
        new = hm.combine(states, self.cfg.health.combine)
        if new is vs.state:
            return
        old, vs.state = vs.state, new
        log_health.info("VIP %s: %s -> %s%s", vs.vip.address, old, new, f" ({why})" if why else "")
        if hm.announced(old) != hm.announced(new):
            self._dirty.set()

    def _settled(self) -> bool:
        """Every check has a verdict (no INIT or RISING), so the first sync will not flap."""
        return all(c.health.state not in (State.INIT, State.RISING) for c in self.checks.values())

    # ------------------------------------------------------------ reconcile

    def desired(self) -> dict[HostPrefix, Route]:
        """The complete set of routes announcer wants in gobgpd now."""
        announce = [(a, self.cfg.bgp) for a, vs in self.vips.items() if hm.announced(vs.state)]
        return desired_routes(announce, self.cfg.allowed_prefixes).routes

    async def _reconcile_loop(self) -> None:
        # A short cap: once gobgpd is back it must be re-synced within about 2 s, and
        # a failed attempt against a local daemon that is down costs next to nothing.
        backoff = Backoff(first=0.25, cap=2.0)
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self._until_resync())
            if not self.discovered:
                # Without one good discovery we do not know which routes are healthy:
                # touching gobgpd now could withdraw everything a previous run announced.
                await asyncio.sleep(0.1)
                continue
            grace_left = self._started + self.cfg.service.startup_grace - self.clock()
            if not self.synced.is_set() and not self._settled() and grace_left > 0:
                await asyncio.sleep(min(0.05, grace_left))
                continue
            self._dirty.clear()
            try:
                await self.reconcile_once()
                if failing:
                    log_bgp.info("gobgpd reachable again; routes re-synced")
                failing = False
                backoff.reset()
            except GobgpError as e:
                delay = backoff.next()
                log_bgp.warning("%s; health checks go on, retrying in %.1fs", e, delay)
                failing = True
                self._actual = None
                await asyncio.sleep(delay)
                self._dirty.set()
            except InvalidRoute as e:
                delay = backoff.next()
                log_bgp.error("refused to send a route: %s; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                self._dirty.set()

    def _until_resync(self) -> float:
        return max(0.0, self._last_read + self.cfg.gobgp.resync_interval - self.clock())

    async def reconcile_once(self) -> Plan:
        """One pass: read gobgpd if due, plan, apply. Returns the plan applied."""
        if self._actual is None or self._until_resync() <= 0:
            self._actual = await asyncio.to_thread(self.table.local_routes)
            self._last_read = self.clock()
        desired = self.desired()
        plan = make_plan(desired, self._actual, self.cfg.allowed_prefixes)
        if plan:
            for p in plan.withdraw:
                log_bgp.info("withdraw %s", p)
            for r in plan.announce:
                log_bgp.info("announce %s", r.prefix)
            try:
                await asyncio.to_thread(self.table.apply, plan.withdraw, plan.announce)
            except BaseException:
                self._actual = None  # partly applied: read back next time
                raise
            self._actual = after(self._actual, plan)
        if not self.synced.is_set():
            log_bgp.info("first sync with gobgpd done: %d routes announced", len(desired))
            self.synced.set()
        return plan

    # ---------------------------------------------------------------- watch

    async def _watch_loop(self, stop: threading.Event) -> None:
        """Notice a gobgpd restart at once: its event stream ends, and it forgot every path."""
        backoff = Backoff(first=0.2, cap=5.0)
        while not stop.is_set():
            started = self.clock()
            try:
                await asyncio.to_thread(self.table.wait_closed)
            except GobgpError as e:
                log_bgp.debug("watch: %s", e)
            if stop.is_set():
                return
            if self.clock() - started > 1.0:
                backoff.reset()
            log_bgp.info("gobgpd event stream ended: re-reading its paths")
            self.resyncs += 1
            self._actual = None
            self._dirty.set()
            await asyncio.sleep(backoff.next())

    # --------------------------------------------------------------- status

    def status(self) -> list[VipStatus]:
        """Every VIP with its state and checks."""
        out = []
        for address, vs in sorted(self.vips.items(), key=lambda kv: by_version(kv[0])):
            checks = tuple(
                (s.target, self.checks[s].health.state, self._detail(self.checks[s]))
                for s in vs.specs
                if s in self.checks
            )
            out.append(VipStatus(address, vs.vip.frontends, vs.state, checks))
        return out

    @staticmethod
    def _detail(c: _Check) -> str:
        return c.last.detail if c.last else ""
