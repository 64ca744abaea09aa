"""Group commit: many small durable writes, few transactions.

Every request must await its own durable commit before it is answered, but one
fsync per request caps throughput at the disk's fsync rate. A ``GroupCommit``
queues items while a commit is in flight and hands the whole queue to the next
one, so each caller still waits for the transaction that holds its item, and a
burst costs a handful of fsyncs instead of one per item. The receiver uses it
for new deliveries, the dispatcher for completions.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from bot.store.replays import Intake, IntakeStore, SignedDelivery

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class WriterClosed(RuntimeError):
    """The service is shutting down; the item was not written."""


class GroupCommit(Generic[T, R]):
    """Batch ``submit`` calls into calls of ``commit(items) -> results`` (one result per item)."""

    def __init__(self, commit: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, name: str,
                 max_batch: int = 256, max_inflight: int = 2) -> None:
        self._commit_fn = commit
        self._max_inflight = max_inflight
        self._name = name
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions run
        self.items = 0  # items committed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def submit(self, item: T) -> R:
        """Write ``item``; returns its result once the transaction holding it has committed."""
        if self._closed:
            raise WriterClosed(f"{self._name} is closed")
        self.start()
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)  # an abandoned caller's error must not warn "never retrieved"
        self._queue.append((item, fut))
        self._pending.set()
        # a cancelled caller cancels only ``fut``: the item stays queued and is committed
        return await fut

    async def close(self) -> None:
        """Stop taking items, commit what is queued, stop the task."""
        self._closed = True
        self._pending.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        # Up to ``max_inflight`` batches are handed to the store at once: while one
        # commits, the next already waits in the store thread's queue, so the thread
        # never idles through the round trip that reports a commit to the event loop.
        # The store runs them in order, each its own transaction, and every caller
        # still hears only of the commit that holds its item.
        inflight: set[asyncio.Task[None]] = set()
        while True:
            await self._pending.wait()
            self._pending.clear()
            while self._queue:
                if len(inflight) >= self._max_inflight:
                    await asyncio.wait(set(inflight), return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                task = asyncio.create_task(self._commit(batch))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            if self._closed:
                if inflight:
                    await asyncio.wait(inflight)
                return

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit_fn([item for item, _ in batch])
        except Exception as e:  # the store is down: every waiting caller gets the error
            log.error("%s: could not commit %d items: %s", self._name, len(batch), e)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.commits += 1
        self.items += len(batch)
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)


class DeliveryWriter(GroupCommit[SignedDelivery, Intake]):
    """Verified deliveries into the store; ``add`` says whether each was new, a
    redelivery of an accepted id, or a replay of an accepted body."""

    def __init__(self, store: IntakeStore, *, max_batch: int = 256) -> None:
        super().__init__(store.add_many, name="delivery-writer", max_batch=max_batch)

    async def add(self, item: SignedDelivery) -> Intake:
        return await self.submit(item)


def _retrieve(fut: "asyncio.Future[object]") -> None:
    if not fut.cancelled():
        fut.exception()
