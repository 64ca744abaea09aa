"""Group commit (bot/webhooks/writer.py) and the store's queued transactions (Database.run)."""
from __future__ import annotations

import asyncio
import threading

from bot.store.db import Database
from bot.webhooks.writer import GroupCommit


async def test_each_caller_waits_for_the_commit_holding_its_item_while_the_next_batch_is_queued():
    started: list[list[int]] = []
    release = {1: asyncio.Event(), 2: asyncio.Event(), 3: asyncio.Event()}

    async def commit(items):
        started.append(list(items))
        await release[len(started)].wait()
        return [i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(commit, name="t", max_inflight=2)
    first = asyncio.create_task(gc.submit(1))
    await asyncio.sleep(0.01)
    second = [asyncio.create_task(gc.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0.01)
    third = asyncio.create_task(gc.submit(4))
    await asyncio.sleep(0.01)
    # batch 2 is handed over while batch 1 commits; batch 3 waits for a free slot
    assert started == [[1], [2, 3]]
    release[2].set()  # the later batch finishes first: only its own callers hear of it
    await asyncio.sleep(0.01)
    assert [t.done() for t in second] == [True, True] and not first.done()
    assert [await t for t in second] == [20, 30]
    assert started == [[1], [2, 3], [4]]
    assert not third.done()
    release[3].set()
    assert await third == 40
    assert not first.done()
    release[1].set()
    assert await first == 10
    await gc.close()
    assert (gc.commits, gc.items) == (3, 4)


async def test_close_waits_for_every_batch_in_flight():
    gate = asyncio.Event()

    async def commit(items):
        await gate.wait()
        return list(items)

    gc: GroupCommit[int, int] = GroupCommit(commit, name="t", max_inflight=2)
    calls = [asyncio.create_task(gc.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(gc.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    gate.set()
    await closing
    assert [await c for c in calls] == [0, 1, 2]


async def test_queued_runs_execute_in_order_and_never_inside_an_open_transaction(tmp_path):
    db = await Database(tmp_path / "s.sqlite").open()
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (n INTEGER)"))
        order: list[str] = []
        hold = threading.Event()

        def slow(c):
            hold.wait(5)
            c.execute("INSERT INTO t VALUES (1)")
            order.append("slow")

        def fast(c):
            c.execute("INSERT INTO t VALUES (2)")
            order.append("fast")

        a = asyncio.create_task(db.run(slow))
        await asyncio.sleep(0.01)
        b = asyncio.create_task(db.run(fast))  # queued behind ``slow`` without waiting for its answer
        await asyncio.sleep(0.01)
        hold.set()
        await asyncio.gather(a, b)
        assert order == ["slow", "fast"]

        async with db.transaction() as conn:
            await conn.execute("INSERT INTO t VALUES (3)")
            inside = asyncio.create_task(db.run(lambda c: c.execute("INSERT INTO t VALUES (4)")))
            await asyncio.sleep(0.02)
            assert not inside.done()  # not queued into the open transaction
            await conn.execute("INSERT INTO t VALUES (5)")
        await inside
        rows = await db.fetchall("SELECT n FROM t ORDER BY rowid")
        assert [r["n"] for r in rows] == [1, 2, 3, 5, 4]
    finally:
        await db.close()
