"""Replay protection for webhook intake: a signed body is accepted once.

GitHub signs only the body, so whoever captures one delivery could post it again
under fresh ``X-GitHub-Delivery`` ids, and every copy would pass the signature
check. Each accepted body's digest (its verified ``X-Hub-Signature-256``, an
HMAC of the body: computing it again would cost a pass over the body) is kept
for GitHub's delivery window. The same body under another id within that window
is a replay: acknowledged, never stored or processed. The check and the insert
share the delivery's transaction (group commit), so a crash can never leave a
digest without its delivery, which would refuse GitHub's own redelivery.
"""
from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.store.db import Database
from bot.store.deliveries import NewDelivery, delivery_rows, insert_new

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS delivery_bodies (
    digest BLOB PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    seen_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivery_bodies_seen ON delivery_bodies(seen_at);
"""
)

REPLAY_WINDOW = 3 * 24 * 3600.0
"""GitHub keeps deliveries for redelivery for 3 days; a replay within them is refused."""
PRUNE_EVERY = 3600.0


class Intake(str, enum.Enum):
    """What storing one verified delivery did."""

    NEW = "new"
    DUPLICATE = "duplicate"  # this delivery id was already accepted (GitHub's redelivery)
    REPLAY = "replay"  # this body was already accepted under another delivery id


@dataclass(frozen=True)
class SignedDelivery:
    delivery: NewDelivery
    digest: bytes  # the verified HMAC-SHA256 of the body


def digest_of(signature_header: str) -> bytes:
    """The digest in a verified ``X-Hub-Signature-256`` value (``sha256=<64 hex>``)."""
    return bytes.fromhex(signature_header.strip().partition("=")[2])


def classify(items: Sequence[SignedDelivery], known: dict[bytes, str]) -> list[bool]:
    """Pure: per item, True if it is a replay (its body known under another id).

    ``known`` maps digests seen within the window to their delivery id; the
    first item of a batch with a new digest claims it for its id.
    """
    owners = dict(known)
    out = []
    for it in items:
        owner = owners.setdefault(it.digest, it.delivery.id)
        out.append(owner != it.delivery.id)
    return out


class IntakeStore:
    """Stores verified deliveries, refusing replayed bodies; one transaction per batch."""

    def __init__(self, db: Database, *, window: float = REPLAY_WINDOW,
                 clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.window = window
        self._clock = clock or time.time
        self._pruned_at = 0.0

    async def add_many(self, items: Sequence[SignedDelivery]) -> list[Intake]:
        if not items:
            return []
        now = self._clock()
        since = now - self.window
        prune = now - self._pruned_at >= PRUNE_EVERY
        if prune:
            self._pruned_at = now
        rows = delivery_rows([it.delivery for it in items], now)
        digests = list(dict.fromkeys(it.digest for it in items))

        def tx(conn: sqlite3.Connection) -> list[Intake]:
            if prune:
                conn.execute("DELETE FROM delivery_bodies WHERE seen_at < ?", (since,))
            known: dict[bytes, str] = {}
            for i in range(0, len(digests), 500):
                chunk = digests[i:i + 500]
                cur = conn.execute(
                    "SELECT digest, delivery_id FROM delivery_bodies WHERE seen_at >= ? AND digest IN"
                    f" ({','.join('?' * len(chunk))})", [since, *chunk])
                known.update((bytes(d), str(i)) for d, i in cur.fetchall())
            replay = classify(items, known)
            keep = [row for row, r in zip(rows, replay, strict=True) if not r]
            new = iter(insert_new(conn, keep))
            out = [Intake.REPLAY if r else (Intake.NEW if next(new) else Intake.DUPLICATE) for r in replay]
            fresh = [(it.digest, it.delivery.id, now) for it, o in zip(items, out, strict=True) if o is Intake.NEW]
            if fresh:
                conn.executemany("INSERT OR REPLACE INTO delivery_bodies (digest, delivery_id, seen_at)"
                                 " VALUES (?,?,?)", fresh)
            return out

        return await self.db.run(tx)
