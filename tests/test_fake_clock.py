"""The driven clock the scheduler and dispatcher tests step (tests/fake_clock.py), and the system clock."""
from __future__ import annotations

import asyncio
import time

import pytest

from bot.clock import SYSTEM_CLOCK
from tests.fake_clock import ManualClock


async def test_a_timeout_fires_when_time_is_advanced_to_its_deadline_and_not_before():
    clock = ManualClock()
    woke = asyncio.Event()

    async def waiter() -> str:
        try:
            async with clock.timeout(15):
                await woke.wait()
        except TimeoutError:
            return "timed out"
        return "woken"

    task = asyncio.create_task(waiter())
    await clock.wait_for_waiters(1)
    assert clock.waiting() == [clock.time() + 15]
    await clock.advance(14.9)
    assert not task.done()
    await clock.advance(0.1)
    assert await asyncio.wait_for(task, 5) == "timed out"
    assert clock.waiting() == []


async def test_a_waiter_woken_before_its_deadline_leaves_nothing_behind():
    clock = ManualClock()
    woke = asyncio.Event()
    start = clock.time()

    async def waiter() -> None:
        async with clock.timeout(60):
            await woke.wait()

    task = asyncio.create_task(waiter())
    await clock.wait_for_waiters(1)
    woke.set()
    await asyncio.wait_for(task, 5)
    assert clock.waiting() == []
    await clock.advance(120)  # nothing left to fire
    assert clock.time() == start + 120


async def test_a_deadline_already_past_and_no_deadline():
    clock = ManualClock()
    with pytest.raises(TimeoutError):
        async with clock.timeout(0):
            await asyncio.Event().wait()
    never = asyncio.create_task(_wait_without_deadline(clock))
    await clock.advance(10**6)
    assert not never.done() and clock.waiting() == []
    never.cancel()


async def _wait_without_deadline(clock: ManualClock) -> None:
    async with clock.timeout(None):
        await asyncio.Event().wait()


async def test_the_system_clock_is_wall_time_and_asyncio_timeouts():
    before = time.time()
    assert before <= SYSTEM_CLOCK.time() <= time.time()
    with pytest.raises(TimeoutError):
        async with SYSTEM_CLOCK.timeout(0.01):
            await asyncio.Event().wait()
