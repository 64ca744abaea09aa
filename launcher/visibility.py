"""Private repositories stay private: one rule for every page, stream and badge.

A private repository's names, shas, logs and build states reach only those the launcher
would launch for: nobody, unless LAUNCH_ALLOW lists it (launch links are public). The
rule is decided from the repository's *current* visibility, never from the flag stored
with an old build record: for an installed repository, the facts webhooks keep (a
``privatized`` event takes effect at once; old facts are re-read from GitHub in the
background: launcher/known_repos.py), else GitHub's repository object read through the
resolver (cached briefly, revalidated with its ETag). Checked before any byte about a
build is sent.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from launcher.guard import QuotaRefused
from launcher.resolve import Access, GitHubDown, NotServed, RefNotFound, not_served_message
from launcher.spec import RepoSpec, SpecError, parse_spec

if TYPE_CHECKING:
    from launcher.resolve import Resolver

log = logging.getLogger(__name__)


def may_reveal(private: bool, allowed: bool) -> bool:
    """Private repositories are shown (pages, streams, badges, status) only when LAUNCH_ALLOW lists them."""
    return allowed or not private


async def require_visible(resolver: "Resolver", spec: RepoSpec, access: Access) -> None:
    """NotServed unless the repository may be revealed; a LAUNCH_ALLOW entry needs no GitHub call."""
    if access.allowed:
        return
    if not may_reveal(await resolver.private(spec, access), access.allowed):
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
