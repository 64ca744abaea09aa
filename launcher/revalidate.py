"""Background revalidation, at most one per key at a time (stale-while-revalidate).

The launcher answers a click from what webhooks recorded (heads, repository facts) and
re-reads an old record from GitHub behind the click; many clicks on one old record start
one re-read, not one each. A click that read the old record just before a re-read
finished would start another one: ``cooldown`` seconds after a re-read of a key ended,
none starts for it. Shutdown cancels what is in flight.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import cachetools


class Revalidations:
    def __init__(self, *, cooldown: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 maxsize: int = 4096) -> None:
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._done: cachetools.TTLCache[Hashable, bool] | None = \
            cachetools.TTLCache(maxsize, cooldown, timer=clock) if cooldown > 0 else None

    def start(self, key: Hashable, work: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> None:
        """Run ``work()`` in the background unless a run for ``key`` is in flight."""
        if key in self._tasks or (self._done is not None and key in self._done):
            return
        task = asyncio.create_task(work(), name=name)
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._ended(key))

    def _ended(self, key: Hashable) -> None:
        self._tasks.pop(key, None)
        if self._done is not None:
            self._done[key] = True

    def running(self, key: Hashable) -> bool:
        return key in self._tasks

    async def settle(self) -> None:
        """Wait for the runs in flight (tests and shutdown)."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
