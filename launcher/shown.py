"""Which of several repositories may be shown on a page (the status page, a build page).

The rule is ``launcher.visibility``'s; this module only asks it for many names at once,
bounded in time, for the routes. It sits above the launcher (it reads the app's launcher
state), so the launch flow itself never imports it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from launcher.resolve import allowed_by_list
from launcher.setup import state_of
from launcher.visibility import visible

if TYPE_CHECKING:
    from bot.services import Services

STATUS_PAGE_TIMEOUT = 3.0  # seconds the status page waits for visibility answers; unanswered = hidden


async def visible_repos(services: "Services", full_names: Iterable[str]) -> set[str]:
    """The (lowercased) names among ``full_names`` that may be shown; unanswered in time = hidden."""
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
