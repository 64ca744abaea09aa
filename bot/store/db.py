"""One aiosqlite connection in WAL mode; each feature module registers its schema."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMAS: list[str] = []


def register_schema(sql: str) -> str:
    """Feature modules call this at import with idempotent DDL (CREATE ... IF NOT EXISTS)."""
    if sql not in _SCHEMAS:
        _SCHEMAS.append(sql)
    return sql


class Database:
    """A single connection; writes are serialised by a lock so transactions never interleave."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> "Database":
        # import the modules that own tables, so their schemas are registered
        from bot.store import (  # noqa: F401
            builds, checkpoints, deliveries, github_state, heads, pr_heads, prepull_state, replays,
        )

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute("PRAGMA synchronous=FULL")
        await self._conn.execute("PRAGMA busy_timeout=5000")
        await self._conn.execute("PRAGMA foreign_keys=ON")
        for sql in _SCHEMAS:
            await self._conn.executescript(sql)
        return self

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); durable when it returns."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` as one transaction on the store's thread, in a single hop.

        Every aiosqlite call is a round trip through the event loop; under load each
        costs a loop iteration, so a transaction of five calls waits five times. Hot
        paths (the webhook queue) put their whole transaction in ``fn`` instead: BEGIN
        IMMEDIATE, ``fn``, COMMIT (ROLLBACK if it raises), durable when this returns.
        ``fn`` runs on another thread: plain sqlite3 calls only, no awaiting.
        """
        conn = self.conn

        def tx() -> T:
            raw = conn._conn  # the sqlite3 connection, used on its own thread
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = fn(raw)
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
            return result

        async with self._write_lock:
            # Only queueing needs the lock: the store thread runs its jobs one by
            # one in order, and ``tx`` is a whole transaction, so nothing can
            # interleave with it (a ``transaction()`` block holds the lock from
            # BEGIN to COMMIT, so nothing is queued inside one either). Not
            # holding it until ``tx`` returns lets the next transaction wait in
            # the thread's queue instead of behind an event-loop round trip.
            done = self._enqueue(tx)
        return await done

    def _enqueue(self, fn: Callable[[], T]) -> "asyncio.Future[T]":
        """Put ``fn`` on the store thread's queue now (aiosqlite's ``_execute`` minus its await)."""
        conn = self.conn
        queue = getattr(conn, "_tx", None)
        if queue is None or not getattr(conn, "_running", False) or conn._connection is None:
            return asyncio.ensure_future(conn._execute(fn))  # another aiosqlite layout, or closed: its own path
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue.put_nowait((future, fn))
        return future

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One write statement in its own transaction; returns rows changed (one hop: see ``run``)."""
        values = tuple(params)
        return await self.run(lambda conn: conn.execute(sql, values).rowcount)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def ping(self) -> None:
        await self.fetchone("SELECT 1")
