"""Store upkeep: pruning keeps the data volume bounded; dead deliveries can be listed and requeued."""
from __future__ import annotations

import time

import pytest

from bot.cli import main
from bot.model import BuildRequest, BuildState, Phase
from bot.store.upkeep import MIN_RETENTION, dead_deliveries, prune, requeue
from tests.test_dispatcher import new

DAY = 86400.0


@pytest.fixture
async def services(make_services):
    return await make_services()


async def _deliveries(services):
    """done long ago, done just now, dead long ago, failed (waiting for a retry) long ago."""
    store = services.deliveries
    old_done, new_done, dead, waiting = (new("push.branch") for _ in range(4))
    await store.add_many([old_done, new_done, dead, waiting])
    claimed = {d.id: d for d in await store.claim(limit=10, lease_seconds=60)}
    await store.finish(old_done.id, claimed[old_done.id].attempts)
    await store.finish(new_done.id, claimed[new_done.id].attempts)
    await store.fail(dead.id, "KeyError: 'sha'", retry_at=None, attempt=claimed[dead.id].attempts)
    await store.fail(waiting.id, "503", retry_at=time.time() + 60, attempt=claimed[waiting.id].attempts,
                     outcome="delayed")
    long_ago = time.time() - 30 * DAY
    for d in (old_done, dead, waiting):
        await services.db.execute("UPDATE deliveries SET finished_at=?, received_at=? WHERE id=?",
                                  (long_ago, long_ago, d.id))
        await services.db.execute("UPDATE delivery_attempts SET finished_at=? WHERE delivery_id=?", (long_ago, d.id))
    return old_done, new_done, dead, waiting


async def body_len(services, delivery_id):
    row = await services.db.fetchone("SELECT length(body) AS n FROM deliveries WHERE id=?", (delivery_id,))
    return None if row is None else row["n"]


async def test_prune_drops_processed_bodies_and_old_rows_keeps_what_may_still_run(services):
    old_done, new_done, dead, waiting = await _deliveries(services)
    req = BuildRequest(owner="o", repo="r", sha="a" * 40, clone_url="http://x/o/r.git", branch="main")
    rec = await services.builds.create(req, "img:a", state=BuildState.FAILED, phase=Phase.FAILED)
    await services.builds.update(rec.id, log_tail=("line 1", "line 2"), finished_at=time.time() - 30 * DAY)
    recent = await services.builds.create(
        BuildRequest(owner="o", repo="r", sha="b" * 40, clone_url="http://x/o/r.git", branch="main"), "img:b",
        state=BuildState.FAILED, phase=Phase.FAILED)
    await services.builds.update(recent.id, log_tail=("kept",))

    pruned = await prune(services.db, retention=14 * DAY)

    assert await body_len(services, old_done.id) is None  # a finished delivery past retention: gone
    assert await body_len(services, new_done.id) == 0  # processed: its body is dropped, its GUID kept (dedupe)
    assert await body_len(services, dead.id) > 0 and await body_len(services, waiting.id) > 0
    assert await services.deliveries.attempts_of(old_done.id) == []
    assert [a["outcome"] for a in await services.deliveries.attempts_of(dead.id)] == ["dead"]
    assert (await services.builds.get(rec.id)).log_tail == ()
    assert (await services.builds.get(recent.id)).log_tail == ("kept",)
    assert pruned.deliveries == 1 and pruned.bodies >= 2 and pruned.build_logs == 1
    again = await prune(services.db, retention=14 * DAY)
    assert again.total() == 0


async def test_retention_never_drops_a_guid_github_may_still_redeliver(services):
    d = new("push.branch")
    await services.deliveries.add_many([d])
    [c] = await services.deliveries.claim(limit=1, lease_seconds=60)
    await services.deliveries.finish(d.id, c.attempts)
    await services.db.execute("UPDATE deliveries SET finished_at=? WHERE id=?", (time.time() - 2 * DAY, d.id))
    await prune(services.db, retention=0)  # asked for less than GitHub's 3 days
    assert await services.deliveries.known([d.id]) == {d.id}
    assert MIN_RETENTION == 3 * DAY


async def test_requeue_gives_a_dead_delivery_a_fresh_round_of_attempts(services):
    _, new_done, dead, _ = await _deliveries(services)
    assert [r["id"] for r in await dead_deliveries(services.db)] == [dead.id]
    assert await services.deliveries.count_attempts(dead.id, "dead") == 1
    assert await requeue(services.db, dead.id) is True
    assert (await services.deliveries.get(dead.id))["state"] == "pending"
    assert await services.deliveries.count_attempts(dead.id, "failed") == 0  # counted afresh
    assert await requeue(services.db, new_done.id) is False  # only dead ones
    assert await dead_deliveries(services.db) == []


async def test_cli_lists_dead_deliveries_and_requeues_one(services, monkeypatch, capsys):
    _, _, dead, _ = await _deliveries(services)
    monkeypatch.setenv("DATA_DIR", str(services.settings.data_dir))
    import asyncio

    loop = asyncio.get_running_loop()
    code = await loop.run_in_executor(None, main, ["deliveries", "--dead"])
    out = capsys.readouterr().out
    assert code == 0 and dead.id in out and "KeyError" in out and "push" in out
    code = await loop.run_in_executor(None, main, ["deliveries", "--retry", dead.id])
    assert code == 0 and f"requeued delivery {dead.id}" in capsys.readouterr().out
    assert (await services.deliveries.get(dead.id))["state"] == "pending"
    code = await loop.run_in_executor(None, main, ["deliveries", "--retry", "no-such-id"])
    assert code == 1 and "no dead delivery" in capsys.readouterr().err
