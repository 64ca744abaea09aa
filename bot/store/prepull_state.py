"""What the image puller decides from: default-branch images, recent launches, installed repos.

Launches are kept (one row each, pruned after the launch window) so the list
survives a restart; the rest is read from the builds and installations tables.
"""
from __future__ import annotations

import dataclasses
import time

from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS launch_log (
    image TEXT NOT NULL,
    owner TEXT NOT NULL,
    repo TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS launch_log_at ON launch_log(at);
"""
)


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    """The newest built image of one repository's default branch."""

    owner: str
    repo: str
    image: str
    built_at: float

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"


@dataclasses.dataclass(frozen=True)
class LaunchedImage:
    """An image launched ``launches`` times in the window, last at ``last_at``."""

    image: str
    launches: int
    last_at: float


class PrepullState:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_launch(self, owner: str, repo: str, image: str, at: float | None = None) -> None:
        await self.db.execute("INSERT INTO launch_log (image, owner, repo, at) VALUES (?,?,?,?)",
                              (image, owner, repo, time.time() if at is None else at))

    async def prune_launches(self, before: float) -> int:
        return await self.db.execute("DELETE FROM launch_log WHERE at < ?", (before,))

    async def launched_since(self, since: float) -> list[LaunchedImage]:
        rows = await self.db.fetchall(
            "SELECT image, COUNT(*) AS n, MAX(at) AS last_at FROM launch_log WHERE at >= ? GROUP BY image",
            (since,))
        return [LaunchedImage(r["image"], int(r["n"]), float(r["last_at"])) for r in rows]

    async def default_branch_images(self) -> list[BuiltImage]:
        """Per repository, the newest built record whose branch is the repository's default branch."""
        rows = await self.db.fetchall(
            "SELECT owner, repo, image, built_at FROM (SELECT owner, repo, image,"
            " COALESCE(finished_at, created_at) AS built_at, ROW_NUMBER() OVER (PARTITION BY lower(owner),"
            " lower(repo) ORDER BY COALESCE(finished_at, created_at) DESC, rowid DESC) AS n FROM builds"
            " WHERE state='built' AND json_extract(request, '$.pr_number') IS NULL"
            " AND json_extract(request, '$.branch') = json_extract(request, '$.default_branch'))"
            " WHERE n = 1")
        return [BuiltImage(r["owner"], r["repo"], r["image"], float(r["built_at"])) for r in rows]

    async def installed_repos(self) -> set[str]:
        """Full names (lowercase) of the repositories of active installations."""
        rows = await self.db.fetchall(
            "SELECT r.full_name FROM installation_repos r JOIN installations i ON i.id = r.installation_id"
            " WHERE i.suspended=0")
        return {r["full_name"].lower() for r in rows}
