"""Per-key serial job runners: one worker per sha (check runs) or PR (comment), none per event."""
from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)


class KeyedWorkers:
    """Run jobs one at a time per key; different keys run concurrently."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, collections.deque] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}

    def submit(self, key: Hashable, job: Callable[[], Awaitable[Any]], *, wait: bool = False) -> asyncio.Future | None:
        fut = asyncio.get_running_loop().create_future() if wait else None
        self._queues.setdefault(key, collections.deque()).append((job, fut))
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"feedback:{key}")
        return fut

    async def _run(self, key: Hashable) -> None:
        try:
            while self._queues.get(key):
                job, fut = self._queues[key].popleft()
                try:
                    result = await job()
                except asyncio.CancelledError:
                    if fut is not None and not fut.done():
                        fut.cancel()
                    raise
                except Exception as e:
                    if fut is not None and not fut.done():
                        fut.set_exception(e)
                    else:
                        log.exception("feedback job for %s failed", key)
                else:
                    if fut is not None and not fut.done():
                        fut.set_result(result)
        finally:
            self._tasks.pop(key, None)
            if not self._queues.get(key):
                self._queues.pop(key, None)

    def busy(self) -> bool:
        return bool(self._tasks)

    async def join(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        self._tasks.clear()
        self._queues.clear()
