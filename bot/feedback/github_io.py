"""What check runs and the PR comment share at the GitHub edge: the client to talk through, and repo keys."""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from gidgethub.abc import GitHubAPI

if TYPE_CHECKING:
    from bot.core import Core


def repo_key(owner: str, repo: str) -> str:
    """GitHub names are case-insensitive: one key per repository however an event spells it."""
    return f"{owner}/{repo}".lower()


async def installation_client(services: "Core", installation_id: int | None) -> GitHubAPI | None:
    """The installation's client, or None without App credentials or an installation (nothing to send then)."""
    app = services.github
    if app is None or installation_id is None:
        return None
    client = app.installation_client(installation_id)
    if inspect.isawaitable(client):
        client = await client
    return client
