"""The garbage collector's schedule (collector.py): off during the start, on with the
start's survivors frozen after it, and a cycle among frozen objects still collected
at the next refreeze."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from announcer import collector


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    assert gc.isenabled() and collector._holders == 0
    yield
    collector._holders = 0
    gc.unfreeze()
    gc.enable()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_off_during_the_start_then_on_with_the_survivors_frozen() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        collector.hold()
        task = asyncio.create_task(collector.run(started))
        await asyncio.sleep(0.01)
        assert not gc.isenabled() and gc.get_freeze_count() == 0
        started.set()
        await asyncio.sleep(0.01)
        assert gc.isenabled() and gc.get_freeze_count() > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gc.get_freeze_count() == 0 and gc.isenabled()

    asyncio.run(scenario())


def test_a_start_that_never_ends_holds_the_collector_off_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector, "HOLD_LIMIT", 0.05)

    async def scenario() -> None:
        collector.hold()
        task = asyncio.create_task(collector.run(asyncio.Event()))  # never set
        await asyncio.sleep(0.01)
        assert not gc.isenabled()
        await asyncio.sleep(0.1)
        assert gc.isenabled()
        task.cancel()

    asyncio.run(scenario())


def test_cancelled_before_the_start_is_over_turns_the_collector_back_on() -> None:
    async def scenario() -> None:
        collector.hold()
        task = asyncio.create_task(collector.run(asyncio.Event()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gc.isenabled() and collector._holders == 0

    asyncio.run(scenario())


def test_off_while_any_service_holds_it() -> None:
    collector.hold()
    collector.hold()
    collector.release()
    assert not gc.isenabled()
    collector.release()
    assert gc.isenabled()
    collector.release()  # one release too many: nothing happens
    assert gc.isenabled() and collector._holders == 0


def test_a_collector_off_before_stays_off() -> None:
    gc.disable()
    collector.hold()
    collector.release()
    assert not gc.isenabled()


def test_a_cycle_among_frozen_objects_is_collected_at_the_refreeze(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector, "REFREEZE", 0.05)

    async def scenario() -> None:
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        started = asyncio.Event()
        started.set()
        collector.hold()
        task = asyncio.create_task(collector.run(started))
        await asyncio.sleep(0.01)  # released: the cycle is frozen
        del a, b
        gc.collect()
        assert gone() is not None  # frozen: the collector does not look at it
        await asyncio.sleep(0.1)  # a refreeze
        assert gone() is None
        task.cancel()

    asyncio.run(scenario())


def test_a_service_run_without_a_hold_leaves_the_collector_alone() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        started.set()
        await collector.run(started)  # returns at once
        assert gc.isenabled() and gc.get_freeze_count() == 0

    asyncio.run(scenario())
