"""Accepted webhook deliveries: the durable work queue (dedupe by X-GitHub-Delivery)."""
from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from typing import Any

from bot.store.db import Database, register_schema

register_schema(
    """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    action TEXT,
    installation_id INTEGER,
    repo TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    error TEXT,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries(state, next_attempt_at);
"""
)


class DeliveryState(str, enum.Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"  # failed at least once, will be retried
    DEAD = "dead"  # gave up after the bounded number of attempts


@dataclass(frozen=True)
class Delivery:
    id: str
    event: str
    headers: dict[str, str]
    body: bytes
    attempts: int
    received_at: float

    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        delivery_id: str,
        event: str,
        headers: dict[str, str],
        body: bytes,
        *,
        action: str | None = None,
        installation_id: int | None = None,
        repo: str | None = None,
        state: DeliveryState = DeliveryState.PENDING,
    ) -> bool:
        """Insert a delivery; False if this id was already accepted. Durable on return."""
        now = time.time()
        changed = await self.db.execute(
            "INSERT OR IGNORE INTO deliveries (id, event, action, installation_id, repo, headers, body,"
            " received_at, state, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (delivery_id, event, action, installation_id, repo, json.dumps(headers), body, now, state.value, now),
        )
        return changed == 1

    async def claim(self, *, limit: int, lease_seconds: float) -> list[Delivery]:
        """Take up to ``limit`` due deliveries (pending, failed-and-due, or with an expired lease)."""
        now = time.time()
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "SELECT id, event, headers, body, attempts, received_at FROM deliveries"
                " WHERE (state IN ('pending','failed') AND next_attempt_at <= ?)"
                " OR (state = 'processing' AND lease_until < ?)"
                " ORDER BY received_at, rowid LIMIT ?",
                (now, now, limit),
            )
            rows = await cur.fetchall()
            out = []
            for r in rows:
                await conn.execute(
                    "UPDATE deliveries SET state='processing', attempts=attempts+1, lease_until=? WHERE id=?",
                    (now + lease_seconds, r["id"]),
                )
                out.append(
                    Delivery(r["id"], r["event"], json.loads(r["headers"]), bytes(r["body"]),
                             r["attempts"] + 1, r["received_at"])
                )
            return out

    async def finish(self, delivery_id: str) -> None:
        await self.db.execute(
            "UPDATE deliveries SET state='done', finished_at=?, lease_until=NULL, error=NULL WHERE id=?",
            (time.time(), delivery_id),
        )

    async def fail(self, delivery_id: str, error: str, *, retry_at: float | None) -> None:
        """Record the error; retry at ``retry_at`` or give up (dead) when it is None."""
        if retry_at is None:
            await self.db.execute(
                "UPDATE deliveries SET state='dead', error=?, finished_at=?, lease_until=NULL WHERE id=?",
                (error, time.time(), delivery_id),
            )
        else:
            await self.db.execute(
                "UPDATE deliveries SET state='failed', error=?, next_attempt_at=?, lease_until=NULL WHERE id=?",
                (error, retry_at, delivery_id),
            )

    async def depth(self) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM deliveries WHERE state IN ('pending','processing','failed')"
        )
        return int(row["n"]) if row else 0

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT MIN(CASE WHEN state='processing' THEN lease_until ELSE next_attempt_at END) AS t"
            " FROM deliveries WHERE state IN ('pending','processing','failed')"
        )
        return row["t"] if row and row["t"] is not None else None

    async def get(self, delivery_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT id, event, action, repo, state, attempts, error, received_at, finished_at"
            " FROM deliveries WHERE id=?",
            (delivery_id,),
        )
        return dict(row) if row else None

    async def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT id, event, action, repo, state, attempts, error, received_at, finished_at"
            " FROM deliveries ORDER BY received_at DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]
