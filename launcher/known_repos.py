"""Visibility and URLs of installed repositories, answered from what webhooks recorded.

Before revealing anything about a repository the launcher needs its current visibility,
and a build on launch needs its clone URL. Webhooks (every push and pull request, and the
``repository`` events) and the installation refresh keep these facts in the store
(bot/store/repo_facts.py), so a click reads them there. Like heads (known_heads.py),
facts older than ``fresh`` are re-read from GitHub in the background, never on the click's
path; facts older than ``max_age`` are not trusted at all (the caller asks GitHub first),
which bounds how long a missed ``privatized`` event could go unnoticed by an idle repository.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.store.repo_facts import RepoFacts, RepoFactsStore
from launcher.revalidate import Revalidations

if TYPE_CHECKING:
    from launcher.spec import RepoSpec

log = logging.getLogger(__name__)

# the resolver's read of GitHub's repository object; it records what it read itself
Fetch = Callable[["RepoSpec", Any], Awaitable[Any]]


def trusted(age: float, max_age: float) -> bool:
    return age <= max_age


class KnownRepos:
    def __init__(self, store: RepoFactsStore, fetch: Fetch, *, fresh: float = 60.0, max_age: float = 86400.0,
                 gone: tuple[type[BaseException], ...] = ()) -> None:
        self.store = store
        self.fetch = fetch
        self.fresh = fresh
        self.max_age = max_age
        self.gone = gone  # what ``fetch`` raises when GitHub no longer has the repository (for us)
        # a click that raced a finished re-read starts no second one (the store's clock: tests drive it)
        self._refreshing = Revalidations(cooldown=fresh, clock=lambda: self.store.clock())

    async def lookup(self, spec: "RepoSpec", access: Any) -> RepoFacts | None:
        """The recorded facts (re-read in the background when old), or None: ask GitHub now."""
        if access.installation_id is None:  # no installation, no webhooks about it
            return None
        known = await self.store.lookup(spec.full_name)
        if known is None or not trusted(known.age, self.max_age):
            return None
        if known.age > self.fresh:
            key = known.facts.full_name.lower()
            self._refreshing.start(key, lambda: self._refresh(spec, access, known.facts),
                                   name=f"refresh-repo-{key}")
        return known.facts

    async def _refresh(self, spec: "RepoSpec", access: Any, facts: RepoFacts) -> None:
        try:
            await self.fetch(spec, access)  # records GitHub's answer
        except self.gone:
            log.info("repository %s is gone (or no longer ours to read): forgetting its facts", facts.full_name)
            await self.store.forget(facts.full_name)
        except Exception as e:  # GitHub down or rate limited: keep the facts, try on a later click
            log.warning("could not revalidate repository %s: %s", facts.full_name, e)

    async def settle(self) -> None:
        await self._refreshing.settle()

    async def close(self) -> None:
        await self._refreshing.close()
