"""The DataPlaneAPI poll: when to read the frontends, and what a failure changes (nothing).

Every `poll_interval` the cheap configuration version is read; the frontends are read
again when it moves, every `full_refresh_interval` (manual edits of haproxy.cfg do
not always move it), and at every poll while a VIP-loss hold waits for answers. Each
good answer goes to `take`. A DataPlaneAPI failure of any kind (down, slow, dripping,
refusing us, garbage, too big, an unverified server) keeps the last known VIPs:
a broken API answer must never withdraw a healthy route. It is logged, counted and
retried with backoff; the client bounds every request in time and size.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from .backoff import Backoff
from .config import Config
from .errors import DataPlaneAuthError, DataPlaneError
from .model import Frontend, VipSource

log = logging.getLogger("announcer.discovery")


class DiscoveryMetrics(Protocol):
    def dataplane_error(self, kind: str) -> None: ...


class Discoverer:
    """Polls DataPlaneAPI and hands each good answer to `take`; keeps its health."""

    def __init__(
        self,
        source: VipSource,
        config: Callable[[], Config],
        clock: Callable[[], float],
        *,
        take: Callable[[tuple[Frontend, ...]], Awaitable[None]],
        holding: Callable[[], bool],
        known: Callable[[], int],
        metrics: DiscoveryMetrics | None = None,
    ) -> None:
        self.source = source
        self.config = config  # read each time: a reload may change it
        self.clock = clock
        self.take = take  # a good answer's frontends
        self.holding = holding  # a VIP-loss hold waits for answers: read every poll
        self.known = known  # how many VIPs the last answers gave (for the log line)
        self.metrics = metrics
        self.ok: bool | None = None
        self.error = ""
        self.last_ok: float | None = None  # wall clock
        self.version: int | None = None

    async def run(self) -> None:
        """Poll for ever."""
        backoff = Backoff(first=self.config().dataplaneapi.poll_interval, cap=30.0)
        last_version: int | None = None
        last_full = float("-inf")
        failing = False
        while True:
            dp = self.config().dataplaneapi
            try:
                version = await self.source.configuration_version()
                if (
                    version != last_version
                    or self.clock() - last_full >= dp.full_refresh_interval
                    or self.holding()
                ):
                    found = await self.source.discover()
                    await self.take(found.frontends)
                    last_version = found.version if found.version is not None else version
                    last_full = self.clock()
                if failing:
                    log.info("DataPlaneAPI answers again (configuration version %s)", version)
                failing = False
                self.ok, self.error = True, ""
                self.last_ok = time.time()
                self.version = last_version
                backoff.reset()
                delay = dp.poll_interval
            except DataPlaneError as e:
                delay = backoff.next()
                level = logging.ERROR if isinstance(e, DataPlaneAuthError) else logging.WARNING
                log.log(
                    level,
                    "%s; keeping the last known %d VIPs unchanged, retrying in %.1fs",
                    e,
                    self.known(),
                    delay,
                )
                failing = True
                self.ok, self.error = False, str(e)
                if self.metrics is not None:
                    self.metrics.dataplane_error(e.kind)
            await asyncio.sleep(delay)
