"""The scheduler's two ways to run a probe: `prober.start` (no task: an HTTP check on a
kept connection) and `prober.run` in a task; a retired check is given up either way."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

from announcer.model import CheckResult, CheckSpec
from announcer.scheduler import Scheduler

A = CheckSpec("http", ipaddress.ip_address("192.0.2.10"), 80)
B = CheckSpec("http", ipaddress.ip_address("192.0.2.11"), 80)
OK = CheckResult(True, "HTTP 200", 0.001)
Results = list[tuple[CheckSpec, CheckResult]]


class FakeProber:
    """`start` answers from a future the test resolves; `run` answers at once."""

    def __init__(self, fast: bool = True) -> None:
        self.fast = fast
        self.started: list[tuple[CheckSpec, asyncio.Future[None]]] = []
        self.ran: list[CheckSpec] = []
        self.cancelled = 0
        self.verdict: dict[CheckSpec, CheckResult | None] = {}

    def start(
        self, spec: CheckSpec, on_done: Callable[[CheckResult | None], None]
    ) -> asyncio.Future[None] | None:
        if not self.fast:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def answered(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                self.cancelled += 1
            else:
                on_done(self.verdict.get(spec, OK))

        done.add_done_callback(answered)
        self.started.append((spec, done))
        return done

    async def run(self, spec: CheckSpec) -> CheckResult:
        self.ran.append(spec)
        return OK


def scenario(prober: FakeProber, body: Callable[[Scheduler, Results], Awaitable[None]]) -> Results:
    async def go() -> Results:
        loop = asyncio.get_running_loop()
        results: Results = []

        def on_result(spec: CheckSpec, r: CheckResult) -> float | None:
            results.append((spec, r))
            return None  # once each

        sched = Scheduler(prober, loop.time, on_result)
        runner = loop.create_task(sched.run())
        try:
            await body(sched, results)
        finally:
            sched.cancel_all()
            runner.cancel()
        return results

    return asyncio.run(go())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


def test_a_started_probe_reports_through_the_callback_without_a_task() -> None:
    prober = FakeProber()

    async def body(sched: Scheduler, results: Results) -> None:
        sched.add(A, 0.0)
        await settle()
        assert [s for s, _ in prober.started] == [A] and not prober.ran
        assert results == [] and A in sched._inflight
        prober.started[0][1].set_result(None)
        await settle()
        assert A not in sched._inflight

    assert scenario(prober, body) == [(A, OK)]


def test_a_dead_kept_connection_falls_back_to_run() -> None:
    prober = FakeProber()
    prober.verdict[A] = None  # the connection was dead before any answer

    async def body(sched: Scheduler, results: Results) -> None:
        sched.add(A, 0.0)
        await settle()
        prober.started[0][1].set_result(None)
        await settle()
        assert prober.ran == [A]

    assert scenario(prober, body) == [(A, OK)]


def test_retiring_a_started_probe_cancels_it_and_drops_a_late_answer() -> None:
    prober = FakeProber()

    async def body(sched: Scheduler, results: Results) -> None:
        sched.add(A, 0.0)
        sched.add(B, 0.0)
        await settle()
        sched.retire(A)
        await settle()
        assert prober.cancelled == 1 and A not in sched._inflight
        # B's answer was already on its way when B was retired: no result, no error.
        prober.started[1][1].set_result(None)
        sched.retire(B)
        await settle()

    assert scenario(prober, body) == []


def test_a_retired_and_re_added_check_keeps_its_new_probe() -> None:
    prober = FakeProber()

    async def body(sched: Scheduler, results: Results) -> None:
        sched.add(A, 0.0)
        await settle()
        first = prober.started[0][1]
        first.set_result(None)  # answered; its callback is queued
        sched.retire(A)  # a reload: the check goes and comes back
        sched.add(A, 0.0)
        await settle()
        assert len(prober.started) == 2 and A in sched._inflight
        assert sched._inflight[A] is prober.started[1][1]  # the late answer left it alone

    scenario(prober, body)


def test_without_start_every_probe_runs_in_a_task() -> None:
    prober = FakeProber(fast=False)

    async def body(sched: Scheduler, results: Results) -> None:
        sched.add(A, 0.0)
        await settle()

    assert scenario(prober, body) == [(A, OK)]
    assert prober.ran == [A] and prober.started == []
