"""One launch: what the request decided, its numbered events (kept for replay), its outcome.

A client that reconnects (EventSource sends ``Last-Event-ID``) or reloads the page replays
the events and follows the same launch; ``launcher.launches`` runs them.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import time
from collections.abc import AsyncIterator
from typing import Any

from bot.model import Phase
from launcher.resolve import Access, RepoInfo
from launcher.spec import RepoSpec

TERMINAL = frozenset({Phase.READY.value, Phase.FAILED.value, Phase.CANCELLED.value})
HISTORY = 2000  # events kept per launch for replay


class Outcome(str, enum.Enum):
    READY = "ready"
    BUILT = "built"  # build_only: the image exists, no server was asked for
    FAILED = "failed"  # the build failed, or the server did
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    NOT_BUILT = "not_built"
    QUOTA = "quota"
    HUB_DOWN = "hub_unavailable"
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class LaunchTarget:
    """Everything the request decided: what to launch and for whom."""

    spec: RepoSpec
    sha: str
    image: str
    access: Access
    repo: RepoInfo | None  # None: taken from the build record, or fetched when a build is needed
    launch_host: str  # BINDER_LAUNCH_HOST: our public URL, with a trailing slash
    build_only: bool = False  # BinderHub's ``build_only=true``: build or find the image, start no server


class Launch:
    """A launch's numbered event history plus a wake-up for its followers."""

    def __init__(self, launch_id: str, target: LaunchTarget, client: str | None) -> None:
        self.id = launch_id
        self.target = target
        self.client = client
        self.created = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.outcome: Outcome | None = None
        self._events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=HISTORY)
        self._seq = 0
        self._changed = asyncio.Event()

    @property
    def started(self) -> bool:
        return self.task is not None

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def last_id(self) -> int:
        return self._seq

    def emit(self, phase: Phase | str, message: str = "", **extra: Any) -> None:
        msg: dict[str, Any] = {"phase": phase.value if isinstance(phase, Phase) else phase, "message": message}
        msg.update({k: v for k, v in extra.items() if v is not None})
        self._seq += 1
        self._events.append((self._seq, msg))
        self._changed.set()
        self._changed = asyncio.Event()

    def history(self, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for i, m in self._events if i > after]

    async def follow(self, after: int = 0, keepalive: float = 15.0, first_wait: float | None = None
                     ) -> AsyncIterator[list[tuple[int, dict[str, Any]]]]:
        """Events after ``after`` (replayed, then live) up to a terminal one, in batches: everything
        emitted since the last batch at once, so a stream writes it in one send; [] = keepalive time
        (the first time after at most ``first_wait`` seconds, when given)."""
        wait = keepalive if first_wait is None else min(first_wait, keepalive)
        while True:
            changed = self._changed
            batch = self.history(after)
            for n, (i, msg) in enumerate(batch):
                if msg["phase"] in TERMINAL:
                    yield batch[:n + 1]
                    return
            if batch:
                after = batch[-1][0]
                yield batch
                wait = keepalive
                if changed is not self._changed:  # more arrived while the batch was written
                    continue
            try:
                async with asyncio.timeout(wait):  # not wait_for: no extra task per wake-up
                    await changed.wait()
            except TimeoutError:
                yield []
                wait = keepalive
