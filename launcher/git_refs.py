"""Ref -> sha with ``git ls-remote`` for repositories served without an installation (LAUNCH_ALLOW).

No API token and no rate limit, but each lookup is a git process talking to a
remote host, on a route strangers reach. So the cost is bounded before any
process starts: answers are cached (found refs for ``ttl``, missing refs,
missing repositories and unreachable hosts for ``negative_ttl``), identical
lookups in flight share one process, at most ``max_running`` git processes run
at once with at most ``max_waiting`` lookups queued behind them (more is
``GitBusy``: a 503 with Retry-After), and each process is killed after ``timeout``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import cachetools

from bot.git_remote import Answer, Outcome, ls_remote

log = logging.getLogger(__name__)

Runner = Callable[..., Awaitable[Answer]]


class GitBusy(Exception):
    """Too many ref lookups are queued already; the client should come back shortly."""


class GitRefs:
    """Bounded, cached ``git ls-remote`` lookups (one instance per service)."""

    def __init__(self, *, ttl: float = 5.0, negative_ttl: float = 10.0, timeout: float = 10.0,
                 max_running: int = 4, max_waiting: int = 32, maxsize: int = 4096,
                 timer: Callable[[], float] = time.monotonic, run: Runner = ls_remote) -> None:
        self.ttl, self.negative_ttl, self.timeout = ttl, negative_ttl, timeout
        self.max_running, self.max_waiting = max_running, max_waiting
        self._run = run
        self._answers: cachetools.TLRUCache[tuple[str, str | None], Answer] = cachetools.TLRUCache(
            maxsize, ttu=self._expires, timer=timer)
        self._inflight: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        self._slots: asyncio.Semaphore | None = None
        self.running = 0  # git processes now

    def _expires(self, _key: object, answer: Answer, now: float) -> float:
        return now + (self.ttl if answer.outcome is Outcome.FOUND else self.negative_ttl)

    @property
    def waiting(self) -> int:
        """Lookups queued for a free slot."""
        return len(self._inflight) - self.running

    def cached(self, url: str, ref: str) -> Answer | None:
        """A fresh answer for this ref, or for the whole repository (missing, unreachable)."""
        return self._answers.get((url, ref)) or self._answers.get((url, None))

    async def lookup(self, url: str, ref: str) -> Answer:
        """The answer for ``ref`` at ``url``; GitBusy when the queue is full."""
        answer = self.cached(url, ref)
        if answer is not None:
            return answer
        key = (url, ref)
        task = self._inflight.get(key)
        if task is None:
            if len(self._inflight) >= self.max_running + self.max_waiting:
                raise GitBusy(f"{len(self._inflight)} ref lookups are already in progress")
            task = asyncio.create_task(self._lookup(url, ref), name=f"ls-remote {ref}")
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _lookup(self, url: str, ref: str) -> Answer:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_running)
        async with self._slots:
            self.running += 1
            try:
                answer = await self._run(url, ref, timeout=self.timeout)
            finally:
                self.running -= 1
        if answer.outcome in (Outcome.NO_REPO, Outcome.UNREACHABLE):
            log.warning("git ls-remote %s %s: %s (%s)", url, ref, answer.outcome.value, answer.detail)
            self._answers[(url, None)] = answer  # every ref of it fails fast for a while
        else:
            self._answers[(url, ref)] = answer
        return answer

    async def close(self) -> None:
        """Stop lookups in flight (their git processes are killed)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
