"""Launch limits: servers in total, servers per repository, launches per client IP per minute.

``check_servers`` and ``RateLimiter.hit`` are decisions over plain data; ``ServerCounter``
is the thin shell that counts servers: from one read of the Hub, our own starts and
stops, and a background reconcile with the Hub (never a Hub call per launch).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
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


Change = tuple[float, str, "str | None", bool]  # (when, "user/server", image repository, running)


def merge_snapshot(fetched: Iterable[tuple[str, str | None]], journal: list[Change], began: float
                   ) -> tuple[dict[str, str | None], list[Change]]:
    """The Hub's list read from ``began`` on, with our own changes made since then applied on top;
    returns the servers and the changes still newer than the read (older ones it already shows)."""
    servers = dict(fetched)
    recent = [c for c in journal if c[0] >= began]
    for _, server, repo, running in recent:
        if running:
            servers[server] = repo
        else:
            servers.pop(server, None)
    return servers, recent


class ServerCounter:
    """Servers running on the Hub, without asking the Hub on every launch.

    The count starts from one read of the Hub's active users, is kept current from this
    launcher's own starts (a launch that ended ready) and stops, and is reconciled with
    the Hub in the background every ``reconcile_every`` seconds (servers the idle culler
    stopped, or started by someone else). Changes made while a reconcile read was in
    flight are applied again on top of what it read, so a read that began before a
    launch ended cannot drop that server. Launches admitted but not ended count too.
    """

    def __init__(self, hub: "HubClient", *, reconcile_every: float = 30.0, metrics: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.reconcile_every = reconcile_every
        self.metrics = metrics
        self.clock = clock
        self._servers: dict[str, str | None] | None = None  # "user/server" -> image repository
        self._journal: list[Change] = []  # our own starts and stops, until a Hub read shows them
        self._lock = asyncio.Lock()
        self._admit_lock = asyncio.Lock()
        self._admitted: dict[str, str] = {}  # "user/" -> image repository, until the launch ends
        self._task: asyncio.Task[None] | None = None

    # -- the Hub's view ----------------------------------------------------------
    async def reconcile(self) -> None:
        """Replace the count with the Hub's list (plus our changes made while it was read)."""
        async with self._lock:
            began = self.clock()
            fetched = active_servers_from_users(await self.hub.active_users())
            self._servers, self._journal = merge_snapshot(fetched, self._journal, began)
            self._publish()

    def start(self) -> None:
        """Reconcile in the background from now on (once a loop runs)."""
        if self._task is None and self.reconcile_every > 0:
            self._task = asyncio.create_task(self._loop(), name="server-count-reconcile")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_every)
            try:
                await self.reconcile()
            except Exception as e:  # the Hub is down: keep counting from our own changes
                log.warning("could not reconcile the server count with the Hub: %s", e)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- our own changes ---------------------------------------------------------
    def _change(self, server: str, repo: str | None, running: bool) -> None:
        self._journal.append((self.clock(), server, repo, running))
        if self._servers is not None:
            if running:
                self._servers[server] = repo
            else:
                self._servers.pop(server, None)
        self._publish()

    def stopped(self, user: str) -> None:
        """We stopped (or deleted) this user's server."""
        self._change(f"{user}/", None, False)

    def _publish(self) -> None:
        if self.metrics is not None and self._servers is not None:
            self.metrics.servers_running.set(len(self._servers))

    # -- admission ---------------------------------------------------------------
    async def counts(self, repo_key: str) -> ServerCounts:
        if self._servers is None:  # the first count: read the Hub once (HubError if it is down)
            await self.reconcile()
        assert self._servers is not None
        return count_servers([*self._servers.items(), *self._admitted.items()], repo_key)

    async def admit(self, user: str, repo_key: str, max_total: int, max_per_repo: int,
                    full_name: str) -> Refusal | None:
        """Check the limits and, if one more fits, count ``user`` as running until ``release``."""
        async with self._admit_lock:  # check-and-count as one step, or two launches both fit in one slot
            refusal = check_servers(await self.counts(repo_key), max_total, max_per_repo, full_name)
            if refusal is None:
                self._admitted[f"{user}/"] = repo_key
        return refusal

    def release(self, user: str, running: bool = False) -> None:
        """The launch ended: its server counts as running if it started (``running``), else not at all."""
        repo = self._admitted.pop(f"{user}/", None)
        if running:
            self._change(f"{user}/", repo, True)
