"""A driven clock for tests: time moves only when the test says so.

``ManualClock`` satisfies ``bot.clock.Clock``. Its ``timeout()`` is a real
``asyncio.timeout`` whose deadline is set by ``advance()``: code under test waits
exactly as in production, and a test steps time past a retry delay or a
backstop instead of sleeping through it (or reaching into private state).

    clock = ManualClock()
    scheduler = Scheduler(services, clock=clock)
    await clock.advance(15)   # every timeout due by then fires; the woken tasks run
"""
from __future__ import annotations

import asyncio
from types import TracebackType


class _ManualTimeout:
    """``asyncio.timeout(None)`` that ``ManualClock.advance`` expires once its deadline is reached."""

    def __init__(self, clock: "ManualClock", delay: float | None) -> None:
        self._clock = clock
        self.deadline = None if delay is None else clock.time() + delay
        self._inner = asyncio.timeout(None)

    async def __aenter__(self) -> "_ManualTimeout":
        await self._inner.__aenter__()
        self._clock._pending.append(self)
        if self.deadline is not None and self.deadline <= self._clock.time():
            self._fire()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        if self in self._clock._pending:
            self._clock._pending.remove(self)
        return await self._inner.__aexit__(et, e, tb)

    def _fire(self) -> None:
        if self in self._clock._pending:
            self._clock._pending.remove(self)
        self._inner.reschedule(asyncio.get_running_loop().time())  # expire now: TimeoutError in the waiter

    def reschedule(self, delay: float | None) -> None:
        self.deadline = None if delay is None else self._clock.time() + delay


class ManualClock:
    """Wall-clock seconds that start at ``start`` and move by ``advance`` only."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._pending: list[_ManualTimeout] = []
        self.reads = 0  # how often time() was asked: code polling the clock shows it is waiting on it

    def time(self) -> float:
        self.reads += 1
        return self._now

    def timeout(self, delay: float | None) -> _ManualTimeout:
        return _ManualTimeout(self, delay)

    def waiting(self) -> list[float]:
        """The deadlines of the timeouts entered and not yet expired (what is waiting on the clock)."""
        return sorted(t.deadline for t in self._pending if t.deadline is not None)

    async def wait_for_waiters(self, n: int = 1, timeout: float = 10.0) -> None:
        """Until at least ``n`` timeouts with a deadline are waiting (the code under test reached its wait)."""
        async with asyncio.timeout(timeout):
            while len(self.waiting()) < n:
                await asyncio.sleep(0.005)

    async def wait_for_reads(self, n: int, timeout: float = 10.0) -> None:
        """Until time() has been asked ``n`` more times (code that polls the clock is in its wait)."""
        target = self.reads + n
        async with asyncio.timeout(timeout):
            while self.reads < target:
                await asyncio.sleep(0.005)

    async def advance(self, seconds: float) -> None:
        """Move time forward; every timeout due by then fires, and the tasks it woke get to run."""
        self._now += seconds
        for t in list(self._pending):
            if t.deadline is not None and t.deadline <= self._now:
                t._fire()
        for _ in range(5):  # let the woken tasks take their next steps
            await asyncio.sleep(0)
