"""Hub users made ahead, one per repository launched lately, so its next launch is one Hub call.

A server needs its Hub user first: ``POST /users/NAME``, then ``POST /users/NAME/server``,
two round trips on the click's path. After a ready launch of a repository, the user for its
next launch (named as every launch user is, ``<owner>-<repo>-<random>``) is made in the
background; the next launch takes it and only starts the server.

Bounds: at most ``limit`` spares in all (the oldest makes way), each kept at most ``ttl``
seconds, then deleted: well under the idle culler's ``CULL_TIMEOUT`` (600 s by default),
which deletes users without a server (``--cull-users``). Only a launch that got its server
(past the visibility check, the rate limit and the server quotas) makes a spare, so
strangers cannot make users faster than they can start servers; a launch that takes a
spare and then fails deletes it, as it deletes any user it made. What a crash leaves behind are users
without servers, which the idle culler deletes. A spare the culler deleted first (a
CULL_TIMEOUT below ``ttl``) is made again on the launch's path: one Hub call more.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from launcher.spec import username_for

if TYPE_CHECKING:
    from launcher.hub import HubClient

log = logging.getLogger(__name__)

SPARE_TTL = 300.0


@dataclasses.dataclass(frozen=True)
class Spare:
    key: str  # the repository, lower-case owner/repo
    name: str  # the Hub user
    made: float  # clock() when the Hub made it


class SpareUsers:
    def __init__(self, hub: "HubClient", limit: int, *, ttl: float = SPARE_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.limit = limit
        self.ttl = ttl
        self._clock = clock
        self._ready: dict[str, Spare] = {}  # repository key -> its spare
        self._making: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.taken = 0  # launches that found their user made (for the metrics and the benchmark)
        self._closed = False

    def __len__(self) -> int:
        return len(self._ready)

    def take(self, full_name: str) -> Spare | None:
        """The spare user made for this repository (it is then the caller's), or None."""
        key = full_name.lower()
        spare = self._ready.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if spare is None:
            return None
        if self._clock() - spare.made > self.ttl:  # its expiry is due: let it go, as the timer would have
            self._delete(spare.name)
            return None
        self.taken += 1
        return spare

    def give_back(self, spare: Spare) -> None:
        """A spare taken but not used (the launch was refused before it): kept for the next one."""
        self.taken -= 1
        left = self.ttl - (self._clock() - spare.made)
        if self._closed or left <= 0 or spare.key in self._ready:
            self._delete(spare.name)
            return
        self._keep(spare, left)

    def _keep(self, spare: Spare, ttl: float) -> None:
        self._ready[spare.key] = spare
        self._timers[spare.key] = asyncio.get_running_loop().call_later(ttl, self._expire, spare.key, spare.name)

    def refill(self, owner: str, repo: str) -> None:
        """Make the next launch's user for this repository in the background (unless one is there)."""
        key = f"{owner}/{repo}".lower()
        if self.limit <= 0 or self._closed or key in self._ready or key in self._making:
            return
        while self._ready and len(self._ready) + len(self._making) >= self.limit:
            oldest = min(self._ready, key=lambda k: self._ready[k].made)
            self._drop(oldest)
        if len(self._ready) + len(self._making) >= self.limit:
            return
        self._making.add(key)
        name = username_for(owner, repo)
        self._spawn(self._make(key, name), f"spare-user-{name}")

    async def _make(self, key: str, name: str) -> None:
        try:
            await self.hub.create_user(name)
        except Exception as e:  # the launch after it makes its user itself
            log.warning("spare hub user %s for %s not made: %s", name, key, e)
            return
        finally:
            self._making.discard(key)
        if self._closed or key in self._ready:  # shutting down (or, never, a second one): not kept
            await self._delete_now(name)
            return
        self._keep(Spare(key, name, self._clock()), self.ttl)

    def _expire(self, key: str, name: str) -> None:
        self._timers.pop(key, None)
        spare = self._ready.get(key)
        if spare is not None and spare.name == name:
            self._drop(key)

    def _drop(self, key: str) -> None:
        spare = self._ready.pop(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._delete(spare.name)

    def _delete(self, name: str) -> None:
        self._spawn(self._delete_now(name), f"spare-user-delete-{name}")

    async def _delete_now(self, name: str) -> None:
        try:
            await self.hub.delete_idle_user(name)
        except Exception as e:  # the idle culler deletes it later
            log.warning("spare hub user %s not deleted: %s", name, e)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, wait: float = 5.0) -> None:
        """Delete the spares (bounded: a Hub that is down leaves them to the culler)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for key in list(self._ready):
            self._drop(key)
        tasks = list(self._tasks)
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=wait)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
