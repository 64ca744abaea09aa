"""Anonymous visitors cannot spend our GitHub quota: who may cause a GitHub call, and how many.

Every GitHub call the launcher makes for a web request (ref -> sha, repository object,
"does this commit exist") asks ``GitHubGuard.admit`` first, after its cache missed:

1. the client's own limit (per minute), so one visitor cannot burn the rest;
2. the installation's hourly budget (or, for LAUNCH_ALLOW repositories read without
   an installation, the service's unauthenticated budget), kept well below GitHub's
   own limit so that webhook work, which shares the installation's quota, is never starved.

Answers are cached by the caller (launcher/resolve.py), negative ones briefly. The
client is whoever the request came from (launcher/client_ip.py); it travels to the
lookup in a context variable set by the route (``acting_for``), so a launch task
started by that request is charged to the same client.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import math
import time
from collections.abc import Callable, Iterator

import cachetools


ANONYMOUS_BUDGET = 40  # GitHub allows 60 unauthenticated calls an hour per address; keep some for people
UNATTRIBUTED = "internal"

_requester: contextvars.ContextVar[str | None] = contextvars.ContextVar("binder_prebuild_requester", default=None)


@dataclasses.dataclass
class QuotaRefused(Exception):
    """No GitHub call now; the route answers 429 with ``retry_after``."""

    message: str
    retry_after: int

    def __str__(self) -> str:
        return self.message


class WindowCounter:
    """At most ``limit`` hits per key in any sliding ``window`` seconds (bounded memory)."""

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: cachetools.TTLCache[str, collections.deque[float]] = cachetools.TTLCache(
            max_keys, window, timer=clock)

    def retry_after(self, key: str) -> int | None:
        """None when one more hit fits now; else seconds until it would. Counts nothing."""
        if self.limit < 0:
            return None
        now = self._clock()
        hits = self._hits.get(key) or collections.deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        self._hits[key] = hits
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window - now)) if hits else math.ceil(self.window)
        return None

    def hit(self, key: str) -> None:
        """Count one hit (after ``retry_after`` said it fits)."""
        if self.limit >= 0:
            hits = self._hits.get(key) or collections.deque()
            hits.append(self._clock())
            self._hits[key] = hits  # re-inserting renews the entry's TTL


@contextlib.contextmanager
def acting_for(client: str) -> Iterator[None]:
    """GitHub calls made inside (and by tasks started inside) are charged to ``client``."""
    token = _requester.set(client)
    try:
        yield
    finally:
        _requester.reset(token)


def current_requester() -> str | None:
    return _requester.get()


class GitHubGuard:
    """The two limits of the module docstring, over plain counters."""

    def __init__(self, per_client_per_minute: int, per_installation_per_hour: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clients = WindowCounter(per_client_per_minute, 60.0, clock=clock)
        self.installations = WindowCounter(per_installation_per_hour, 3600.0, clock=clock)
        self.anonymous = WindowCounter(min(ANONYMOUS_BUDGET, per_installation_per_hour)
                                       if per_installation_per_hour >= 0 else -1, 3600.0, clock=clock)

    def admit(self, installation_id: int | None) -> None:
        """Count one GitHub call for the current requester; QuotaRefused if over either limit."""
        client = current_requester() or UNATTRIBUTED
        wait = self.clients.retry_after(client)
        if wait is not None:
            raise QuotaRefused(
                f"Too many lookups from your address: at most {self.clients.limit} a minute may ask GitHub. "
                f"Try again in {wait} s.", wait)
        budget = self.installations if installation_id is not None else self.anonymous
        wait = budget.retry_after(str(installation_id))
        if wait is not None:
            raise QuotaRefused(
                "This repository's share of GitHub lookups for launch links is used up for now "
                f"(at most {budget.limit} an hour, so that builds keep working). Try again in "
                f"{math.ceil(wait / 60)} minutes.", wait)
        self.clients.hit(client)  # counted only when the call is made
        budget.hit(str(installation_id))
