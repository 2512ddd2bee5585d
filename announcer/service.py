"""The daemon: discovery, health checks and reconciliation, wired together.

Reads as an outline (the uvicorn shape): `run()` starts the loops, waits until
`stop` is set, then shuts down in order. Loops share state on one asyncio event
loop, so no locks are needed:

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
  ListPath. After a full sync following a start of gobgpd (or of announcer), the
  peers that gobgpd holds admin-down are enabled (fate-sharing, docs/operations.md):
  the routers then get the complete set in their first UPDATEs, never part of it.
* drain: operator drains (`announcer drain`), the disable file and a graceful stop
  re-announce with GRACEFUL_SHUTDOWN, then withdraw after drain.delay.
* peers, watchdog: gobgpd's sessions for status and metrics; systemd's watchdog.

Blocking adapters (requests, grpc) run in threads via asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from . import health as hm
from .config import CheckConfig, Config
from .discovery import vips_from_frontends
from .errors import DataPlaneAuthError, DataPlaneError, GobgpError, InvalidRoute
from .health import Health, HealthParams, State
from .model import (
    CheckResult,
    CheckSpec,
    Frontend,
    HostPrefix,
    IPAddress,
    IPNetwork,
    Listener,
    PeerStatus,
    Probe,
    Route,
    RouteTable,
    Vip,
    VipSource,
    by_version,
)
from .planner import Drain, Plan, VipPolicy, after, allowed, make_plan, route_for

log = logging.getLogger("announcer.service")
log_health = logging.getLogger("announcer.health")
log_disc = logging.getLogger("announcer.discovery")
log_bgp = logging.getLogger("announcer.gobgp")
log_drain = logging.getLogger("announcer.drain")

PLAN_LOG_LIMIT = 50  # bigger plans are logged as one summary line


class WatchableRouteTable(RouteTable, Protocol):
    """gobgpd as the service needs it: routes, peers, and a stream whose end means a restart."""

    def enable_peer(self, address: str) -> None:
        """Bring an admin-down neighbor up."""
        ...

    def wait_closed(self) -> None:
        """Block until gobgpd's event stream ends (it restarted or went away)."""
        ...

    def cancel_watch(self) -> None:
        """Make a blocked wait_closed() return."""
        ...


class KeeperHandle(Protocol):
    """The fate-sharing keeper process (keeper.py) as the service sees it."""

    def alive(self) -> bool: ...

    def respawn(self) -> None: ...

    def release(self) -> None:
        """A clean stop: the keeper exits without touching gobgpd."""
        ...


class Notifier(Protocol):
    """systemd's notify socket (sdnotify.py)."""

    @property
    def watchdog_interval(self) -> float | None: ...

    def ready(self, status: str = "") -> object: ...

    def status(self, text: str) -> object: ...

    def watchdog(self) -> object: ...

    def stopping(self) -> object: ...


class MetricsSink(Protocol):
    """The counters and histograms (metrics.py); gauges are read from status()."""

    def check_done(self, kind: str, ok: bool, duration: float) -> None: ...

    def transition(self, old: State, new: State) -> None: ...

    def applied(self, withdrawn: int, announced: int) -> None: ...

    def resync(self) -> None: ...

    def gobgp_error(self) -> None: ...

    def dataplane_error(self, kind: str) -> None: ...


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


def drain_phase(starts: Iterable[float | None], now: float, delay: float) -> Drain:
    """The drain phase of a VIP from the start times of the drains that cover it."""
    present = [s for s in starts if s is not None]
    if not present:
        return Drain.NONE
    return Drain.DRAINING if now - min(present) < delay else Drain.DRAINED


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
    params: HealthParams
    vips: set[IPAddress] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    last: CheckResult | None = None
    last_at: float | None = None  # wall clock


@dataclass
class _VipState:
    vip: Vip
    specs: tuple[CheckSpec, ...]
    check: CheckConfig
    policy: VipPolicy
    override: int | None
    state: State = State.INIT
    since: float = field(default_factory=time.time)  # wall clock, for status
    why: str = ""
    # route_for() memoised per (state, drain phase): at 10 000 VIPs rebuilding every
    # route on every change blocked the loop for half a second (docs/performance.md).
    # The policy never changes under it: a new discovery or reload makes a new _VipState.
    cached: tuple[State, Drain, Route | None] | None = None

    def route(self, phase: Drain) -> Route | None:
        c = self.cached
        if c is not None and c[0] is self.state and c[1] is phase:
            return c[2]
        r = route_for(self.vip.address, self.state, phase, self.policy)
        self.cached = (self.state, phase, r)
        return r


class ControlError(Exception):
    """A control request that cannot be done (unknown VIP, bad address); told to the caller."""


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
        self.prober = prober
        self.clock = clock
        self.keeper = keeper
        self.notifier = notifier
        self.metrics = metrics
        self.vips: dict[IPAddress, _VipState] = {}
        self.checks: dict[CheckSpec, _Check] = {}
        self.discovered = False  # a first discovery succeeded
        self.synced = asyncio.Event()  # a first full reconcile succeeded
        self._dirty = asyncio.Event()
        self._frontends: tuple[Frontend, ...] = ()  # the last good discovery
        self._actual: dict[HostPrefix, Route] | None = None  # None: re-read from gobgpd
        self._last_read = float("-inf")
        self._started = 0.0
        self._outside_logged: set[IPAddress] = set()
        self._rng = random.Random()
        # Every allow-list this process has run with: after a reload that shrinks
        # it, the routes it announced under the old one are still ours to withdraw.
        self._owned: tuple[IPNetwork, ...] = cfg.allowed_prefixes
        # gobgpd lifetimes: +1 each time its event stream ends. Peers are enabled
        # once per lifetime, so an operator's `gobgp neighbor X disable` holds.
        self._epoch = 1
        self._peers_epoch = 0
        # Drains: start times (monotonic) of each cause; see drain_phase().
        self._drain_vips: dict[IPAddress, float] = {}
        self._drain_host: float | None = None
        self._drain_file: float | None = None
        self._drain_stop: float | None = None
        self._applied = 0  # reconciles done, for waiting on one
        self._disc_tick = 0.0
        self.resyncs = 0
        self.peers: list[PeerStatus] = []
        self.gobgp_ok: bool | None = None
        self.gobgp_error = ""
        self.last_sync: float | None = None  # wall clock
        self.dataplane_ok: bool | None = None
        self.dataplane_error = ""
        self.dataplane_last_ok: float | None = None  # wall clock
        self.dataplane_version: int | None = None

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event, hurry: asyncio.Event | None = None) -> None:
        """Start every loop, run until `stop` is set, then shut down in order.

        A graceful stop drains first (drain.on_stop): GRACEFUL_SHUTDOWN for
        drain.delay, or until `hurry` is set (a second SIGTERM), then withdraws.
        """
        self._started = self.clock()
        self._disc_tick = self._started
        self._load_drains()
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
            asyncio.create_task(self._drain_loop(), name="drain"),
            asyncio.create_task(self._peer_loop(), name="peers"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
        ]
        stopped = asyncio.create_task(stop.wait())

        async def halt() -> None:
            watch_stop.set()
            self.table.cancel_watch()
            for t in [*loops, stopped]:
                t.cancel()
            self._cancel_checks()
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
            await self._withdraw_all()
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
        self._drain_stop = self.clock()
        applied = self._applied
        self._dirty.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.service.stop_timeout):
                while self._applied == applied:
                    await asyncio.sleep(0.02)
        log_drain.info(
            "stopping: routes re-announced with GRACEFUL_SHUTDOWN; withdrawing in %.1fs "
            "(send SIGTERM again to withdraw now)",
            d.delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), timeout=d.delay)

    async def _withdraw_all(self) -> None:
        deadline = self.cfg.service.stop_timeout
        try:
            async with asyncio.timeout(deadline):
                actual = await asyncio.to_thread(self.table.local_routes)
                plan = make_plan({}, actual, self._owned)
                if plan:
                    await asyncio.to_thread(self.table.apply, plan.withdraw, ())
                log_bgp.info("withdrew %d routes on stop", len(plan.withdraw))
        except (GobgpError, TimeoutError) as e:
            log_bgp.error("could not withdraw routes on stop within %.0fs: %s", deadline, e)

    def _cancel_checks(self) -> None:
        for c in self.checks.values():
            if c.task is not None:
                c.task.cancel()

    # --------------------------------------------------------------- reload

    def reload(self, new: Config) -> list[str]:
        """Take a new configuration (SIGHUP); returns the changes that need a restart.

        VIPs whose settings did not change keep their checks and state; a VIP whose
        check changed keeps its state until the new check says otherwise (see
        health.seeded), so a reload flaps nothing by itself.
        """
        old = self.cfg
        ignored: list[str] = []

        def keep(section: str, old_v: Any, new_v: Any, *live: str) -> Any:
            merged = replace(old_v, **{k: getattr(new_v, k) for k in live})
            if merged != new_v:
                changed = [k for k in vars(old_v) if getattr(old_v, k) != getattr(new_v, k)]
                ignored.extend(f"{section}.{k}" for k in changed if k not in live)
            return merged

        new = replace(
            new,
            dataplaneapi=keep(
                "dataplaneapi",
                old.dataplaneapi,
                new.dataplaneapi,
                "poll_interval",
                "full_refresh_interval",
                "include_frontends",
                "exclude_frontends",
            ),
            gobgp=keep("gobgp", old.gobgp, new.gobgp, "resync_interval", "peers"),
            service=keep("service", old.service, new.service, "withdraw_on_stop", "stop_timeout"),
            metrics=keep("metrics", old.metrics, new.metrics),
        )
        for k in ignored:
            log.warning("reload: %s changed; it takes effect at the next restart", k)
        self._owned = tuple(dict.fromkeys((*self._owned, *new.allowed_prefixes)))
        self.cfg = new
        self._outside_logged.clear()
        if self.discovered:
            self._apply_discovery(self._frontends)
        self._dirty.set()
        log.info("configuration reloaded: %d VIPs, %d checks", len(self.vips), len(self.checks))
        return ignored

    # ------------------------------------------------------------ discovery

    async def _discovery_loop(self) -> None:
        backoff = Backoff(first=self.cfg.dataplaneapi.poll_interval, cap=30.0)
        last_version: int | None = None
        last_full = float("-inf")
        failing = False
        while True:
            dp = self.cfg.dataplaneapi  # read each time: a reload may change it
            self._disc_tick = self.clock()
            try:
                version = await asyncio.to_thread(self.source.configuration_version)
                if version != last_version or self.clock() - last_full >= dp.full_refresh_interval:
                    found = await asyncio.to_thread(self.source.discover)
                    self._frontends = found.frontends
                    self._apply_discovery(found.frontends)
                    last_version = found.version if found.version is not None else version
                    last_full = self.clock()
                if failing:
                    log_disc.info("DataPlaneAPI answers again (configuration version %s)", version)
                failing = False
                self.dataplane_ok, self.dataplane_error = True, ""
                self.dataplane_last_ok = time.time()
                self.dataplane_version = last_version
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
                self.dataplane_ok, self.dataplane_error = False, str(e)
                if self.metrics is not None:
                    self.metrics.dataplane_error(_error_kind(e))
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
            check, policy, override = self.cfg.settings_for(address, vip.frontends)
            specs: list[CheckSpec] = []
            for lst in vip.listeners:
                spec = check_spec(address, lst, check)
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
            vs = _VipState(vip, tuple(specs), check, policy, override)
            if old is not None:
                vs.state, vs.since, vs.why = old.state, old.since, old.why
            wanted[address] = vs
        added = wanted.keys() - self.vips.keys()
        removed = self.vips.keys() - wanted.keys()
        previous = self.vips
        self.vips = wanted
        self._sync_checks(previous)
        for a in sorted(added, key=by_version):
            log_disc.info("VIP %s discovered (frontends %s)", a, ", ".join(wanted[a].vip.frontends))
        for a in sorted(removed, key=by_version):
            log_disc.info("VIP %s is gone from HAProxy's configuration", a)
        for vs in wanted.values():
            self._update_vip_state(vs)
        if not self.discovered:
            log_disc.info("first discovery: %d VIPs", len(wanted))
        self.discovered = True
        self._dirty.set()  # policies may have changed too; planning an empty diff is cheap

    def _sync_checks(self, previous: dict[IPAddress, _VipState]) -> None:
        """Start checks for new specs, stop checks nobody uses any more."""
        users: dict[CheckSpec, tuple[set[IPAddress], HealthParams]] = {}
        for address, vs in self.vips.items():
            for spec in vs.specs:
                users.setdefault(spec, (set(), vs.check.params))[0].add(address)
        for spec in list(self.checks):
            if spec not in users:
                gone = self.checks.pop(spec)
                if gone.task is not None:
                    gone.task.cancel()
        now = self.clock()
        for spec, (addresses, params) in users.items():
            c = self.checks.get(spec)
            if c is None:
                # Splay first checks over one interval so thousands of VIPs found at
                # once do not all connect in the same millisecond.
                first = now + self._rng.uniform(0, min(params.interval, 1.0))
                before = previous.get(spec.address)
                h = hm.seeded(before.state, now, first) if before else hm.initial(now, first)
                c = _Check(spec, h, params)
                c.task = asyncio.create_task(self._check_loop(c), name=f"check {spec.target}")
                self.checks[spec] = c
            c.vips = addresses
            c.params = params  # rise/fall/interval edits apply from the next result on

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
        c.last, c.last_at = result, time.time()
        if self.metrics is not None:
            self.metrics.check_done(c.spec.kind, result.ok, result.duration)
        c.health, t = hm.observe(c.health, result.ok, now, c.params, result.detail)
        if log_health.isEnabledFor(logging.DEBUG):
            log_health.debug(
                "%s: %s %s in %.3fs",
                c.spec.target,
                "ok" if result.ok else "FAIL",
                result.detail,
                result.duration,
            )
        if t is not None:
            # The VIP's line (INFO, below) names the check and the reason; this one
            # would double the log at 10 000 VIPs.
            log_health.debug("check %s: %s", c.spec.target, t)
            for address in c.vips:
                vs = self.vips.get(address)
                if vs is not None:
                    self._update_vip_state(vs, f"{c.spec.target} {t.reason}")

    def _update_vip_state(self, vs: _VipState, why: str = "") -> None:
        states = [self.checks[s].health.state for s in vs.specs if s in self.checks]
        new = hm.combine(states, vs.check.combine)
        if new is vs.state:
            return
        old, vs.state, vs.since, vs.why = vs.state, new, time.time(), why
        log_health.info("VIP %s: %s -> %s%s", vs.vip.address, old, new, f" ({why})" if why else "")
        if self.metrics is not None:
            self.metrics.transition(old, new)
        phase = self.phase(vs.vip.address)
        a = vs.vip.address
        if route_for(a, old, phase, vs.policy) != route_for(a, new, phase, vs.policy):
            self._dirty.set()

    def _settled(self) -> bool:
        """Every check has a verdict (no INIT or RISING), so the first sync will not flap."""
        return all(c.health.state not in (State.INIT, State.RISING) for c in self.checks.values())

    # ---------------------------------------------------------------- drain

    def phase(self, address: IPAddress, now: float | None = None) -> Drain:
        """The drain phase of one VIP now."""
        if not self._any_drain():
            return Drain.NONE  # the common case, asked for every VIP on every reconcile
        now = self.clock() if now is None else now
        starts = (self._drain_vips.get(address), self._drain_host, self._drain_file)
        phase = drain_phase(starts, now, self.cfg.drain.delay)
        if phase is Drain.NONE and self._drain_stop is not None:
            return Drain.DRAINING  # a stop ends with _withdraw_all(), not with a phase change
        return phase

    def _any_drain(self) -> bool:
        return bool(
            self._drain_vips
            or self._drain_host is not None
            or self._drain_file is not None
            or self._drain_stop is not None
        )

    def drain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Start draining VIPs (or the host); raises ControlError for an unknown VIP."""
        now = self.clock()
        targets = self._parse_vips(addresses)
        if everything and self._drain_host is None:
            self._drain_host = now
            log_drain.info("host drained by the operator: every VIP drains")
        for a in targets:
            if a not in self._drain_vips:
                self._drain_vips[a] = now
                log_drain.info("VIP %s drained by the operator", a)
        self._save_drains()
        self._dirty.set()
        return {
            "draining": [str(a) for a in targets],
            "all": everything,
            "delay": self.cfg.drain.delay,
        }

    def undrain(self, addresses: Iterable[str], everything: bool = False) -> dict[str, Any]:
        """Stop draining VIPs (or everything the operator drained)."""
        targets = self._parse_vips(addresses)
        if everything:
            targets = list(self._drain_vips)
            if self._drain_host is not None:
                log_drain.info("host undrained by the operator")
            self._drain_host = None
        for a in targets:
            if self._drain_vips.pop(a, None) is not None:
                log_drain.info("VIP %s undrained by the operator", a)
        self._save_drains()
        self._dirty.set()
        out: dict[str, Any] = {"undrained": [str(a) for a in targets], "all": everything}
        if self._drain_file is not None:
            out["warning"] = (
                f"{self.cfg.drain.disable_file} exists: the host stays drained until it is removed"
            )
        return out

    def _parse_vips(self, addresses: Iterable[str]) -> list[IPAddress]:
        out: list[IPAddress] = []
        for text in addresses:
            try:
                a = ipaddress.ip_address(text)
            except ValueError:
                raise ControlError(f"{text!r} is not an IP address") from None
            if a not in self.vips and a not in self._drain_vips:
                raise ControlError(
                    f"{a} is not a VIP announcer knows ({len(self.vips)} discovered; "
                    "see `announcer status`)"
                )
            out.append(a)
        return out

    def _drain_file_path(self) -> Path | None:
        d = self.cfg.service.state_dir
        return None if d is None else d / "drains.json"

    def _save_drains(self) -> None:
        path = self._drain_file_path()
        if path is None:
            return
        doc = {"all": self._drain_host is not None, "vips": sorted(map(str, self._drain_vips))}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:
            log_drain.error(
                "cannot save drains to %s (they will not survive a restart): %s", path, e
            )

    def _load_drains(self) -> None:
        """Drains from a previous run are restored as already drained (the delay passed)."""
        path = self._drain_file_path()
        if path is None or not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            vips = [ipaddress.ip_address(v) for v in doc.get("vips", [])]
            everything = bool(doc.get("all", False))
        except (OSError, ValueError, AttributeError, TypeError) as e:
            log_drain.error("ignoring unreadable drain state %s: %s", path, e)
            return
        long_ago = float("-inf")
        self._drain_vips = dict.fromkeys(vips, long_ago)
        if everything:
            self._drain_host = long_ago
        if vips or everything:
            log_drain.warning(
                "restored drains from %s: %s",
                path,
                "the whole host" if everything else ", ".join(map(str, vips)),
            )

    async def _drain_loop(self) -> None:
        """Watch the disable file, and wake the reconcile when a drain delay ends."""
        last_phases: dict[IPAddress, Drain] = {}
        while True:
            now = self.clock()
            f = self.cfg.drain.disable_file
            present = f is not None and f.exists()
            if present and self._drain_file is None:
                self._drain_file = now
                log_drain.warning("%s exists: draining every VIP of this host", f)
                self._dirty.set()
            elif not present and self._drain_file is not None:
                self._drain_file = None
                log_drain.warning("%s is gone: the host is no longer drained by it", f)
                self._dirty.set()
            phases: dict[IPAddress, Drain] = {}
            if self._any_drain():  # no scan of every VIP each second when nothing drains
                for a in self.vips:
                    if (p := self.phase(a, now)) is not Drain.NONE:
                        phases[a] = p
            if phases != last_phases:
                for a, p in phases.items():
                    if last_phases.get(a) is not p and p is Drain.DRAINED:
                        log_drain.info("VIP %s drained: drain delay over", a)
                last_phases = phases
                self._dirty.set()
            await asyncio.sleep(self._next_drain_wake(now))

    def _next_drain_wake(self, now: float) -> float:
        starts = [*self._drain_vips.values(), self._drain_host, self._drain_file]
        ends = [s + self.cfg.drain.delay for s in starts if s is not None]
        pending = [e - now for e in ends if e > now]
        return max(0.01, min([1.0, *pending]))

    # ------------------------------------------------------------ reconcile

    def desired(self) -> dict[HostPrefix, Route]:
        """The complete set of routes announcer wants in gobgpd now."""
        now = self.clock()
        routes: dict[HostPrefix, Route] = {}
        allow = self.cfg.allowed_prefixes
        for a, vs in self.vips.items():
            r = vs.route(self.phase(a, now))
            if r is not None and allowed(r.prefix, allow):
                routes[r.prefix] = r
        return routes

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
                self.gobgp_ok, self.gobgp_error = True, ""
                backoff.reset()
            except GobgpError as e:
                delay = backoff.next()
                log_bgp.warning("%s; health checks go on, retrying in %.1fs", e, delay)
                failing = True
                self.gobgp_ok, self.gobgp_error = False, str(e)
                if self.metrics is not None:
                    self.metrics.gobgp_error()
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
        """One pass: read gobgpd if due, plan, apply, enable peers if due."""
        if self._actual is None or self._until_resync() <= 0:
            self._actual = await asyncio.to_thread(self.table.local_routes)
            self._last_read = self.clock()
        desired = self.desired()
        plan = make_plan(desired, self._actual, self._owned)
        if plan:
            # One line per route, or a summary for a big plan (a start or a re-sync
            # of thousands); every route still at DEBUG.
            each = log_bgp.info if len(plan) <= PLAN_LOG_LIMIT else log_bgp.debug
            if len(plan) > PLAN_LOG_LIMIT:
                log_bgp.info(
                    "applying %d withdrawals and %d announcements",
                    len(plan.withdraw),
                    len(plan.announce),
                )
            for p in plan.withdraw:
                each("withdraw %s", p)
            for r in plan.announce:
                each("announce %s%s", r.prefix, _attrs(r))
            try:
                await asyncio.to_thread(self.table.apply, plan.withdraw, plan.announce)
            except BaseException:
                self._actual = None  # partly applied: read back next time
                raise
            self._actual = after(self._actual, plan)
            if self.metrics is not None:
                self.metrics.applied(len(plan.withdraw), len(plan.announce))
        if not self.synced.is_set():
            log_bgp.info("first sync with gobgpd done: %d routes announced", len(desired))
        # Only now, with the complete set in gobgpd, may the routers see it.
        await self._enable_peers()
        self.last_sync = time.time()
        self._applied += 1
        if not self.synced.is_set():
            self.synced.set()
            if self.notifier is not None:
                self.notifier.ready(self._status_line())
        return plan

    async def _enable_peers(self) -> None:
        if not self.cfg.gobgp.fate_sharing or self._peers_epoch == self._epoch:
            return
        epoch = self._epoch
        peers = await asyncio.to_thread(self.table.peers)
        managed = set(self.cfg.gobgp.peers)
        for p in peers:
            if p.admin_down and (not managed or p.address in managed):
                await asyncio.to_thread(self.table.enable_peer, p.address)
                log_bgp.info("peer %s enabled: gobgpd has the complete set", p.address)
        self._peers_epoch = epoch
        self.peers = peers

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
            self._epoch += 1
            if self.metrics is not None:
                self.metrics.resync()
            self._actual = None
            self._dirty.set()
            await asyncio.sleep(backoff.next())

    async def _peer_loop(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            with contextlib.suppress(GobgpError):
                self.peers = await asyncio.to_thread(self.table.peers)

    # ------------------------------------------------------------- watchdog

    async def _watchdog_loop(self) -> None:
        """Ping systemd's watchdog while the loops make progress; respawn a dead keeper."""
        n = self.notifier
        interval = n.watchdog_interval if n is not None else None
        period = interval / 2 if interval else 1.0
        while True:
            await asyncio.sleep(period)
            if self.keeper is not None and not self.keeper.alive():
                log.error("the fate-sharing keeper process died; starting a new one")
                self.keeper.respawn()
            if n is None:
                continue
            dp = self.cfg.dataplaneapi
            # The discovery loop ticks every poll_interval, or after a backoff of at
            # most 30 s plus two request timeouts; past that it is stuck.
            stuck_after = dp.poll_interval + 2 * dp.timeout + 40.0
            if self.clock() - self._disc_tick < stuck_after:
                if interval:
                    n.watchdog()
                n.status(self._status_line())

    def freeze(self, seconds: float) -> None:
        """Test hook (ANNOUNCER_TEST_HOOKS=1): block the event loop, as a hung loop would."""
        log.warning("test hook: freezing the main loop for %.1fs", seconds)
        time.sleep(seconds)

    # --------------------------------------------------------------- status

    def _status_line(self) -> str:
        up = sum(1 for vs in self.vips.values() if hm.announced(vs.state))
        routes = len(self._actual) if self._actual is not None else 0
        return f"{len(self.vips)} VIPs, {up} healthy, {routes} routes in gobgpd"

    def status(self) -> list[VipStatus]:
        """Every VIP with its state and checks."""
        out = []
        for address, vs in sorted(self.vips.items(), key=lambda kv: by_version(kv[0])):
            checks = tuple(
                (s.target, self.checks[s].health.state, _detail(self.checks[s]))
                for s in vs.specs
                if s in self.checks
            )
            out.append(VipStatus(address, vs.vip.frontends, vs.state, checks))
        return out

    async def report(self, fresh: bool = True) -> dict[str, Any]:
        """Everything `announcer status` shows, JSON-ready. `fresh` re-reads gobgpd."""
        routes = self._actual
        if fresh:
            try:
                routes = await asyncio.to_thread(self.table.local_routes)
                self.peers = await asyncio.to_thread(self.table.peers)
            except GobgpError as e:
                log_bgp.debug("status: %s", e)
        now = self.clock()
        desired = self.desired()
        vips = []
        for address, vs in sorted(self.vips.items(), key=lambda kv: by_version(kv[0])):
            prefix = vs.vip.prefix
            checks = []
            for s in vs.specs:
                c = self.checks.get(s)
                if c is None:
                    continue
                checks.append(
                    {
                        "target": s.target,
                        "kind": s.kind,
                        "state": str(c.health.state),
                        "ok": None if c.last is None else c.last.ok,
                        "detail": _detail(c),
                        "duration_ms": None if c.last is None else round(c.last.duration * 1000, 1),
                        "at": c.last_at,
                    }
                )
            in_gobgp = routes.get(prefix) if routes is not None else None
            vips.append(
                {
                    "address": str(address),
                    "frontends": list(vs.vip.frontends),
                    "state": str(vs.state),
                    "since": vs.since,
                    "why": vs.why,
                    "drain": str(self.phase(address, now)),
                    "override": vs.override,
                    "wanted": prefix in desired,
                    "in_gobgp": None if routes is None else in_gobgp is not None,
                    "in_sync": None if routes is None else desired.get(prefix) == in_gobgp,
                    "communities": [str(c) for c in (in_gobgp.communities if in_gobgp else ())],
                    "checks": checks,
                }
            )
        return {
            "vips": vips,
            "peers": [
                {
                    "address": p.address,
                    "asn": p.peer_asn,
                    "state": p.state.value,
                    "admin_down": p.admin_down,
                    "uptime_s": p.uptime_s,
                }
                for p in self.peers
            ],
            "gobgp": {
                "address": self.cfg.gobgp.address,
                "reachable": self.gobgp_ok,
                "error": self.gobgp_error,
                "routes": None if routes is None else len(routes),
                "resyncs": self.resyncs,
                "last_sync": self.last_sync,
            },
            "dataplaneapi": {
                "url": self.cfg.dataplaneapi.url,
                "ok": self.dataplane_ok,
                "error": self.dataplane_error,
                "last_success": self.dataplane_last_ok,
                "version": self.dataplane_version,
            },
            "drain": {
                "host_by_operator": self._drain_host is not None,
                "host_by_file": self._drain_file is not None,
                "disable_file": str(self.cfg.drain.disable_file or ""),
                "stopping": self._drain_stop is not None,
                "vips": sorted(map(str, self._drain_vips)),
                "delay": self.cfg.drain.delay,
            },
            "synced": self.synced.is_set(),
        }


@dataclass(frozen=True)
class VipStatus:
    """One VIP for the tests: address, frontends, state and (target, state, detail) per check."""

    address: IPAddress
    frontends: tuple[str, ...]
    state: State
    checks: tuple[tuple[str, State, str], ...]


def _detail(c: _Check) -> str:
    return c.last.detail if c.last else ""


def _attrs(r: Route) -> str:
    extra = [str(c) for c in r.communities]
    if r.med is not None:
        extra.append(f"med {r.med}")
    if r.as_path_prepend:
        extra.append(f"prepend {r.as_path_prepend}")
    return f" ({', '.join(extra)})" if extra else ""


def _error_kind(e: DataPlaneError) -> str:
    if isinstance(e, DataPlaneAuthError):
        return "auth"
    if e.status is not None:
        return f"http_{e.status}"
    return "unreachable" if "connect" in str(e).lower() or "timed out" in str(e) else "bad_answer"
