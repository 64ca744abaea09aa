"""Throttling for feedback: per-key workers, coalescing timers and retry backoff.

Check runs and the PR comment share one ``Pacer``, so ``drain`` (tests, shutdown)
can send everything pending, coalescing timers and retries included, at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from bot.feedback.workers import KeyedWorkers
from bot.github.outage import FailureKind, classify

log = logging.getLogger(__name__)

MIN_EDIT_INTERVAL = 10.0
MAX_RETRIES = 5
MAX_RETRY_DELAY = 300.0


def retry_delay(base: float, failures: int) -> float:
    """Exponential backoff after ``failures`` failed sends in a row, capped so GitHub hears from us again."""
    return min(base * 2 ** (failures - 1), MAX_RETRY_DELAY)


def edit_delay(last_edit: float, now: float, min_interval: float, *, urgent: bool) -> float:
    """How long to hold an edit back: status changes go at once, log-only ones every ``min_interval``."""
    return 0.0 if urgent else last_edit + min_interval - now


class Pacer:
    """The workers and timers behind feedback, and how often it may talk to GitHub."""

    def __init__(self, *, min_interval: float = MIN_EDIT_INTERVAL, retry_base: float = 5.0) -> None:
        self.min_interval = min_interval
        self.retry_base = retry_base
        self._workers = KeyedWorkers()
        self._timers: dict[asyncio.TimerHandle, Callable[[], None]] = {}

    def submit(self, key: Hashable, job: Callable[[], Awaitable[Any]], *,
               wait: bool = False) -> asyncio.Future | None:
        """Run ``job`` after the jobs already queued for ``key`` (one worker per sha or PR)."""
        return self._workers.submit(key, job, wait=wait)

    def later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        """call_later that ``drain`` can fire early and ``close`` can cancel."""
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.pop(handle, None)
            fn()

        handle = asyncio.get_running_loop().call_later(max(0.0, delay), fire)
        self._timers[handle] = fire
        return handle

    def cancel(self, handle: asyncio.TimerHandle) -> None:
        """Drop a timer that a sooner send made pointless."""
        handle.cancel()
        self._timers.pop(handle, None)

    def sending(self) -> bool:
        """A send is queued or under way (timers not counted): tests wait for this to settle."""
        return self._workers.busy()

    def retry_delay(self, failures: int) -> float:
        return retry_delay(self.retry_base, failures)

    def after_failure(self, exc: BaseException, failures: int) -> float | None:
        """How long before sending again after ``failures`` failed sends in a row; None: give up.

        GitHub down or rate limited never makes us give up (the update waits for the reset,
        or backs off); only an update GitHub refuses for what it says stops after MAX_RETRIES.
        """
        now = time.time()
        verdict = classify(exc, now)
        if not verdict.transient and failures > MAX_RETRIES:
            return None
        delay = self.retry_delay(failures)
        if verdict.kind is FailureKind.RATE_LIMITED and verdict.until is not None:
            delay = max(delay, verdict.until - now)
        return delay

    def edit_delay(self, last_edit: float, *, urgent: bool) -> float:
        return edit_delay(last_edit, asyncio.get_running_loop().time(), self.min_interval, urgent=urgent)

    async def drain(self) -> None:
        """Send everything pending now, coalescing timers included (tests, shutdown)."""
        for _ in range(100):
            for handle, fire in list(self._timers.items()):
                handle.cancel()
                fire()  # now instead of later
            await self._workers.join()
            if not self._timers and not self._workers.busy():
                return

    async def close(self) -> None:
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        await self._workers.close()
