"""Group commit for accepted deliveries.

Every request must await its own durable commit before it is answered, but one
fsync per request caps throughput at the disk's fsync rate. The writer queues
deliveries while a commit is in flight and stores the whole queue in the next
transaction, so each request still waits for the commit that holds its row,
and a burst costs a handful of fsyncs instead of one per delivery.
"""
from __future__ import annotations

import asyncio
import logging

from bot.store.deliveries import DeliveryStore, NewDelivery

log = logging.getLogger(__name__)


class WriterClosed(RuntimeError):
    """The service is shutting down; the delivery was not stored."""


class DeliveryWriter:
    def __init__(self, store: DeliveryStore, *, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: list[tuple[NewDelivery, asyncio.Future[bool]]] = []
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions run (the benchmark reports the batching ratio)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="delivery-writer")

    async def add(self, item: NewDelivery) -> bool:
        """Store ``item``; True if new, False if its id was already stored. Durable on return."""
        if self._closed:
            raise WriterClosed("delivery writer is closed")
        self.start()
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)  # an abandoned request's error is logged once, not "never retrieved"
        self._queue.append((item, fut))
        self._pending.set()
        # shield: a cancelled request must not cancel the future the writer resolves
        return await asyncio.shield(fut)

    async def close(self) -> None:
        """Stop taking deliveries, commit what is queued, stop the task."""
        self._closed = True
        self._pending.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(batch)
            if self._closed:
                return

    async def _commit(self, batch: list[tuple[NewDelivery, asyncio.Future[bool]]]) -> None:
        try:
            results = await self._store.add_many([item for item, _ in batch])
        except Exception as e:  # the store is down: every waiting request answers 503
            log.error("could not store %d deliveries: %s", len(batch), e)
            for item, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.commits += 1
        for (_, fut), new in zip(batch, results):
            if not fut.done():
                fut.set_result(new)


def _retrieve(fut: "asyncio.Future[bool]") -> None:
    if not fut.cancelled():
        fut.exception()
