"""gobgpd as the service sees it: the only owner of the *actual* set, its lifetimes, its peers.

What is in gobgpd is read back from gobgpd, never remembered from what was sent:
gobgpd forgets every API path when it restarts. So this module keeps

* the actual set: read with ListPath when unknown (`invalidate()`: after a failure,
  a restart, a partial apply) or every `resync_interval`, and advanced in between
  by the plans applied, so a failover costs one AddPathStream, not a full ListPath;
* gobgpd's lifetimes (`epoch`): +1 each time its WatchEvent stream ends. The peers,
  configured admin-down (fate-sharing), are enabled once per lifetime, after the
  complete set is in, so an operator's `gobgp neighbor X disable` holds;
* the peers and their alarms (peer_alarms, pure): a managed peer admin-down behind
  our back, or without a session for PEER_DOWN_GRACE.

The plan itself is the core's; this module applies it. Blocking gRPC calls run in
threads (asyncio.to_thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from .backoff import Backoff
from .config import Config
from .errors import GobgpError
from .model import HostPrefix, IPNetwork, PeerStatus, Route, RouteTable, SessionState
from .planner import Plan, advance, make_plan

log = logging.getLogger("announcer.gobgp")

PLAN_LOG_LIMIT = 50  # bigger plans are logged as one summary line
PEER_POLL = 5.0  # how often gobgpd's peers are read (status, metrics, alarms)
PEER_DOWN_GRACE = 10.0  # a session not established this long raises the alarm
# After gobgpd's event stream ends, try to open it again every WATCH_FAST_RETRY seconds
# for WATCH_FAST_WINDOW (a restart, the common case, is back within it), then back off
# to at most 1 s. The reopened stream is what starts the re-sync: every 0.1 s of this
# delay is 0.1 s of the routers without this LB's routes.
WATCH_FAST_RETRY = 0.1
WATCH_FAST_WINDOW = 10.0


class WatchableRouteTable(RouteTable, Protocol):
    """gobgpd as the service needs it: routes, peers, and a stream whose end means a restart."""

    def enable_peer(self, address: str) -> None:
        """Bring an admin-down neighbor up."""
        ...

    def wait_closed(self, on_open: Callable[[], None] | None = None) -> None:
        """Block until gobgpd's event stream ends (it restarted or went away);
        call `on_open` once the stream is established (gobgpd is serving)."""
        ...

    def cancel_watch(self) -> None:
        """Make a blocked wait_closed() return."""
        ...

    def reconnect(self) -> None:
        """A fresh connection for the next call (the last attempt to watch failed)."""
        ...


class SyncMetrics(Protocol):
    def applied(self, withdrawn: int, announced: int) -> None: ...

    def resync(self) -> None: ...


def peer_alarms(
    peers: Iterable[PeerStatus],
    managed: set[str],
    *,
    expect_enabled: bool,
    now: float,
    down_since: dict[str, float],
    grace: float,
) -> dict[str, str]:
    """The managed peers that are down and why ("admin-down", "session <state>").

    `down_since` (updated in place) remembers when each session was last seen not
    established, so a session that is merely coming up is not an alarm.
    """
    out: dict[str, str] = {}
    seen = set()
    for p in peers:
        if managed and p.address not in managed:
            continue
        seen.add(p.address)
        if p.admin_down:
            down_since.pop(p.address, None)
            if expect_enabled:
                out[p.address] = "admin-down"
            continue
        if p.state is SessionState.ESTABLISHED:
            down_since.pop(p.address, None)
            continue
        since = down_since.setdefault(p.address, now)
        if now - since >= grace:
            out[p.address] = f"session {p.state.value}"
    for gone in down_since.keys() - seen:
        del down_since[gone]
    return out


def _attrs(r: Route) -> str:
    extra = [str(c) for c in r.communities]
    if r.med is not None:
        extra.append(f"med {r.med}")
    if r.as_path_prepend:
        extra.append(f"prepend {r.as_path_prepend}")
    return f" ({', '.join(extra)})" if extra else ""


class GobgpSync:
    """What gobgpd holds, its lifetimes and its peers (see the module docstring)."""

    def __init__(
        self,
        table: WatchableRouteTable,
        config: Callable[[], Config],
        clock: Callable[[], float],
        *,
        stale: Callable[[], None],
        metrics: SyncMetrics | None = None,
    ) -> None:
        self.table = table
        self.config = config  # read each time: a reload may change it
        self.clock = clock
        self.stale = stale  # what gobgpd holds is unknown now: plan everything
        self.metrics = metrics
        self.actual: dict[HostPrefix, Route] | None = None  # None: re-read from gobgpd
        self.last_read = float("-inf")
        self.epoch = 1  # gobgpd lifetimes: +1 each time its event stream ends
        self.peers_epoch = 0  # the lifetime whose peers we enabled
        self.back = asyncio.Event()  # its event stream opened: retry at once
        self.peers: list[PeerStatus] = []
        self.peer_alarms: dict[str, str] = {}  # managed peers that are down, and why
        self._gr_warned: set[str] = set()  # peers warned about graceful restart
        self._down_since: dict[str, float] = {}
        self.ok: bool | None = None
        self.error = ""
        self.resyncs = 0
        self.last_sync: float | None = None  # wall clock
        self.applied = 0  # reconcile passes done, for waiting on one

    # ------------------------------------------------------------- the actual set

    def invalidate(self) -> None:
        """What gobgpd holds is unknown: read it back before the next plan."""
        self.actual = None

    def until_resync(self) -> float:
        """Seconds until the periodic read-back is due."""
        interval = self.config().gobgp.resync_interval
        return max(0.0, self.last_read + interval - self.clock())

    async def read(self) -> tuple[dict[HostPrefix, Route], bool]:
        """The actual set, read from gobgpd if unknown or due; True if it was read."""
        if self.actual is not None and self.until_resync() > 0:
            return self.actual, False
        self.actual = dict(await asyncio.to_thread(self.table.local_routes))
        self.last_read = self.clock()
        return self.actual, True

    async def apply(self, plan: Plan) -> None:
        """Send a plan (withdrawals first); the actual set follows it."""
        if not plan:
            return
        # One line per route, or a summary for a big plan (a start or a re-sync of
        # thousands); every route still at DEBUG.
        each = log.info if len(plan) <= PLAN_LOG_LIMIT else log.debug
        if len(plan) > PLAN_LOG_LIMIT:
            log.info(
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
            self.invalidate()  # partly applied: read back next time
            raise
        if self.actual is not None:
            advance(self.actual, plan)
        if self.metrics is not None:
            self.metrics.applied(len(plan.withdraw), len(plan.announce))

    def synced(self) -> None:
        """A reconcile pass went through."""
        self.last_sync = time.time()
        self.applied += 1

    async def withdraw_all(self, owned: tuple[IPNetwork, ...], deadline: float) -> None:
        """Withdraw every route of ours (a stop), within `deadline` seconds."""
        try:
            async with asyncio.timeout(deadline):
                actual = await asyncio.to_thread(self.table.local_routes)
                plan = make_plan({}, actual, owned)
                if plan:
                    await asyncio.to_thread(self.table.apply, plan.withdraw, ())
                log.info("withdrew %d routes on stop", len(plan.withdraw))
        except (GobgpError, TimeoutError) as e:
            log.error("could not withdraw routes on stop within %.0fs: %s", deadline, e)

    # ---------------------------------------------------------------- the peers

    def _managed(self, peers: Iterable[PeerStatus]) -> list[PeerStatus]:
        managed = set(self.config().gobgp.peers)
        return [p for p in peers if not managed or p.address in managed]

    async def routers_see_gobgpd(self) -> bool:
        """Whether gobgpd's paths reach the routers now (peers enabled, or no fate-sharing)."""
        if not self.config().gobgp.fate_sharing:
            return True
        mine = self._managed(await asyncio.to_thread(self.table.peers))
        if not mine:
            return True  # nobody to flap to; keeping is the careful choice
        seen = any(not p.admin_down for p in mine)
        if seen:
            log.info(
                "gobgpd's peers are enabled: routes it has keep their state until their "
                "VIP's checks decide (at most startup_grace)"
            )
        return seen

    async def enable_peers(self) -> None:
        """Enable the admin-down peers, once per gobgpd lifetime (fate-sharing)."""
        if not self.config().gobgp.fate_sharing or self.peers_epoch == self.epoch:
            return
        epoch = self.epoch
        peers = await asyncio.to_thread(self.table.peers)
        for p in self._managed(peers):
            if p.admin_down:
                await asyncio.to_thread(self.table.enable_peer, p.address)
                log.info("peer %s enabled: gobgpd has the complete set", p.address)
        self.peers_epoch = epoch
        self.peers = peers

    async def poll_peers(self) -> None:
        """Keep gobgpd's sessions for status, and raise the alarm when a managed peer
        is down: set admin-down by someone else, or its session not established."""
        while True:
            await asyncio.sleep(PEER_POLL)
            try:
                self.peers = await asyncio.to_thread(self.table.peers)
            except GobgpError:
                continue
            await self._judge_peers(self.clock())

    def _warn_graceful_restart(self, managed: set[str]) -> None:
        """Once per peer: gobgpd advertises graceful restart to it. The keeper withdraws
        before it disables the peers, but if gobgpd itself dies the router keeps this
        LB's routes stale for the restart time (docs/operations.md)."""
        for p in self.peers:
            if p.graceful_restart_s and p.address not in self._gr_warned:
                if managed and p.address not in managed:
                    continue
                self._gr_warned.add(p.address)
                log.warning(
                    "gobgpd advertises graceful restart to %s: if gobgpd dies, that router "
                    "may keep this LB's routes as stale for up to %ds; disable graceful "
                    "restart for the LB neighbors (docs/operations.md)",
                    p.address,
                    p.graceful_restart_s,
                )

    async def _judge_peers(self, now: float) -> None:
        g = self.config().gobgp
        self._warn_graceful_restart(set(g.peers))
        # With fate-sharing the peers are admin-down until we enable them: only from
        # then on (in this gobgpd lifetime) is an admin-down peer someone else's doing.
        expect_enabled = not g.fate_sharing or self.peers_epoch == self.epoch
        alarms = peer_alarms(
            self.peers,
            set(g.peers),
            expect_enabled=expect_enabled,
            now=now,
            down_since=self._down_since,
            grace=PEER_DOWN_GRACE,
        )
        for address, why in alarms.items():
            if self.peer_alarms.get(address) != why:
                hint = ""
                if why == "admin-down" and not g.reenable_peers:
                    hint = (
                        " (announcer leaves it so: gobgp.reenable_peers is false; "
                        f"`gobgp neighbor {address} enable` brings it back)"
                    )
                log.error("peer %s is %s: this LB's routes do not reach it%s", address, why, hint)
        for address in self.peer_alarms.keys() - alarms.keys():
            log.info("peer %s is up again", address)
        self.peer_alarms = alarms
        if g.reenable_peers and expect_enabled:
            for address, why in alarms.items():
                if why == "admin-down":
                    with contextlib.suppress(GobgpError):
                        await asyncio.to_thread(self.table.enable_peer, address)
                        log.warning("peer %s re-enabled (gobgp.reenable_peers)", address)

    # --------------------------------------------------------------- lifetimes

    async def watch(self, stop: threading.Event) -> None:
        """Notice a gobgpd restart at once: its event stream ends, and it forgot every path."""
        # A short cap: reopening the stream is what tells us gobgpd is back.
        backoff = Backoff(first=WATCH_FAST_RETRY, cap=1.0)
        lost = self.clock()  # when the stream last ended (or this watch began)
        loop = asyncio.get_running_loop()
        failed = False  # the last attempt never got a stream: gobgpd was away
        is_open = False  # this attempt got one (set in the worker thread)

        def back() -> None:
            if failed:
                # A gobgpd we have not watched since it started: perhaps a second
                # restart after a re-sync; its peers are admin-down again.
                self.new_lifetime()
            self.back.set()

        def opened() -> None:  # in the worker thread, at END_OF_INIT
            nonlocal is_open
            is_open = True
            loop.call_soon_threadsafe(back)

        while not stop.is_set():
            started = self.clock()
            is_open = False
            try:
                await asyncio.to_thread(self.table.wait_closed, opened)
            except GobgpError as e:
                log.debug("watch: %s", e)
            if stop.is_set():
                return
            if self.clock() - started > 1.0:
                backoff.reset()
            if is_open:
                log.info("gobgpd event stream ended: re-reading its paths")
                lost = self.clock()
                self.resyncs += 1
                if self.metrics is not None:
                    self.metrics.resync()
            failed = not is_open
            if failed:
                # Not a stream that ended but one that never opened: the next attempt
                # gets a fresh connection (GobgpClient.reconnect: grpc 1.51 could
                # keep a connection failing 5 s after gobgpd was back).
                await asyncio.to_thread(self.table.reconnect)
            self.new_lifetime()
            delay = backoff.next()
            if self.clock() - lost < WATCH_FAST_WINDOW:
                delay = min(delay, WATCH_FAST_RETRY)
            await asyncio.sleep(delay)

    def new_lifetime(self) -> None:
        """gobgpd (re)started: it holds nothing of ours and its peers are admin-down."""
        self.epoch += 1
        self.invalidate()
        self.stale()

    async def wait_back(self, delay: float) -> bool:
        """Sleep `delay` seconds, or less if gobgpd's event stream opens; True if it did."""
        self.back.clear()
        try:
            await asyncio.wait_for(self.back.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True
