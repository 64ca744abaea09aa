"""What we keep about GitHub: installations, their repositories, PR comment ids, check run ids."""
from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import cachetools

from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS installations (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    account_type TEXT,
    suspended INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS installation_repos (
    installation_id INTEGER NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
    full_name TEXT NOT NULL COLLATE NOCASE,
    private INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (installation_id, full_name)
);
CREATE INDEX IF NOT EXISTS installation_repos_name ON installation_repos(full_name);
CREATE TABLE IF NOT EXISTS pr_comments (
    full_name TEXT NOT NULL COLLATE NOCASE,
    pr_number INTEGER NOT NULL,
    comment_id INTEGER NOT NULL,
    body_hash TEXT,
    PRIMARY KEY (full_name, pr_number)
);
-- what each PR's comment follows: its head as we last handled it, and whether it is closed
-- (bot.store.pr_heads keeps every head with GitHub's time, for commands)
CREATE TABLE IF NOT EXISTS pr_feedback (
    full_name TEXT NOT NULL COLLATE NOCASE,
    pr_number INTEGER NOT NULL,
    head_sha TEXT NOT NULL,
    installation_id INTEGER,
    branch TEXT,
    urlpath TEXT,
    comment INTEGER NOT NULL DEFAULT 1,
    closed INTEGER NOT NULL DEFAULT 0,
    merged INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (full_name, pr_number)
);
CREATE TABLE IF NOT EXISTS check_runs (
    full_name TEXT NOT NULL COLLATE NOCASE,
    sha TEXT NOT NULL,
    check_run_id INTEGER NOT NULL,
    status TEXT,
    updated_at REAL,
    PRIMARY KEY (full_name, sha)
);
-- a check run create sent whose answer is not yet recorded in check_runs: after a crash in
-- that window the run exists on GitHub but not here, so it is found by listing, not made twice
CREATE TABLE IF NOT EXISTS check_run_creates (
    full_name TEXT NOT NULL COLLATE NOCASE,
    sha TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (full_name, sha)
);
"""
)


F = TypeVar("F", bound=Callable[..., Awaitable[None]])


def _changes_installations(write: F) -> F:
    """The cached installation lookups are dropped once ``write`` is done (done or failed)."""

    @functools.wraps(write)
    async def wrapper(self: "GitHubState", *args: Any, **kwargs: Any) -> None:
        try:
            await write(self, *args, **kwargs)
        finally:
            self._installations_changed()

    return wrapper  # type: ignore[return-value]


class GitHubState:
    def __init__(self, db: Database) -> None:
        self.db = db
        # which installation serves a repository: read on every launch, changed only by the
        # installation writes below (this process's own), which clear it
        self._served: cachetools.LRUCache[str, int | None] = cachetools.LRUCache(4096)
        self._generation = 0

    def _installations_changed(self) -> None:
        self._served.clear()
        self._generation += 1

    # installations -------------------------------------------------------
    @_changes_installations
    async def upsert_installation(self, inst_id: int, account: str, account_type: str | None = None,
                                  suspended: bool = False) -> None:
        await self.db.execute(
            "INSERT INTO installations (id, account, account_type, suspended, updated_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET account=excluded.account, account_type=excluded.account_type,"
            " suspended=excluded.suspended, updated_at=excluded.updated_at",
            (inst_id, account, account_type, int(suspended), time.time()),
        )

    @_changes_installations
    async def set_suspended(self, inst_id: int, suspended: bool) -> None:
        await self.db.execute("UPDATE installations SET suspended=?, updated_at=? WHERE id=?",
                              (int(suspended), time.time(), inst_id))

    @_changes_installations
    async def delete_installation(self, inst_id: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM installation_repos WHERE installation_id=?", (inst_id,))
            await conn.execute("DELETE FROM installations WHERE id=?", (inst_id,))

    @_changes_installations
    async def add_repos(self, inst_id: int, repos: list[tuple[str, bool]]) -> None:
        async with self.db.transaction() as conn:
            for full_name, private in repos:
                await conn.execute(
                    "INSERT INTO installation_repos (installation_id, full_name, private) VALUES (?,?,?)"
                    " ON CONFLICT DO UPDATE SET private=excluded.private",
                    (inst_id, full_name, int(private)),
                )

    @_changes_installations
    async def remove_repos(self, inst_id: int, names: list[str]) -> None:
        async with self.db.transaction() as conn:
            for name in names:
                await conn.execute(
                    "DELETE FROM installation_repos WHERE installation_id=? AND full_name=?", (inst_id, name))

    @_changes_installations
    async def replace_repos(self, inst_id: int, repos: list[tuple[str, bool]]) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM installation_repos WHERE installation_id=?", (inst_id,))
            for full_name, private in repos:
                await conn.execute(
                    "INSERT OR REPLACE INTO installation_repos (installation_id, full_name, private) VALUES (?,?,?)",
                    (inst_id, full_name, int(private)),
                )

    async def installation_for(self, full_name: str) -> int | None:
        """The active installation covering a repository, or None (not installed or suspended)."""
        key = full_name.lower()
        if key in self._served:
            return self._served[key]
        generation = self._generation
        row = await self.db.fetchone_now(
            "SELECT r.installation_id AS id FROM installation_repos r JOIN installations i"
            " ON i.id = r.installation_id WHERE r.full_name=? AND i.suspended=0",
            (full_name,),
        )
        found = int(row["id"]) if row else None
        if generation == self._generation:  # no installation write while it was read
            self._served[key] = found
        return found

    async def installations(self) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT i.id, i.account, i.account_type, i.suspended, COUNT(r.full_name) AS repos"
            " FROM installations i LEFT JOIN installation_repos r ON r.installation_id=i.id"
            " GROUP BY i.id ORDER BY i.account")
        return [dict(r) for r in rows]

    async def repos(self, inst_id: int) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT full_name FROM installation_repos WHERE installation_id=? ORDER BY full_name", (inst_id,))
        return [r["full_name"] for r in rows]

    # PR comments ---------------------------------------------------------
    async def comment_id(self, full_name: str, pr: int) -> tuple[int, str | None] | None:
        row = await self.db.fetchone(
            "SELECT comment_id, body_hash FROM pr_comments WHERE full_name=? AND pr_number=?", (full_name, pr))
        return (int(row["comment_id"]), row["body_hash"]) if row else None

    async def set_comment(self, full_name: str, pr: int, comment_id: int, body_hash: str | None) -> None:
        await self.db.execute(
            "INSERT INTO pr_comments (full_name, pr_number, comment_id, body_hash) VALUES (?,?,?,?)"
            " ON CONFLICT DO UPDATE SET comment_id=excluded.comment_id, body_hash=excluded.body_hash",
            (full_name, pr, comment_id, body_hash))

    async def forget_comment(self, full_name: str, pr: int) -> None:
        await self.db.execute("DELETE FROM pr_comments WHERE full_name=? AND pr_number=?", (full_name, pr))

    # check runs ----------------------------------------------------------
    async def check_run(self, full_name: str, sha: str) -> int | None:
        row = await self.db.fetchone(
            "SELECT check_run_id FROM check_runs WHERE full_name=? AND sha=?", (full_name, sha))
        return int(row["check_run_id"]) if row else None

    async def check_run_state(self, full_name: str, sha: str) -> tuple[int | None, bool]:
        """The run recorded for this sha, and whether a create was sent whose answer was never recorded."""
        row = await self.db.fetchone(
            "SELECT (SELECT check_run_id FROM check_runs WHERE full_name=?1 AND sha=?2) AS id,"
            " EXISTS (SELECT 1 FROM check_run_creates WHERE full_name=?1 AND sha=?2) AS pending",
            (full_name, sha))
        assert row is not None
        return (int(row["id"]) if row["id"] is not None else None), bool(row["pending"])

    async def begin_check_run_create(self, full_name: str, sha: str) -> None:
        """Durably note a create about to be sent (cleared by ``set_check_run``)."""
        await self.db.execute(
            "INSERT INTO check_run_creates (full_name, sha, started_at) VALUES (?,?,?)"
            " ON CONFLICT DO UPDATE SET started_at=excluded.started_at", (full_name, sha, time.time()))

    async def set_check_run(self, full_name: str, sha: str, check_run_id: int, status: str) -> None:
        """Record the run and what it was last sent; any create noted for it is answered."""
        now = time.time()

        def tx(conn: Any) -> None:
            conn.execute(
                "INSERT INTO check_runs (full_name, sha, check_run_id, status, updated_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT DO UPDATE SET check_run_id=excluded.check_run_id, status=excluded.status,"
                " updated_at=excluded.updated_at",
                (full_name, sha, check_run_id, status, now))
            conn.execute("DELETE FROM check_run_creates WHERE full_name=? AND sha=?", (full_name, sha))

        await self.db.run(tx)

    async def check_runs_since(self, since: float) -> dict[tuple[str, str], str | None]:
        """(lower-case full name, sha) -> the status we last sent ("completed:success", ...), for runs sent since."""
        rows = await self.db.fetchall("SELECT full_name, sha, status FROM check_runs WHERE updated_at >= ?", (since,))
        return {(r["full_name"].lower(), r["sha"]): r["status"] for r in rows}

    # what each PR's comment follows ------------------------------------------
    async def follow_pr(self, full_name: str, pr: int, head_sha: str, installation_id: int | None,
                        branch: str | None, urlpath: str | None, comment: bool) -> None:
        """The PR now points at ``head_sha`` and is open (what its comment follows, and how it renders)."""
        await self.db.execute(
            "INSERT INTO pr_feedback (full_name, pr_number, head_sha, installation_id, branch, urlpath, comment,"
            " closed, merged, updated_at) VALUES (?,?,?,?,?,?,?,0,0,?) ON CONFLICT DO UPDATE SET"
            " head_sha=excluded.head_sha, installation_id=COALESCE(excluded.installation_id, installation_id),"
            " branch=excluded.branch, urlpath=excluded.urlpath, comment=excluded.comment, closed=0, merged=0,"
            " updated_at=excluded.updated_at",
            (full_name, pr, head_sha, installation_id, branch, urlpath, int(comment), time.time()))

    async def followed_pr_closed(self, full_name: str, pr: int, *, merged: bool, installation_id: int | None,
                                 head_sha: str | None) -> None:
        await self.db.execute(
            "INSERT INTO pr_feedback (full_name, pr_number, head_sha, installation_id, closed, merged, updated_at)"
            " VALUES (?,?,?,?,1,?,?) ON CONFLICT DO UPDATE SET closed=1, merged=excluded.merged,"
            " installation_id=COALESCE(excluded.installation_id, installation_id), updated_at=excluded.updated_at",
            (full_name, pr, head_sha or "", installation_id, int(merged), time.time()))

    async def followed_prs_since(self, since: float) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT full_name, pr_number, head_sha, installation_id, branch, urlpath, comment, closed, merged"
            " FROM pr_feedback"
            " WHERE updated_at >= ? ORDER BY updated_at", (since,))
        return [dict(r) for r in rows]
