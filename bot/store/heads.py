"""Branch and tag heads of served repositories, as push webhooks (and the reconcile) report them.

A launch of ``/v2/gh/OWNER/REPO/main`` needs ``main``'s sha. GitHub already tells us every
head through push webhooks, so the launcher reads it here instead of asking GitHub on the
click's path; each head carries when it was recorded, so the reader can tell how fresh it is
(launcher/known_heads.py revalidates old ones in the background).

Writers: the push handler (bot/prebuild/heads.py, from each delivery), the launcher's
background revalidation, and the reconcile of branch heads after downtime. A write is an
upsert; ``sha=None`` (a deleted branch or tag) removes the head.
"""
from __future__ import annotations

import dataclasses
import enum
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS branch_heads (
    full_name TEXT NOT NULL COLLATE NOCASE,
    kind TEXT NOT NULL,              -- 'branch' or 'tag'
    name TEXT NOT NULL,              -- e.g. main, feature/x, v1.0
    sha TEXT NOT NULL,
    recorded_at REAL NOT NULL,       -- when we last learnt this head (push, reconcile, revalidation)
    PRIMARY KEY (full_name, kind, name)
);
CREATE TABLE IF NOT EXISTS repo_default_branches (
    full_name TEXT PRIMARY KEY COLLATE NOCASE,
    branch TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
"""
)

_SHA = re.compile(r"^[0-9a-f]{40}$")
_ZERO = "0" * 40


class RefKind(str, enum.Enum):
    BRANCH = "branch"
    TAG = "tag"


@dataclasses.dataclass(frozen=True)
class Head:
    """One head as recorded: the sha, and how many seconds ago we learnt it."""

    full_name: str
    kind: RefKind
    name: str
    sha: str
    age: float


@dataclasses.dataclass(frozen=True)
class PushedHead:
    """What a push event says about a head (pure data; ``sha`` None = the ref was deleted)."""

    full_name: str
    kind: RefKind
    name: str
    sha: str | None
    default_branch: str | None


def head_from_push(payload: Mapping[str, Any]) -> PushedHead | None:
    """The head a push payload moves (branch or tag), or None for anything else (pure)."""
    ref = payload.get("ref")
    repo = payload.get("repository") or {}
    full_name = repo.get("full_name") if isinstance(repo, Mapping) else None
    if not isinstance(ref, str) or not isinstance(full_name, str):
        return None
    if ref.startswith("refs/heads/"):
        kind, name = RefKind.BRANCH, ref[len("refs/heads/"):]
    elif ref.startswith("refs/tags/"):
        kind, name = RefKind.TAG, ref[len("refs/tags/"):]
    else:
        return None
    after = str(payload.get("after") or "").lower()
    sha = None if payload.get("deleted") or after == _ZERO else after
    if sha is not None and not _SHA.match(sha):
        return None
    default = repo.get("default_branch")
    return PushedHead(full_name, kind, name, sha, default if isinstance(default, str) and default else None)


class HeadStore:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def record(self, full_name: str, kind: RefKind, name: str, sha: str | None) -> None:
        """Upsert one head (now); ``sha=None`` forgets it."""
        if sha is None:
            await self.db.execute("DELETE FROM branch_heads WHERE full_name=? AND kind=? AND name=?",
                                  (full_name, kind.value, name))
            return
        await self.db.execute(
            "INSERT INTO branch_heads (full_name, kind, name, sha, recorded_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT DO UPDATE SET sha=excluded.sha, recorded_at=excluded.recorded_at",
            (full_name, kind.value, name, sha.lower(), self.clock()))

    async def record_default_branch(self, full_name: str, branch: str) -> None:
        await self.db.execute(
            "INSERT INTO repo_default_branches (full_name, branch, recorded_at) VALUES (?,?,?)"
            " ON CONFLICT DO UPDATE SET branch=excluded.branch, recorded_at=excluded.recorded_at",
            (full_name, branch, self.clock()))

    async def record_push(self, pushed: PushedHead) -> None:
        await self.record(pushed.full_name, pushed.kind, pushed.name, pushed.sha)
        if pushed.default_branch:
            await self.record_default_branch(pushed.full_name, pushed.default_branch)

    async def forget_repository(self, full_name: str) -> None:
        """Every head of a repository that is gone under this name (deleted, renamed, transferred)."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM branch_heads WHERE full_name=?", (full_name,))
            await conn.execute("DELETE FROM repo_default_branches WHERE full_name=?", (full_name,))

    async def default_branch(self, full_name: str) -> str | None:
        row = await self.db.fetchone_now("SELECT branch FROM repo_default_branches WHERE full_name=?",
                                         (full_name,))
        return str(row["branch"]) if row else None

    async def lookup(self, full_name: str, ref: str) -> Head | None:
        """The head called ``ref``: a branch first (as GitHub resolves a name), then a tag;
        ``HEAD`` is the default branch; ``heads/x``, ``tags/x`` and ``refs/...`` name one kind."""
        kinds = [RefKind.BRANCH, RefKind.TAG]
        name = ref
        if ref == "HEAD":
            default = await self.default_branch(full_name)
            if default is None:
                return None
            kinds, name = [RefKind.BRANCH], default
        for prefix, kind in (("refs/heads/", RefKind.BRANCH), ("heads/", RefKind.BRANCH),
                             ("refs/tags/", RefKind.TAG), ("tags/", RefKind.TAG)):
            if ref.startswith(prefix):
                kinds, name = [kind], ref[len(prefix):]
                break
        rows = await self.db.fetchall_now(
            "SELECT full_name, kind, name, sha, recorded_at FROM branch_heads WHERE full_name=? AND name=?",
            (full_name, name))
        found = {RefKind(r["kind"]): r for r in rows}
        for kind in kinds:
            row = found.get(kind)
            if row is not None:
                return Head(str(row["full_name"]), kind, str(row["name"]), str(row["sha"]),
                            max(0.0, self.clock() - float(row["recorded_at"])))
        return None
