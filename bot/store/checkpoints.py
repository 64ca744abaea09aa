"""What recovery remembers across restarts: checkpoints, redelivery requests, reconciled heads."""
from __future__ import annotations

import time

from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- one row per webhook GUID we asked GitHub to redeliver: what we asked for last, how often
CREATE TABLE IF NOT EXISTS redelivery_requests (
    guid TEXT PRIMARY KEY,
    hook_delivery_id INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    requested_at REAL NOT NULL
);
-- the branch and pull request heads a reconcile round has taken care of
CREATE TABLE IF NOT EXISTS reconciled_heads (
    full_name TEXT NOT NULL COLLATE NOCASE,
    ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (full_name, ref)
);
"""
)


class Checkpoints:
    def __init__(self, db: Database) -> None:
        self.db = db

    # named values ----------------------------------------------------------------
    async def get(self, name: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM checkpoints WHERE name=?", (name,))
        return str(row["value"]) if row else None

    async def set(self, name: str, value: str) -> None:
        await self.db.execute(
            "INSERT INTO checkpoints (name, value, updated_at) VALUES (?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (name, value, time.time()))

    # redelivery requests ---------------------------------------------------------
    async def redelivery_requests(self, guids: list[str]) -> dict[str, tuple[int, int]]:
        """guid -> (the hook delivery id we last asked to redeliver, how many times we asked)."""
        out: dict[str, tuple[int, int]] = {}
        for i in range(0, len(guids), 500):
            chunk = guids[i:i + 500]
            rows = await self.db.fetchall(
                f"SELECT guid, hook_delivery_id, requests FROM redelivery_requests"
                f" WHERE guid IN ({','.join('?' * len(chunk))})", chunk)
            out.update({r["guid"]: (int(r["hook_delivery_id"]), int(r["requests"])) for r in rows})
        return out

    async def record_redelivery(self, guid: str, hook_delivery_id: int) -> None:
        await self.db.execute(
            "INSERT INTO redelivery_requests (guid, hook_delivery_id, requests, requested_at) VALUES (?,?,1,?)"
            " ON CONFLICT(guid) DO UPDATE SET hook_delivery_id=excluded.hook_delivery_id,"
            " requests=requests+1, requested_at=excluded.requested_at",
            (guid, hook_delivery_id, time.time()))

    # reconciled heads --------------------------------------------------------------
    async def heads(self, full_name: str) -> dict[str, str]:
        rows = await self.db.fetchall("SELECT ref, sha FROM reconciled_heads WHERE full_name=?", (full_name,))
        return {r["ref"]: r["sha"] for r in rows}

    async def set_head(self, full_name: str, ref: str, sha: str) -> None:
        await self.db.execute(
            "INSERT INTO reconciled_heads (full_name, ref, sha, seen_at) VALUES (?,?,?,?)"
            " ON CONFLICT(full_name, ref) DO UPDATE SET sha=excluded.sha, seen_at=excluded.seen_at",
            (full_name, ref, sha, time.time()))

    async def forget_repos_except(self, keep: set[str]) -> int:
        """Drop the heads of repositories no installation covers any more."""
        rows = await self.db.fetchall("SELECT DISTINCT full_name FROM reconciled_heads")
        gone = [r["full_name"] for r in rows if r["full_name"].lower() not in keep]
        for name in gone:
            await self.db.execute("DELETE FROM reconciled_heads WHERE full_name=?", (name,))
        return len(gone)

    async def prune(self, before: float) -> int:
        """Forget redelivery requests older than ``before`` (GitHub no longer has those deliveries)."""
        return await self.db.execute("DELETE FROM redelivery_requests WHERE requested_at < ?", (before,))
