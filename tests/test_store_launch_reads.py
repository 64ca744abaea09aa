"""The store reads a launch makes are index lookups, read on the loop's own thread (no hop).

A launch of a prebuilt image reads the store a few times on its way to the Hub (the
installation, a branch head, the image's build record). Those must not scan a table whose
size grows with every build ever recorded: the plan of each statement is checked.
"""
from __future__ import annotations

import sqlite3

from bot.store.builds import BuildStore
from bot.store.github_state import GitHubState
from bot.store.schema import open_store


async def test_launch_path_reads_use_indexes(tmp_path):
    db = await open_store(tmp_path / "store.db")
    try:
        statements: list[str] = []
        await db._read(lambda conn: conn.set_trace_callback(statements.append))  # the reader's own statements
        db._inline.set_trace_callback(statements.append)  # and the loop's point reads
        await GitHubState(db).installation_for("octo/demo")
        await BuildStore(db).latest_for_sha("Octo", "Demo", "a" * 40)
        await BuildStore(db).newest_built("Octo", "Demo")
        await db._read(lambda conn: conn.set_trace_callback(None))
        db._inline.set_trace_callback(None)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 3
        conn = sqlite3.connect(tmp_path / "store.db")
        for sql in selects:
            plan = " / ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), (sql, plan)
        conn.close()
    finally:
        await db.close()


async def test_reads_answer_rows_by_name_and_see_committed_writes(tmp_path):
    db = await open_store(tmp_path / "store.db")
    try:
        await db.execute("INSERT INTO installations (id, account, updated_at) VALUES (?, ?, ?)", (7, "octo", 1.0))
        row = await db.fetchone("SELECT id, account FROM installations WHERE id=?", (7,))
        assert row is not None and row["account"] == "octo" and tuple(row) == (7, "octo")
        assert await db.fetchone("SELECT id FROM installations WHERE id=?", (8,)) is None
        assert [r["id"] for r in await db.fetchall("SELECT id FROM installations")] == [7]
    finally:
        await db.close()


async def test_point_reads_on_the_loop_see_committed_writes_and_never_write(tmp_path):
    db = await open_store(tmp_path / "store.db")
    try:
        assert await db.fetchone_now("SELECT id FROM installations WHERE id=?", (7,)) is None
        await db.execute("INSERT INTO installations (id, account, updated_at) VALUES (?, ?, ?)", (7, "octo", 1.0))
        row = await db.fetchone_now("SELECT id, account FROM installations WHERE id=?", (7,))
        assert row is not None and tuple(row) == (7, "octo")
        assert [r["id"] for r in await db.fetchall_now("SELECT id FROM installations WHERE id=?", (7,))] == [7]
        try:
            await db.fetchone_now("DELETE FROM installations WHERE id=?", (7,))
        except sqlite3.OperationalError as e:
            assert "readonly" in str(e)
        else:
            raise AssertionError("the loop's connection wrote")
        assert await db.fetchone("SELECT id FROM installations WHERE id=?", (7,)) is not None
    finally:
        await db.close()


async def test_the_installation_lookup_is_dropped_by_every_installation_write(tmp_path):
    db = await open_store(tmp_path / "store.db")
    try:
        gh = GitHubState(db)
        assert await gh.installation_for("octo/demo") is None  # remembered: not installed
        await gh.upsert_installation(7, "octo")
        await gh.add_repos(7, [("octo/demo", False)])
        assert await gh.installation_for("Octo/Demo") == 7
        await gh.set_suspended(7, True)
        assert await gh.installation_for("octo/demo") is None
        await gh.set_suspended(7, False)
        assert await gh.installation_for("octo/demo") == 7
        await gh.remove_repos(7, ["octo/demo"])
        assert await gh.installation_for("octo/demo") is None
        await gh.replace_repos(7, [("octo/demo", True)])
        assert await gh.installation_for("octo/demo") == 7
        await gh.delete_installation(7)
        assert await gh.installation_for("octo/demo") is None
    finally:
        await db.close()
