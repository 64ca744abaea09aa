"""The embedded store: SQLite in WAL mode, one writer connection and one reader connection.

Writes go through a connection of our own on one thread (a single-worker
executor), so a whole transaction can run there in one hop (``run``) and
transactions never interleave. Reads go through a second connection, read-only,
on a thread of its own: in WAL mode it sees committed state only, never a
transaction another task has open, and it never waits behind a write. A read is
one hop to that thread (execute, fetch, close the cursor there): a launch makes a
few reads, and each thread round trip costs a wake-up on a busy machine. The
tables are given to ``open`` by bot/store/schema.py, which knows them; this
module knows none of them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Result:
    """What a statement inside ``transaction()`` returned (rows read at once, on the writer thread)."""

    def __init__(self, rows: list[sqlite3.Row], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    async def fetchone(self) -> sqlite3.Row | None:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[sqlite3.Row]:
        return list(self._rows)


class Transaction:
    """The statements of one ``transaction()`` block, each run on the writer thread."""

    def __init__(self, db: "Database") -> None:
        self._db = db

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> Result:
        values = tuple(params)

        def call(conn: sqlite3.Connection) -> Result:
            cur = conn.execute(sql, values)
            return Result(cur.fetchall(), cur.rowcount, cur.lastrowid)

        return await self._db._submit(call)


def _read_only(path: Path, *, busy_ms: int, any_thread: bool) -> sqlite3.Connection:
    """A connection that can only read (rows by name), waiting at most ``busy_ms`` on a lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not any_thread)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    conn.execute("PRAGMA query_only=ON")
    return conn


def _take(conn: sqlite3.Connection, sql: str, values: tuple[Any, ...], take: Callable[[sqlite3.Cursor], T]) -> T:
    """``take(cursor)`` of one statement, the cursor closed on the same thread."""
    cur = conn.execute(sql, values)
    try:
        return take(cur)
    finally:
        cur.close()


class Database:
    """The writer serialises transactions (a lock, then one thread); the reader never blocks on them."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._inline: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self, schemas: Sequence[str] = ()) -> "Database":
        """Open both connections and create ``schemas`` (idempotent DDL: CREATE ... IF NOT EXISTS)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")

        def connect(conn: None) -> None:
            writer = sqlite3.connect(self.path, isolation_level=None)
            writer.row_factory = sqlite3.Row
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000", "foreign_keys=ON"):
                writer.execute(f"PRAGMA {pragma}")
            for sql in schemas:
                writer.executescript(sql)
            self._writer = writer

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, connect, None)
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")

        self._reader = await loop.run_in_executor(
            self._read_executor, lambda: _read_only(self.path, busy_ms=5000, any_thread=True))
        # on the loop's own thread: point reads on the click's path (see fetchone_now); it never
        # waits on the loop: busy -> the reader's thread
        self._inline = _read_only(self.path, busy_ms=0, any_thread=False)
        return self

    async def close(self) -> None:
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        if self._read_executor is not None:
            reader, self._reader = self._reader, None
            if reader is not None:
                await asyncio.get_running_loop().run_in_executor(self._read_executor, reader.close)
            self._read_executor.shutdown(wait=False)
            self._read_executor = None
        if self._executor is not None:
            writer, self._writer = self._writer, None
            if writer is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, writer.close)
            self._executor.shutdown(wait=False)
            self._executor = None

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> "asyncio.Future[T]":
        """Queue ``fn(writer)`` on the writer thread now; the future answers when it has run."""
        if self._executor is None or self._writer is None:
            raise RuntimeError("database is not open")
        writer = self._writer
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, writer)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); durable when it returns."""
        async with self._write_lock:
            await self._submit(lambda c: c.execute("BEGIN IMMEDIATE"))
            try:
                yield Transaction(self)
            except BaseException:
                await self._submit(lambda c: c.execute("ROLLBACK"))
                raise
            else:
                await self._submit(lambda c: c.execute("COMMIT"))

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` as one transaction on the writer thread, in a single hop.

        Every call to the writer is a round trip through the event loop; under load each
        costs a loop iteration, so a transaction of five calls waits five times. Hot
        paths (the webhook queue) put their whole transaction in ``fn`` instead: BEGIN
        IMMEDIATE, ``fn``, COMMIT (ROLLBACK if it raises), durable when this returns.
        ``fn`` runs on another thread: plain sqlite3 calls only, no awaiting.
        """

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        async with self._write_lock:
            # Only queueing needs the lock: the writer thread runs its jobs one by
            # one in order, and ``tx`` is a whole transaction, so nothing can
            # interleave with it (a ``transaction()`` block holds the lock from
            # BEGIN to COMMIT, so nothing is queued inside one either). Not
            # holding it until ``tx`` returns lets the next transaction wait in
            # the thread's queue instead of behind an event-loop round trip.
            done = self._submit(tx)
        return await done

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One write statement in its own transaction; returns rows changed (one hop: see ``run``)."""
        values = tuple(params)
        return await self.run(lambda conn: conn.execute(sql, values).rowcount)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> "asyncio.Future[T]":
        """Run ``fn(reader)`` on the reader's thread: one hop for a whole query."""
        if self._read_executor is None or self._reader is None:
            raise RuntimeError("database is not open")
        return asyncio.get_running_loop().run_in_executor(self._read_executor, fn, self._reader)

    async def _query(self, sql: str, params: Iterable[Any], take: Callable[[sqlite3.Cursor], T]) -> T:
        """``take(cursor)`` of one statement, on the reader's thread in one hop (the cursor closed there)."""
        values = tuple(params)

        return await self._read(lambda conn: _take(conn, sql, values, take))

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Rows as last committed (the reader never sees an open transaction)."""
        return await self._query(sql, params, sqlite3.Cursor.fetchall)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        return await self._query(sql, params, sqlite3.Cursor.fetchone)

    async def fetchone_now(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """``fetchone`` run on the loop's own thread, for an indexed point read on a click's path.

        Such a query takes tens of microseconds; the hop to the reader's thread and back
        costs about ten times that (two thread wake-ups). Only for lookups by key: anything
        that scans goes through ``fetchone``. Busy (a checkpoint, a WAL recovery): the reader's thread.
        """
        return await self._now(sql, params, sqlite3.Cursor.fetchone)

    async def fetchall_now(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """``fetchall`` on the loop's thread: the few rows of one key (see ``fetchone_now``)."""
        return await self._now(sql, params, sqlite3.Cursor.fetchall)

    async def _now(self, sql: str, params: Iterable[Any], take: Callable[[sqlite3.Cursor], T]) -> T:
        values = tuple(params)
        if self._inline is not None:
            try:
                return _take(self._inline, sql, values, take)
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
        return await self._query(sql, values, take)

    async def ping(self) -> None:
        """The store answers: the reader reads, and the writer thread runs a statement."""
        await self.fetchone("SELECT 1")
        await self._submit(lambda c: c.execute("SELECT 1").fetchone())
