"""The store's connections (bot/store/db.py): reads see committed state only."""
from __future__ import annotations

import asyncio

from bot.store.db import Database
from bot.store.schema import SCHEMAS, open_store


async def test_a_read_during_another_tasks_open_transaction_does_not_see_its_rows(tmp_path):
    db = await Database(tmp_path / "s.sqlite").open(["CREATE TABLE IF NOT EXISTS t (n INTEGER)"])
    inserted, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            inside = await (await tx.execute("SELECT COUNT(*) AS c FROM t")).fetchone()
            assert inside["c"] == 1  # the transaction sees its own row
            inserted.set()
            await release.wait()

    try:
        task = asyncio.create_task(writer())
        await inserted.wait()
        assert await db.fetchall("SELECT n FROM t") == []  # uncommitted: not there for others
        assert (await db.fetchone("SELECT COUNT(*) AS c FROM t"))["c"] == 0
        release.set()
        await task
        assert [r["n"] for r in await db.fetchall("SELECT n FROM t")] == [1]  # committed: there
    finally:
        await db.close()


async def test_a_rolled_back_transaction_leaves_nothing_to_read(tmp_path):
    db = await Database(tmp_path / "s.sqlite").open(["CREATE TABLE IF NOT EXISTS t (n INTEGER)"])
    try:
        try:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (1)")
                raise RuntimeError("abandon")
        except RuntimeError:
            pass
        assert await db.fetchall("SELECT n FROM t") == []
        assert await db.execute("INSERT INTO t VALUES (2)") == 1  # the writer is usable again
        assert [r["n"] for r in await db.fetchall("SELECT n FROM t")] == [2]
    finally:
        await db.close()


async def test_open_store_creates_every_table_and_reads_cannot_write(tmp_path):
    db = await open_store(tmp_path / "s.sqlite")
    try:
        names = {r["name"] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"builds", "deliveries", "installations", "pr_comments"} <= names
        assert len(SCHEMAS) == 9
        try:
            await db.fetchall("DELETE FROM builds")
        except Exception as e:  # the reader is query_only: writes go through the writer
            assert "readonly" in str(e).lower() or "query_only" in str(e).lower() or "read-only" in str(e).lower()
        else:
            raise AssertionError("the reader connection accepted a write")
    finally:
        await db.close()
