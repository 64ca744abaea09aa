"""Background revalidation, at most one per key at a time (stale-while-revalidate).

The launcher answers a click from what webhooks recorded (heads, repository facts) and
re-reads an old record from GitHub behind the click; many clicks on one old record start
one re-read, not one each. Shutdown cancels what is in flight.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Hashable
from typing import Any


class Revalidations:
    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}

    def start(self, key: Hashable, work: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> None:
        """Run ``work()`` in the background unless a run for ``key`` is in flight."""
        if key in self._tasks:
            return
        task = asyncio.create_task(work(), name=name)
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

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
