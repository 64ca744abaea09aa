"""Accepted webhook deliveries: the durable work queue (dedupe by X-GitHub-Delivery)."""
from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
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
-- the work queue's two lookups, each a short index range however many rows are done
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_at) WHERE state IN ('pending','failed');
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries(lease_until) WHERE state = 'processing';
-- One row per finished attempt, written in the same transaction as the state
-- change it records: the audit trail of retries, and the proof of exactly-once
-- completion (one 'done' row per delivery). Deliberately no UNIQUE constraint:
-- a double completion must be visible, not silently swallowed.
CREATE TABLE IF NOT EXISTS delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_attempts_id ON delivery_attempts(delivery_id);
"""
)


_ROWS_PER_INSERT = 200  # 10 columns each: well under SQLite's 32766 bound parameters


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
    repo: str | None = None

    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass(frozen=True)
class NewDelivery:
    """A verified delivery about to be stored (what the receiver hands over)."""

    id: str
    event: str
    headers: dict[str, str]
    body: bytes
    action: str | None = None
    installation_id: int | None = None
    repo: str | None = None


def delivery_rows(items: Sequence[NewDelivery], now: float) -> list[tuple[Any, ...]]:
    """The ``deliveries`` rows for new items (built on the event loop, before the transaction)."""
    return [(it.id, it.event, it.action, it.installation_id, it.repo, json.dumps(it.headers), it.body,
             now, DeliveryState.PENDING.value, now) for it in items]


def insert_new(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
    """Insert rows from :func:`delivery_rows` inside the caller's transaction.

    Per row: True if it was new; False if its id was already stored (or came
    earlier in ``rows``).
    """
    unique = list(dict.fromkeys(row[0] for row in rows))
    seen: set[str] = set()
    for i in range(0, len(unique), 500):
        chunk = unique[i:i + 500]
        cur = conn.execute(f"SELECT id FROM deliveries WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        seen.update(r[0] for r in cur.fetchall())
    results: list[bool] = []
    new_rows = []
    for row in rows:
        results.append(row[0] not in seen)
        if row[0] not in seen:
            seen.add(row[0])
            new_rows.append(row)
    for i in range(0, len(new_rows), _ROWS_PER_INSERT):
        chunk = new_rows[i:i + _ROWS_PER_INSERT]
        conn.execute(
            "INSERT INTO deliveries (id, event, action, installation_id, repo, headers, body,"
            " received_at, state, next_attempt_at) VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk)),
            [v for row in chunk for v in row],
        )
    return results


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

    async def add_many(self, items: Sequence[NewDelivery]) -> list[bool]:
        """Insert several deliveries in one transaction (one fsync: group commit).

        Returns, per item, True if it was new; False if its id was already stored
        (or appeared earlier in ``items``). Durable on return.
        """
        if not items:
            return []
        now = time.time()
        # Built here, on the event loop: the store thread then runs four statements
        # (BEGIN, one SELECT, one multi-row INSERT, COMMIT). Every statement step
        # hands the GIL back and forth, and under load each hand-back waits for the
        # busy event loop, so fewer steps is what keeps a group commit short.
        rows = delivery_rows(items, now)
        return await self.db.run(lambda conn: insert_new(conn, rows))

    async def claim(self, *, limit: int, lease_seconds: float) -> list[Delivery]:
        """Take up to ``limit`` due deliveries (pending, failed-and-due, or with an expired lease)."""
        now = time.time()

        def tx(conn: sqlite3.Connection) -> list[Delivery]:
            cols = "SELECT id, event, headers, body, attempts, received_at, repo FROM deliveries"
            # leases that ran out (a stuck process), then what is due, oldest first
            rows = conn.execute(
                f"{cols} INDEXED BY deliveries_leased WHERE state = 'processing' AND lease_until < ?"
                " ORDER BY lease_until LIMIT ?",
                (now, limit),
            ).fetchall()
            if len(rows) < limit:
                rows += conn.execute(
                    f"{cols} INDEXED BY deliveries_due WHERE state IN ('pending','failed') AND next_attempt_at <= ?"
                    " ORDER BY next_attempt_at, rowid LIMIT ?",
                    (now, limit - len(rows)),
                ).fetchall()
            conn.executemany(
                "UPDATE deliveries SET state='processing', attempts=attempts+1, lease_until=? WHERE id=?",
                [(now + lease_seconds, r[0]) for r in rows],
            )
            return [Delivery(r[0], r[1], json.loads(r[2]), bytes(r[3]), r[4] + 1, r[5], r[6]) for r in rows]

        return await self.db.run(tx)

    async def finish(self, delivery_id: str, attempt: int | None = None) -> bool:
        """Mark a claimed delivery done; see :meth:`finish_many`."""
        return (await self.finish_many([(delivery_id, attempt)]))[0]

    async def finish_many(self, done: Sequence[tuple[str, int | None]]) -> list[bool]:
        """Mark claimed deliveries done, in one transaction, each with its attempt record.

        ``attempt`` (the claim's attempt number) fences the update: a claim whose
        lease was lost to a newer claim finishes nothing and gets False, so a
        delivery is completed exactly once even if two workers ran it.
        """
        now = time.time()

        def tx(conn: sqlite3.Connection) -> list[bool]:
            out: list[bool] = []
            for delivery_id, attempt in done:
                cur = conn.execute(
                    "UPDATE deliveries SET state='done', finished_at=?, lease_until=NULL, error=NULL"
                    " WHERE id=? AND state='processing' AND (? IS NULL OR attempts=?)",
                    (now, delivery_id, attempt, attempt),
                )
                ok = cur.rowcount == 1
                if ok:
                    conn.execute(
                        "INSERT INTO delivery_attempts (delivery_id, attempt, outcome, error, finished_at)"
                        " SELECT id, attempts, 'done', NULL, ? FROM deliveries WHERE id=?",
                        (now, delivery_id),
                    )
                out.append(ok)
            return out

        return await self.db.run(tx)

    async def fail(self, delivery_id: str, error: str, *, retry_at: float | None,
                   attempt: int | None = None, outcome: str | None = None) -> bool:
        """Record the error; retry at ``retry_at`` or give up (dead) when it is None.

        ``outcome`` names the attempt record (default: the new state; 'delayed' for a
        dependency outage that does not count towards giving up).
        Fenced by ``attempt`` like :meth:`finish_many`; False if the claim was lost.
        """
        now = time.time()
        state = DeliveryState.DEAD if retry_at is None else DeliveryState.FAILED
        recorded = outcome or state.value

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE deliveries SET state=?, error=?, next_attempt_at=COALESCE(?, next_attempt_at),"
                " finished_at=CASE WHEN ?='dead' THEN ? ELSE finished_at END, lease_until=NULL"
                " WHERE id=? AND state='processing' AND (? IS NULL OR attempts=?)",
                (state.value, error, retry_at, state.value, now, delivery_id, attempt, attempt),
            )
            ok = cur.rowcount == 1
            if ok:
                conn.execute(
                    "INSERT INTO delivery_attempts (delivery_id, attempt, outcome, error, finished_at)"
                    " SELECT id, attempts, ?, ?, ? FROM deliveries WHERE id=?",
                    (recorded, error, now, delivery_id),
                )
            return ok

        return await self.db.run(tx)

    async def recover_interrupted(self) -> int:
        """At start-up: every 'processing' row was interrupted by a crash; make it due now.

        Due since it arrived, not since the restart: the queue is read in due-time
        order, so a restart-time due date would let the same repository's later
        deliveries (already due) run before it, against arrival order.
        Only one process owns DATA_DIR, so nothing else can be running these.
        The interrupted attempt stays counted (a delivery that kills the process
        every time still ends up dead) and is recorded as 'interrupted'.
        """
        now = time.time()

        def tx(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, outcome, error, finished_at)"
                " SELECT id, attempts, 'interrupted', 'process stopped while processing', ?"
                " FROM deliveries WHERE state='processing'",
                (now,),
            )
            return conn.execute(
                "UPDATE deliveries SET state='pending', lease_until=NULL, next_attempt_at=MIN(received_at, ?)"
                " WHERE state='processing'",
                (now,),
            ).rowcount

        return await self.db.run(tx)

    async def attempts_of(self, delivery_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT attempt, outcome, error, finished_at FROM delivery_attempts WHERE delivery_id=?"
            " ORDER BY rowid",
            (delivery_id,),
        )
        return [dict(r) for r in rows]

    async def known(self, ids: Sequence[str]) -> set[str]:
        """Which of these delivery ids (GUIDs) the store has (received, whatever became of them)."""
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            rows = await self.db.fetchall(
                f"SELECT id FROM deliveries WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            found.update(r["id"] for r in rows)
        return found

    async def count_attempts(self, delivery_id: str, outcome: str) -> int:
        """How many attempts of a delivery ended with ``outcome`` ('failed', 'delayed', ...) since it was
        last requeued by hand (``binder-prebuild deliveries --retry``)."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM delivery_attempts WHERE delivery_id=? AND outcome=? AND rowid >"
            " COALESCE((SELECT MAX(rowid) FROM delivery_attempts WHERE delivery_id=? AND outcome='requeued'), 0)",
            (delivery_id, outcome, delivery_id))
        return int(row["n"]) if row else 0

    async def depth(self) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM deliveries WHERE state IN ('pending','processing','failed')"
        )
        return int(row["n"]) if row else 0

    async def next_due(self) -> float | None:
        """When the next delivery becomes due (a retry, or a lease running out); None if none waits."""
        row = await self.db.fetchone(
            "SELECT (SELECT MIN(next_attempt_at) FROM deliveries INDEXED BY deliveries_due"
            "        WHERE state IN ('pending','failed')) AS due,"
            "       (SELECT MIN(lease_until) FROM deliveries INDEXED BY deliveries_leased"
            "        WHERE state = 'processing') AS lease"
        )
        times = [t for t in (row["due"], row["lease"]) if t is not None] if row else []
        return min(times) if times else None

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
