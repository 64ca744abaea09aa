"""In-process fan-out of build progress: the launcher's streams and GitHub feedback listen here."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from bot.model import ProgressEvent

if TYPE_CHECKING:
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)

Listener = Callable[["BuildRecord", ProgressEvent], Awaitable[None]]
LaunchListener = Callable[[str, str, str], Awaitable[None]]  # owner, repo, image


class EventBus:
    """Per-image subscriber queues (bounded, drop-oldest) plus whole-bus listeners."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._subs: dict[str, set[asyncio.Queue[ProgressEvent]]] = defaultdict(set)
        self._listeners: list[Listener] = []
        self._launch_listeners: list[LaunchListener] = []
        self._queue_size = queue_size
        self._tasks: set[asyncio.Task[None]] = set()

    def add_listener(self, listener: Listener) -> None:
        """Called for every event of every build (check runs, comments, metrics)."""
        self._listeners.append(listener)

    def add_launch_listener(self, listener: LaunchListener) -> None:
        """Called with (owner, repo, image) whenever the Hub was asked to start a server from an image."""
        self._launch_listeners.append(listener)

    async def launched(self, owner: str, repo: str, image: str) -> None:
        for listener in self._launch_listeners:
            try:
                await listener(owner, repo, image)
            except Exception:  # a listener's failure must not stop the launch
                log.exception("launch of %s: listener %r failed", image, listener)

    @contextlib.asynccontextmanager
    async def subscribe(self, image: str) -> AsyncIterator[asyncio.Queue[ProgressEvent]]:
        q: asyncio.Queue[ProgressEvent] = asyncio.Queue(self._queue_size)
        self._subs[image].add(q)
        try:
            yield q
        finally:
            self._subs[image].discard(q)
            if not self._subs[image]:
                del self._subs[image]

    def subscribers(self, image: str) -> int:
        return len(self._subs.get(image, ()))

    async def publish(self, record: "BuildRecord", event: ProgressEvent, *, to_subscribers: bool = True,
                      to_listeners: bool = True) -> None:
        """Queue ``event`` for the image's subscribers, then tell every listener.

        Records sharing one build publish the same event once per record for the
        listeners (each has its own PR or branch) but only once to subscribers.
        ``to_listeners=False`` is for news only watchers need (a queue position step).
        """
        for q in list(self._subs.get(record.image, ()) if to_subscribers else ()):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)
        for listener in self._listeners if to_listeners else ():
            try:
                await listener(record, event)
            except Exception:  # a listener's failure must not stop the build
                log.exception("build %s: listener %r failed", record.id, listener)
