"""The check schedule: one heap of due times and the probes in flight; nothing else.

One scheduler for every check rather than a task per check sleeping between probes:
at 10 000 checks a second the sleeps' futures and timers were a third of the loop's
work, and 10 000 idle tasks with their frames cost memory. A task exists only while a
probe is in flight, and not even then for an HTTP check on a kept connection (the
steady state): `prober.start` sends its request and answers from the request's
callback, which saved the task and three coroutine frames per probe (issue 16).
What a result means is the caller's (`on_result`), which answers with the check's
next due time, or None if the check is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

from .model import CheckResult, CheckSpec, Probe

log = logging.getLogger("announcer.health")

# prober.start: begin a probe without a task, or None (then prober.run in a task).
Starter = Callable[[CheckSpec, Callable[[CheckResult | None], None]], "asyncio.Future[Any] | None"]

TICK = 0.005  # checks due this close together start in one wake-up


class Scheduler:
    """Runs each check's probe when it is due and hands the result to `on_result`."""

    def __init__(
        self,
        prober: Probe,
        clock: Callable[[], float],
        on_result: Callable[[CheckSpec, CheckResult], float | None],
    ) -> None:
        self.prober = prober
        self.clock = clock
        self.on_result = on_result
        self._heap: list[tuple[float, int, CheckSpec]] = []  # (due, tie-break, check)
        self._seq = itertools.count()
        self._active: set[CheckSpec] = set()
        # A probe in flight: its task, or the request's future of a probe started
        # without one (`prober.start`); cancelling either gives the probe up.
        self._inflight: dict[CheckSpec, asyncio.Future[Any]] = {}
        self._start: Starter | None = getattr(prober, "start", None)
        self._wake = asyncio.Event()  # a check is due earlier than the loop sleeps until

    def add(self, spec: CheckSpec, due: float) -> None:
        """Run `spec` at `due` (monotonic), and again whenever on_result says."""
        self._active.add(spec)
        self._push(spec, due)

    def retire(self, spec: CheckSpec) -> None:
        """Never run `spec` again; a probe of it in flight is cancelled."""
        self._active.discard(spec)
        task = self._inflight.pop(spec, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        """Cancel every probe in flight (shutdown)."""
        for task in self._inflight.values():
            task.cancel()
        self._inflight.clear()

    def _push(self, spec: CheckSpec, due: float) -> None:
        heap = self._heap
        if not heap or due < heap[0][0]:
            self._wake.set()
        heapq.heappush(heap, (due, next(self._seq), spec))

    async def run(self) -> None:
        """Start probes as they fall due, for ever."""
        heap = self._heap
        loop = asyncio.get_running_loop()
        while True:
            # Checks due within the next tick start together: one wake-up for many.
            horizon = self.clock() + TICK
            while heap and heap[0][0] <= horizon:
                spec = heapq.heappop(heap)[2]
                if spec in self._active and spec not in self._inflight:
                    self._begin(spec, loop)
            self._wake.clear()
            if not heap:
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), heap[0][0] - self.clock())

    def _begin(self, spec: CheckSpec, loop: asyncio.AbstractEventLoop) -> None:
        started = None
        if self._start is not None:
            started = self._start(spec, functools.partial(self._answered, spec))
        if started is not None:
            self._inflight[spec] = started
        else:
            self._inflight[spec] = loop.create_task(self._probe(spec))

    def _answered(self, spec: CheckSpec, result: CheckResult | None) -> None:
        """The result of a probe `prober.start` began (None: run it the slow way)."""
        # Ours is done by now; a check retired and added again (a reload) while the
        # answer was on its way may have a newer probe in flight: that one stays.
        mine = self._inflight.get(spec)
        if mine is not None and mine.done():
            del self._inflight[spec]
        if result is not None:
            self._finish(spec, result)
        elif spec in self._active and spec not in self._inflight:
            self._inflight[spec] = asyncio.get_running_loop().create_task(self._probe(spec))

    def _finish(self, spec: CheckSpec, result: CheckResult) -> None:
        if spec in self._active:
            due = self.on_result(spec, result)
            if due is not None:
                self._push(spec, due)

    async def _probe(self, spec: CheckSpec) -> None:
        try:
            result = await self.prober.run(spec)
        except Exception as e:  # a bug: the check fails and goes on, it does not freeze
            log.error("check %s crashed", spec.target, exc_info=True)
            result = CheckResult(False, f"probe error: {type(e).__name__}: {e}", 0.0)
        finally:
            # Only our own entry: a retired check may be added again (a reload) while
            # its cancelled probe is still unwinding.
            if self._inflight.get(spec) is asyncio.current_task():
                del self._inflight[spec]
        self._finish(spec, result)
