"""After a stop that could not tell GitHub everything, the restart does: feedback follows the store."""
from __future__ import annotations

import sqlite3
import time

from bot.model import BuildState
from tests.fake_github import Fault

CHECK_PATCH = "/repos/{owner}/{repo}/check-runs/{check_run_id}"
COMMENT_PATCH = "/repos/{owner}/{repo}/issues/comments/{comment_id}"
LIST_RUNS = "/repos/{owner}/{repo}/commits/{ref}/check-runs"


async def built(bot, sha: str) -> bool:
    rec = await bot.services.builds.latest_for_sha("binder-examples", "requirements", sha)
    return rec is not None and rec.state is BuildState.BUILT


async def test_a_check_run_left_in_progress_by_a_stop_is_completed_after_the_restart(prebuild_bot, tmp_path):
    first = await prebuild_bot(data_dir=tmp_path / "kept")
    first.builder.hold = True
    sha = first.commit("one")
    await first.send("push", first.push(sha))
    await first.until(lambda: first.runs(sha) and first.runs(sha)[0]["status"] == "in_progress")
    first.fake.inject("PATCH", CHECK_PATCH, *[Fault.server_error() for _ in range(1000)])  # GitHub fails the edits
    first.builder.hold = False
    first.builder.release()
    await first.until(lambda: built(first, sha))
    await first.client.close()  # stopped: the completed state never reached GitHub
    assert first.run(sha)["status"] == "in_progress"

    first.fake.clear_faults()
    second = await prebuild_bot(data_dir=tmp_path / "kept", inst=first.inst)
    await second.settle()
    run = second.run(sha)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert second.builder.jobs == []  # the store knew it was built: nothing ran again
    assert not second.fake.calls("GET", LIST_RUNS)  # the store knew the run: no listing


async def test_a_pr_comment_left_building_by_a_stop_says_ready_after_the_restart(prebuild_bot, tmp_path):
    first = await prebuild_bot(data_dir=tmp_path / "kept")
    first.builder.hold = True
    sha = first.commit("one")
    await first.send("pull_request", first.pr("opened", sha))
    await first.until(lambda: first.comments() and "**Building**" in first.comments()[0]["body"])
    first.fake.inject("PATCH", COMMENT_PATCH, *[Fault.server_error() for _ in range(1000)])
    first.fake.inject("PATCH", CHECK_PATCH, *[Fault.server_error() for _ in range(1000)])
    first.builder.hold = False
    first.builder.release()
    await first.until(lambda: built(first, sha))
    await first.client.close()
    assert "**Building**" in first.comment()["body"]

    first.fake.clear_faults()
    second = await prebuild_bot(data_dir=tmp_path / "kept", inst=first.inst)
    await second.settle()
    assert "**Ready**" in second.comment()["body"] and sha in second.comment()["body"]
    assert (second.run(sha)["status"], second.run(sha)["conclusion"]) == ("completed", "success")


async def test_a_closed_pr_keeps_its_closed_comment_across_a_restart(prebuild_bot, tmp_path):
    first = await prebuild_bot(data_dir=tmp_path / "kept")
    sha = first.commit("one")
    await first.send("pull_request", first.pr("opened", sha))
    await first.settle()
    await first.send("pull_request", first.pr("closed", sha))
    await first.settle()
    assert "**Closed**" in first.comment()["body"]
    await first.client.close()
    sent_before = len(first.fake.requests)

    second = await prebuild_bot(data_dir=tmp_path / "kept", inst=first.inst)
    await second.settle()
    assert "**Closed**" in second.comment()["body"]
    # nothing disagreed with the store, so nothing about the repository was asked of GitHub
    assert [(r.method, r.path) for r in second.fake.requests[sent_before:] if r.path.startswith("/repos/")] == []


async def test_a_pr_the_store_has_no_head_for_keeps_its_comment_after_the_restart(prebuild_bot, tmp_path):
    """Data from before PR heads were kept: the restore must not guess a head from old builds."""
    first = await prebuild_bot(data_dir=tmp_path / "kept")
    old, new = first.commit("one"), first.commit("two")
    await first.send("pull_request", first.pr("opened", old))
    await first.settle()
    await first.send("pull_request", first.pr("synchronize", new))
    await first.settle()
    await first.services.db.execute("DELETE FROM pr_feedback")
    await first.client.close()

    second = await prebuild_bot(data_dir=tmp_path / "kept", inst=first.inst)
    await second.settle()
    body = second.comment()["body"]
    assert new in body and old not in body and "**Ready**" in body


async def _built_then_crash_before_the_run_id_was_recorded(prebuild_bot, tmp_path):
    """A build finished while GitHub failed the edits, and the store is as a kill right after the
    create's answer leaves it: the create noted, its run id never recorded."""
    first = await prebuild_bot(data_dir=tmp_path / "kept")
    first.builder.hold = True
    sha = first.commit("one")
    await first.send("push", first.push(sha))
    await first.until(lambda: first.runs(sha) and first.runs(sha)[0]["status"] == "in_progress")
    first.fake.inject("PATCH", CHECK_PATCH, *[Fault.server_error() for _ in range(1000)])
    first.builder.hold = False
    first.builder.release()
    await first.until(lambda: built(first, sha))
    await first.client.close()
    db = sqlite3.connect(tmp_path / "kept" / "binder-prebuild.sqlite")
    with db:
        assert db.execute("DELETE FROM check_runs").rowcount == 1
        db.execute("INSERT INTO check_run_creates (full_name, sha, started_at) VALUES (?,?,?)",
                   ("binder-examples/requirements", sha, time.time()))
    db.close()
    first.fake.clear_faults()
    return first, sha


async def test_a_check_run_created_just_before_a_crash_is_adopted_not_made_twice(prebuild_bot, tmp_path):
    first, sha = await _built_then_crash_before_the_run_id_was_recorded(prebuild_bot, tmp_path)
    created = first.run(sha)["id"]
    second = await prebuild_bot(data_dir=tmp_path / "kept", inst=first.inst)
    await second.settle()
    run = second.run(sha)  # exactly one Binder run on the commit
    assert run["id"] == created
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    listed = second.fake.calls("GET", LIST_RUNS)
    assert len(listed) == 1 and listed[0].query["app_id"] == str(second.fake.app_id)
    db = sqlite3.connect(tmp_path / "kept" / "binder-prebuild.sqlite")
    assert db.execute("SELECT COUNT(*) FROM check_run_creates").fetchone()[0] == 0  # answered now
    assert db.execute("SELECT check_run_id FROM check_runs").fetchone()[0] == created
    db.close()


async def test_an_older_run_left_open_beside_the_adopted_one_is_closed(prebuild_bot, tmp_path):
    first, sha = await _built_then_crash_before_the_run_id_was_recorded(prebuild_bot, tmp_path)
    older = first.run(sha)
    newer_id = first.fake.next_id()  # a second create the crash window also swallowed
    first.fake.check_runs[newer_id] = {**older, "id": newer_id, "_history": []}
    second = await prebuild_bot(data_dir=tmp_path / "kept", inst=first.inst)
    await second.settle()
    runs = {r["id"]: r for r in second.runs(sha)}
    assert (runs[newer_id]["status"], runs[newer_id]["conclusion"]) == ("completed", "success")
    assert (runs[older["id"]]["status"], runs[older["id"]]["conclusion"]) == ("completed", "neutral")
    assert str(newer_id) in runs[older["id"]]["output"]["summary"]
