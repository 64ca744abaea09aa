"""What GitHub last told us about each repository: visibility, clone and web URLs, default branch.

The launcher must know whether a repository is private before it reveals a byte about
it, and a build on launch needs its clone URL. Every push and pull request webhook
carries the repository object, ``repository`` webhooks announce a change of visibility
(``privatized``/``publicized``), a rename, a transfer or a deletion, and the installation
refresh and the reconcile list every installed repository from the API. Kept here, those
facts answer a click without a GitHub call (launcher/known_repos.py revalidates old ones in
the background).

Fail closed: a webhook's repository object is a snapshot from when the event happened, and
a delivery can arrive late (a redelivery after an outage). So a snapshot may make a
repository private, but only an authoritative source (the API read now, or the
``publicized`` event itself) makes a private one public again; a snapshot that disagrees
marks the facts stale, so the next launch revalidates them.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS repo_facts (
    full_name TEXT PRIMARY KEY COLLATE NOCASE,
    private INTEGER NOT NULL,
    clone_url TEXT,
    html_url TEXT,
    default_branch TEXT,
    recorded_at REAL NOT NULL        -- when a source last confirmed these facts (0: revalidate first)
);
"""
)


@dataclasses.dataclass(frozen=True)
class RepoFacts:
    """One repository as GitHub described it; URLs are None when the source did not carry them."""

    full_name: str
    private: bool
    clone_url: str | None = None
    html_url: str | None = None
    default_branch: str | None = None

    @property
    def complete(self) -> bool:
        """Enough to build from (a clone URL) as well as to decide visibility."""
        return bool(self.clone_url)


@dataclasses.dataclass(frozen=True)
class KnownFacts:
    facts: RepoFacts
    age: float  # seconds since a source last confirmed them


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def facts_from_repository(repo: Any) -> RepoFacts | None:
    """The facts a repository object carries (webhook, installation list, or the API), or None.

    Installation payloads carry only ``full_name`` and ``private``: the URLs stay unknown.
    An object without a boolean ``private`` says nothing about visibility: None (pure)."""
    if not isinstance(repo, Mapping):
        return None
    full_name, private = repo.get("full_name"), repo.get("private")
    if not isinstance(full_name, str) or full_name.count("/") != 1 or not isinstance(private, bool):
        return None
    return RepoFacts(full_name=full_name, private=private, clone_url=_text(repo.get("clone_url")),
                     html_url=_text(repo.get("html_url")), default_branch=_text(repo.get("default_branch")))


def merged_visibility(stored: bool | None, incoming: bool, *, authoritative: bool) -> tuple[bool, bool]:
    """(private, confirmed): what to keep when a source says ``incoming`` (pure).

    ``confirmed`` False means the incoming snapshot disagreed and was not trusted: keep the
    stored value and revalidate soon."""
    if authoritative or stored is None or stored == incoming or incoming:
        return incoming, True
    return stored, False  # a snapshot says public, we know it private: trust only GitHub's answer now


class RepoFactsStore:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def record(self, facts: RepoFacts, *, authoritative: bool) -> None:
        """Upsert ``facts`` (see the module's fail-closed rule); missing URLs keep the stored ones."""
        await self.record_all([facts], authoritative=authoritative)

    async def record_all(self, many: Iterable[RepoFacts], *, authoritative: bool) -> None:
        """``record`` for a whole list (an installation's repositories) in one transaction."""
        now = self.clock()
        batch = list(many)

        def write(conn: sqlite3.Connection) -> None:
            for facts in batch:
                row = conn.execute("SELECT private FROM repo_facts WHERE full_name=?",
                                   (facts.full_name,)).fetchone()
                stored = bool(row[0]) if row is not None else None
                private, confirmed = merged_visibility(stored, facts.private, authoritative=authoritative)
                conn.execute(
                    "INSERT INTO repo_facts (full_name, private, clone_url, html_url, default_branch, recorded_at)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET full_name=excluded.full_name,"
                    " private=excluded.private, clone_url=COALESCE(excluded.clone_url, clone_url),"
                    " html_url=COALESCE(excluded.html_url, html_url),"
                    " default_branch=COALESCE(excluded.default_branch, default_branch),"
                    " recorded_at=excluded.recorded_at",
                    (facts.full_name, int(private), facts.clone_url, facts.html_url, facts.default_branch,
                     now if confirmed else 0.0))

        if batch:
            await self.db.run(write)

    async def forget(self, full_name: str) -> None:
        """The repository is gone under this name (deleted, renamed, transferred)."""
        await self.db.execute("DELETE FROM repo_facts WHERE full_name=?", (full_name,))

    async def lookup(self, full_name: str) -> KnownFacts | None:
        row = await self.db.fetchone_now(
            "SELECT full_name, private, clone_url, html_url, default_branch, recorded_at FROM repo_facts"
            " WHERE full_name=?", (full_name,))
        if row is None:
            return None
        facts = RepoFacts(str(row["full_name"]), bool(row["private"]), row["clone_url"], row["html_url"],
                          row["default_branch"])
        return KnownFacts(facts, max(0.0, self.clock() - float(row["recorded_at"])))
