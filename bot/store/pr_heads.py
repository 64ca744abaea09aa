"""Which commit each pull request's head was, and since when (GitHub's clock).

``/binder build`` approves the head a maintainer saw when commenting, not the one
the PR has when the command is processed: a fork could push in between. Every
``pull_request`` opened/reopened/synchronize event records (sha, the PR's
``updated_at``); the head at a comment's ``created_at`` is the latest one recorded
strictly before it. Both times are GitHub's, so our clock never enters.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS pr_heads (
    repo TEXT NOT NULL,
    number INTEGER NOT NULL,
    sha TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (repo, number, since, sha)
) WITHOUT ROWID;
"""
)


def github_time(value: Any) -> float | None:
    """Seconds since the epoch for GitHub's ISO 8601 timestamps ("2024-10-01T12:00:00Z"); None if absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


class PullHeads:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, repo: str, number: int, sha: str, since: float) -> None:
        await self.db.execute("INSERT OR IGNORE INTO pr_heads (repo, number, sha, since) VALUES (?,?,?,?)",
                              (repo.lower(), number, sha, since))

    async def head_before(self, repo: str, number: int, when: float) -> str | None:
        """The head recorded last strictly before ``when`` (GitHub's time), or None if none was."""
        row = await self.db.fetchone(
            "SELECT sha FROM pr_heads WHERE repo=? AND number=? AND since < ? ORDER BY since DESC LIMIT 1",
            (repo.lower(), number, when))
        return str(row["sha"]) if row else None

    async def known(self, repo: str, number: int) -> bool:
        row = await self.db.fetchone("SELECT 1 FROM pr_heads WHERE repo=? AND number=? LIMIT 1",
                                     (repo.lower(), number))
        return row is not None

    async def forget(self, repo: str, number: int) -> None:
        """A closed PR: its history is no longer needed (a reopen records its head again)."""
        await self.db.execute("DELETE FROM pr_heads WHERE repo=? AND number=?", (repo.lower(), number))

