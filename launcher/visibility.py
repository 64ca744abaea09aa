"""Private repositories stay private: one rule for every page, stream and badge.

A private repository's names, shas, logs and build states reach only those the launcher
would launch for: nobody, unless LAUNCH_ALLOW lists it (launch links are public). The
rule is decided from the repository's *current* visibility, GitHub's repository object
read through the resolver (cached briefly, revalidated with its ETag), never from the
flag stored with an old build record, so a repository made private stops showing within
a minute. Checked before any byte about a build is sent.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from launcher.guard import QuotaRefused
from launcher.resolve import Access, GitHubDown, NotServed, RefNotFound, allowed_by_list, not_served_message
from launcher.spec import RepoSpec, SpecError, parse_spec

if TYPE_CHECKING:
    from bot.services import Services
    from launcher.resolve import Resolver

log = logging.getLogger(__name__)

STATUS_PAGE_TIMEOUT = 3.0  # seconds the status page waits for visibility answers; unanswered = hidden


def may_reveal(private: bool, allowed: bool) -> bool:
    """Private repositories are shown (pages, streams, badges, status) only when LAUNCH_ALLOW lists them."""
    return allowed or not private


async def require_visible(resolver: "Resolver", spec: RepoSpec, access: Access) -> None:
    """NotServed unless the repository may be revealed; a LAUNCH_ALLOW entry needs no GitHub call."""
    if access.allowed:
        return
    info = await resolver.repo(spec, access)
    if not may_reveal(info.private, access.allowed):
        raise NotServed(not_served_message(spec.full_name))


async def visible(resolver: "Resolver", full_name: str) -> bool:
    """Whether ``owner/repo`` may be shown now; anything unknown (not installed, GitHub down) is not."""
    owner, _, repo = full_name.partition("/")
    try:
        spec = parse_spec(owner, repo, "HEAD")
        await require_visible(resolver, spec, await resolver.access(spec))
    except (SpecError, NotServed, RefNotFound, GitHubDown, QuotaRefused):
        return False
    return True


async def visible_repos(services: "Services", full_names: Iterable[str]) -> set[str]:
    """The (lowercased) names among ``full_names`` that may be shown; unanswered in time = hidden."""
    from launcher.setup import state_of

    names = sorted({n.lower() for n in full_names if n})
    allowed = {n for n in names if allowed_by_list(n, services.settings.launch_allow)}
    try:
        resolver = state_of(services).resolver
    except RuntimeError:  # no launcher in this app: only what LAUNCH_ALLOW names is known to be showable
        return allowed
    rest = [n for n in names if n not in allowed]
    tasks = {n: asyncio.ensure_future(visible(resolver, n)) for n in rest}
    if tasks:
        done, pending = await asyncio.wait(tasks.values(), timeout=STATUS_PAGE_TIMEOUT)
        for t in pending:
            t.cancel()
        allowed |= {n for n, t in tasks.items() if t in done and not t.cancelled() and t.result()}
    return allowed
