"""Launch limits: servers in total, servers per repository, launches per client IP per minute.

``check_servers`` and ``RateLimiter.hit`` are decisions over plain data; ``ServerCounter``
is the thin shell that counts servers through the Hub API (cached briefly) and
remembers the launches this process has let through but the Hub does not show yet.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import cachetools

from bot.images import image_repository

if TYPE_CHECKING:
    from launcher.hub import HubClient

log = logging.getLogger(__name__)


class Limit(str, enum.Enum):
    TOTAL = "total"
    PER_REPO = "per-repository"
    RATE = "rate"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a launch may not start now, and when to try again (seconds)."""

    limit: Limit
    message: str
    retry_after: int


@dataclasses.dataclass(frozen=True)
class ServerCounts:
    total: int
    for_repo: int


def check_servers(counts: ServerCounts, max_total: int, max_per_repo: int, full_name: str) -> Refusal | None:
    """A refusal naming the limit reached, or None when one more server fits."""
    if max_total >= 0 and counts.total >= max_total:
        return Refusal(
            Limit.TOTAL,
            f"Too many servers are running: the limit is {max_total} servers in total. "
            "Try again in a few minutes, when idle servers have been stopped.",
            60,
        )
    if max_per_repo >= 0 and counts.for_repo >= max_per_repo:
        return Refusal(
            Limit.PER_REPO,
            f"Too many servers are running for {full_name}: the limit is {max_per_repo} per repository. "
            "Try again in a few minutes.",
            60,
        )
    return None


class RateLimiter:
    """A sliding one-minute window of launch starts per client IP (bounded memory)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 100_000) -> None:
        self.per_minute = per_minute
        self.window = 60.0
        self._clock = clock
        self._hits: cachetools.TTLCache[str, collections.deque[float]] = cachetools.TTLCache(
            max_clients, self.window, timer=clock)

    def hit(self, client: str) -> Refusal | None:
        """Count a launch start for ``client``; a refusal (not counted) if over the limit."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        hits = self._hits.get(client)
        if hits is None:
            hits = collections.deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.per_minute:
            retry = max(1, math.ceil(hits[0] + self.window - now))
            self._hits[client] = hits
            return Refusal(
                Limit.RATE,
                f"Too many launches from your address: the limit is {self.per_minute} per minute. "
                f"Try again in {retry} s.",
                retry,
            )
        hits.append(now)
        self._hits[client] = hits  # re-inserting renews the entry's TTL
        return None


def count_servers(servers: Iterable[tuple[str, str | None]], repo_key: str) -> ServerCounts:
    """``servers`` are (server id, image repository) pairs; count them in total and for one repo."""
    seen: dict[str, str | None] = dict(servers)
    return ServerCounts(total=len(seen), for_repo=sum(1 for r in seen.values() if r == repo_key))


def active_servers_from_users(users: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(user/server, image repository) for every active server in a Hub ``GET /users`` answer."""
    out: list[tuple[str, str | None]] = []
    for user in users:
        for name, server in (user.get("servers") or {}).items():
            if server.get("stopped"):
                continue
            options = server.get("user_options") or {}
            image = options.get("image") if isinstance(options, dict) else None
            repo = image_repository(image) if isinstance(image, str) else None
            out.append((f"{user.get('name')}/{name}", repo))
    return out


class ServerCounter:
    """Servers on the Hub (cached for ``ttl`` s) plus launches admitted here and not yet visible."""

    def __init__(self, hub: "HubClient", *, ttl: float = 5.0, metrics: Any = None) -> None:
        self.hub = hub
        self.ttl = ttl
        self.metrics = metrics
        self._snapshot: list[tuple[str, str | None]] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._admit_lock = asyncio.Lock()
        self._admitted: dict[str, str] = {}  # "user/" -> image repository, until the launch ends

    async def _servers(self) -> list[tuple[str, str | None]]:
        async with self._lock:
            if self._snapshot is None or time.monotonic() - self._fetched_at > self.ttl:
                users = await self.hub.active_users()
                self._snapshot = active_servers_from_users(users)
                self._fetched_at = time.monotonic()
                if self.metrics is not None:
                    self.metrics.servers_running.set(len(self._snapshot))
            return self._snapshot

    async def counts(self, repo_key: str) -> ServerCounts:
        servers = list(await self._servers())
        servers += list(self._admitted.items())
        return count_servers(servers, repo_key)

    async def admit(self, user: str, repo_key: str, max_total: int, max_per_repo: int,
                    full_name: str) -> Refusal | None:
        """Check the limits and, if one more fits, count ``user`` as running until ``release``."""
        async with self._admit_lock:  # check-and-count as one step, or two launches both fit in one slot
            refusal = check_servers(await self.counts(repo_key), max_total, max_per_repo, full_name)
            if refusal is None:
                self._admitted[f"{user}/"] = repo_key
        return refusal

    def release(self, user: str) -> None:
        """The launch ended (ready or failed): the Hub's own count takes over."""
        self._admitted.pop(f"{user}/", None)
        self._snapshot = None  # recount on the next check
