"""Store upkeep: pruning what is no longer needed, and the dead-letter queue of deliveries.

The data volume is small (1Gi in ``k8s/``) and a full disk turns every webhook into a
503, so processed delivery bodies are dropped at once, and attempt records, finished
deliveries, old build logs and redelivery requests after ``retention`` seconds (never
less than the 3 days GitHub may still redeliver a delivery, whose GUID dedupe needs).
"""
from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from typing import Any

from bot.store.db import Database

log = logging.getLogger(__name__)

MIN_RETENTION = 3 * 86400.0


@dataclasses.dataclass
class Pruned:
    bodies: int = 0
    deliveries: int = 0
    attempts: int = 0
    build_logs: int = 0
    redelivery_requests: int = 0

    def total(self) -> int:
        return sum(dataclasses.asdict(self).values())


async def prune(db: Database, *, retention: float, now: float | None = None) -> Pruned:
    """One pass; each statement its own short transaction so webhooks never wait long."""
    now = time.time() if now is None else now
    cutoff = now - max(retention, MIN_RETENTION)
    out = Pruned()
    # a processed delivery's body is never read again (dead and waiting ones keep theirs)
    out.bodies = await db.execute("UPDATE deliveries SET body=x'' WHERE state='done' AND length(body) > 0")
    out.attempts = await db.execute(
        "DELETE FROM delivery_attempts WHERE finished_at < ? AND delivery_id NOT IN"
        " (SELECT id FROM deliveries WHERE state IN ('pending','processing','failed','dead'))", (cutoff,))
    out.deliveries = await db.execute("DELETE FROM deliveries WHERE state='done' AND finished_at < ?", (cutoff,))
    out.build_logs = await db.execute(
        "UPDATE builds SET log_tail=NULL WHERE finished_at < ? AND log_tail IS NOT NULL", (cutoff,))
    out.redelivery_requests = await db.execute("DELETE FROM redelivery_requests WHERE requested_at < ?", (cutoff,))
    return out


async def dead_deliveries(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT id, event, action, repo, attempts, error, received_at, finished_at FROM deliveries"
        " WHERE state='dead' ORDER BY finished_at DESC LIMIT ?", (limit,))
    return [dict(r) for r in rows]


async def requeue(db: Database, delivery_id: str) -> bool:
    """Give a dead delivery another round of attempts (recorded as 'requeued'); False if it is not dead."""
    now = time.time()

    def tx(conn: sqlite3.Connection) -> bool:
        cur = conn.execute(
            "UPDATE deliveries SET state='pending', next_attempt_at=?, finished_at=NULL, lease_until=NULL"
            " WHERE id=? AND state='dead'", (now, delivery_id))
        if cur.rowcount != 1:
            return False
        conn.execute(
            "INSERT INTO delivery_attempts (delivery_id, attempt, outcome, error, finished_at)"
            " SELECT id, attempts, 'requeued', NULL, ? FROM deliveries WHERE id=?", (now, delivery_id))
        return True

    return await db.run(tx)
