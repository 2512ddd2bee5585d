"""How often announcer tries gobgpd's event stream again while gobgpd is away (issue 16).

A restarted gobgpd is re-synced when its reopened stream says it is back, so the retry
delay is time the routers spend without this LB's routes: every WATCH_FAST_RETRY for
WATCH_FAST_WINDOW after the stream ended, backing off to 1 s after that.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from announcer import gobgp_sync
from announcer.errors import GobgpError
from announcer.gobgp_sync import WATCH_FAST_RETRY, WATCH_FAST_WINDOW, GobgpSync
from tests.support.fakes import FakeTable, config


class AwayTable(FakeTable):
    """gobgpd that is not there: every attempt to open its event stream fails at once."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def wait_closed(self, on_open: Callable[[], None] | None = None) -> None:
        self.attempts += 1
        raise GobgpError("WatchEvent: UNAVAILABLE (connection refused)")


def retry_delays(monkeypatch: pytest.MonkeyPatch, attempts: int) -> list[tuple[float, float]]:
    """(seconds since the watch began, the delay chosen) for each retry; the clock is
    advanced by each delay instead of sleeping it."""
    now = [1000.0]
    table = AwayTable()
    sync = GobgpSync(table, lambda: config(), lambda: now[0], stale=lambda: None)
    stop = threading.Event()
    delays: list[tuple[float, float]] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args: Any) -> None:
        delays.append((now[0] - 1000.0, delay))
        now[0] += delay
        if len(delays) >= attempts:
            stop.set()
        await real_sleep(0)

    monkeypatch.setattr(gobgp_sync.asyncio, "sleep", fake_sleep)
    asyncio.run(sync.watch(stop))
    assert table.attempts == attempts
    return delays


def test_retries_fast_while_a_restart_is_likely_then_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays = retry_delays(monkeypatch, attempts=200)
    fast = [d for at, d in delays if at < WATCH_FAST_WINDOW]
    slow = [d for at, d in delays if at >= WATCH_FAST_WINDOW]
    assert len(fast) >= WATCH_FAST_WINDOW / WATCH_FAST_RETRY - 1
    assert all(d <= WATCH_FAST_RETRY for d in fast), fast
    # After the window: the backoff's own delays, up to 1 s with jitter.
    assert slow and max(slow) > 0.5 and all(d <= 1.2 for d in slow), slow


def test_each_failed_attempt_gets_a_fresh_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt that never got a stream makes the next one use a new channel
    (GobgpClient.reconnect): grpc 1.51 could keep a channel failing for 5 s after
    gobgpd was back under systemd."""
    now = [1000.0]
    table = AwayTable()
    sync = GobgpSync(table, lambda: config(), lambda: now[0], stale=lambda: None)
    stop = threading.Event()
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args: Any) -> None:
        now[0] += delay
        if table.attempts >= 5:
            stop.set()
        await real_sleep(0)

    monkeypatch.setattr(gobgp_sync.asyncio, "sleep", fake_sleep)
    asyncio.run(sync.watch(stop))
    assert table.attempts == 5
    assert table.reconnects == 5


def test_a_stream_that_ends_keeps_its_connection() -> None:
    """A stream that opened and then ended (gobgpd restarted) is not a failed attempt:
    the channel worked, and the next attempt tries it as it is."""
    table = FakeTable()
    sync = GobgpSync(table, lambda: config(), lambda: 1000.0, stale=lambda: None)
    stop = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(sync.watch(stop))
        for _ in range(3):
            await asyncio.sleep(WATCH_FAST_RETRY + 0.05)  # the stream is open again
            table.restart()  # it ends; gobgpd is back at once
        stop.set()
        table.cancel_watch()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert sync.resyncs >= 2  # streams that opened and ended
    assert table.reconnects == 0
