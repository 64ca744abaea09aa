"""Refs of installed repositories, answered from the heads push webhooks keep in the store.

Stale-while-revalidate: a head is answered at once whatever its age (push webhooks and the
reconcile keep it current); one recorded longer ago than ``fresh`` seconds is also
re-read from GitHub in the background (at most one refresh per ref at a time), so a missed
webhook heals itself without ever putting a GitHub round trip on a click's path.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from bot.store.heads import Head, HeadStore
from launcher.revalidate import Revalidations

if TYPE_CHECKING:
    from launcher.spec import RepoSpec

log = logging.getLogger(__name__)


class Access(Protocol):
    """What this module reads of the resolver's access decision (launcher.resolve.Access)."""

    @property
    def installation_id(self) -> int | None: ...


# the resolver's fetch takes its own Access (passed through here untouched)
Fetch = Callable[["RepoSpec", Any], Awaitable[str]]


def needs_refresh(head: Head, fresh: float) -> bool:
    return head.age > fresh


class KnownHeads:
    def __init__(self, store: HeadStore, fetch: Fetch, *, fresh: float = 60.0,
                 gone: tuple[type[BaseException], ...] = ()) -> None:
        self.store = store
        self.fetch = fetch  # GitHub's answer for a ref (raises one of ``gone`` when it no longer exists)
        self.fresh = fresh
        self.gone = gone
        # a click that raced a finished re-read starts no second one (the store's clock: tests drive it)
        self._refreshing = Revalidations(cooldown=fresh, clock=lambda: self.store.clock())

    async def lookup(self, spec: "RepoSpec", access: "Access") -> str | None:
        """The recorded sha of ``spec.ref`` (refreshing it in the background if old), or None."""
        if access.installation_id is None:  # no installation, no webhooks: nothing recorded to trust
            return None
        head = await self.store.lookup(spec.full_name, spec.ref)
        if head is None:
            return None
        if needs_refresh(head, self.fresh):
            self._refresh_later(spec, access, head)
        return head.sha

    def _refresh_later(self, spec: "RepoSpec", access: "Access", head: Head) -> None:
        key = (head.full_name.lower(), head.kind.value, head.name)
        self._refreshing.start(key, lambda: self._refresh(spec, access, head), name=f"refresh-head-{head.name}")

    async def _refresh(self, spec: "RepoSpec", access: "Access", head: Head) -> None:
        from launcher.spec import RepoSpec

        # ask for the head by its own name (HEAD's default branch, a tag), not by the alias clicked
        prefix = "heads/" if head.kind.value == "branch" else "tags/"
        named = RepoSpec(spec.owner, spec.repo, prefix + head.name)
        try:
            sha = await self.fetch(named, access)
        except self.gone:
            log.info("head %s %s of %s is gone: forgetting it", head.kind.value, head.name, head.full_name)
            await self.store.record(head.full_name, head.kind, head.name, None)
            return
        except Exception as e:  # GitHub down or rate limited: keep the recorded head, try on a later click
            log.warning("could not revalidate head %s of %s: %s", head.name, head.full_name, e)
            return
        if sha != head.sha:
            log.info("head %s %s of %s moved to %s (a missed webhook?)", head.kind.value, head.name,
                     head.full_name, sha[:12])
        await self.store.record(head.full_name, head.kind, head.name, sha)

    async def settle(self) -> None:
        """Wait for the refreshes in flight (tests and shutdown)."""
        await self._refreshing.settle()

    async def close(self) -> None:
        await self._refreshing.close()
