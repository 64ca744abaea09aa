"""A pull request's whole life through the real webhook route: one comment, one check run per sha."""
from __future__ import annotations

import asyncio

from tests.fake_github import Fault
from tests.feedback_harness import REPO

MARKER = "<!-- binder-prebuild -->"


def bodies_sent(bot, number: int = 7) -> list[str]:
    """Every comment text we sent for PR ``number``, in order (create, then edits)."""
    out = []
    for r in bot.fake.requests:
        if r.status not in (200, 201) or not isinstance(r.json, dict) or "body" not in r.json:
            continue
        if r.method == "POST" and r.route == "/repos/{owner}/{repo}/issues/{number}/comments" \
                and r.path.endswith(f"/issues/{number}/comments") and r.json["body"].startswith(MARKER):
            out.append(r.json["body"])
        elif r.method == "PATCH" and r.route == "/repos/{owner}/{repo}/issues/comments/{comment_id}":
            out.append(r.json["body"])
    return out


async def run_life_cycle(bot) -> list[str]:
    """opened, three synchronize (the first three superseded while building), closed, reopened."""
    bot.builder.hold = True
    shas = [bot.commit(f"change {i}") for i in range(4)]
    await bot.send("pull_request", bot.pr("opened", shas[0]))
    await bot.until(lambda: bot.runs(shas[0]) and bot.runs(shas[0])[0]["status"] == "in_progress")
    for sha in shas[1:]:
        await bot.send("pull_request", bot.pr("synchronize", sha))
        await bot.until(lambda sha=sha: bot.runs(sha) and bot.runs(sha)[0]["status"] == "in_progress")
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()
    await bot.send("pull_request", bot.pr("closed", shas[3]))
    await bot.settle()
    assert "**Closed**" in bot.comment()["body"]
    await bot.send("pull_request", bot.pr("reopened", shas[3]))
    await bot.settle()
    return shas


def assert_final_state(bot, shas: list[str]) -> None:
    # one check run per sha, in the right conclusion
    for old, new in zip(shas[:3], shas[1:]):
        run = bot.run(old)
        assert (run["status"], run["conclusion"]) == ("completed", "cancelled")
        assert run["output"]["title"] == "Superseded by a newer commit"
        assert new[:7] in run["output"]["summary"] and f"/commit/{new}" in run["output"]["summary"]
    last = bot.run(shas[3])
    assert (last["status"], last["conclusion"]) == ("completed", "success")
    assert last["details_url"] == f"{bot.settings.public_url}/builds/gh/{REPO}/{shas[3]}"
    assert f"/v2/gh/{REPO}/{shas[3]}" in last["output"]["summary"]
    # exactly one comment, about the head sha, ready again after reopening
    comment = bot.comment()
    assert comment["body"].startswith(MARKER)
    assert "**Ready**" in comment["body"] and shas[3] in comment["body"]
    assert f"{bot.settings.public_url}/badge/gh/{REPO}/{shas[3]}.svg" in comment["body"]
    assert all(s not in comment["body"] for s in shas[:3])
    # never the same text twice in a row: one edit per state change
    sent = bodies_sent(bot)
    assert all(a != b for a, b in zip(sent, sent[1:])), "an edit repeated the previous text"
    assert len(bot.fake.rejected) == 0, bot.fake.rejected


async def test_pr_life_cycle(prebuild_bot):
    bot = await prebuild_bot()
    shas = await run_life_cycle(bot)
    assert_final_state(bot, shas)
    # only the last sha was built to the end; reopening found its image and built nothing
    assert [j.request.sha for j in bot.builder.jobs] == shas
    # the comment went: building x4 (one per head), ready, closed, ready
    states = [next(w for w in ("Building", "Ready", "Closed", "Failed") if f"**{w}**" in b) for b in bodies_sent(bot)]
    assert states == ["Building"] * 4 + ["Ready", "Closed", "Ready"]
    # check-run outputs were edited no more than needed: queued, in_progress, completed for the last sha
    history = bot.run(shas[3])["_history"]
    assert [h.get("status") for h in history] == ["queued", "in_progress", "completed"]


async def test_pr_life_cycle_under_injected_faults(prebuild_bot):
    bot = await prebuild_bot()
    bot.reporter.retry_base = 0.05
    fake = bot.fake
    # 5xx bursts on every kind of write, a secondary rate limit with Retry-After, and an expired token
    fake.inject("POST", "/repos/{owner}/{repo}/check-runs", Fault.server_error(502), Fault.server_error(503))
    fake.inject("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}", Fault.server_error(500),
                Fault.secondary_rate_limit(retry_after=1), Fault.server_error(502))
    fake.inject("POST", "/repos/{owner}/{repo}/issues/{number}/comments", Fault.server_error(502),
                Fault.server_error(504))
    fake.inject("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}",
                Fault.secondary_rate_limit(retry_after=1, status=429), Fault.server_error(500))
    fake.inject("GET", "/repos/{owner}/{repo}/contents/{path:.*}", Fault.server_error(502))
    fake.inject("GET", "/repos/{owner}/{repo}/issues/{number}/comments", Fault.server_error(503))

    bot.builder.hold = True
    shas = [bot.commit(f"change {i}") for i in range(4)]
    await bot.send("pull_request", bot.pr("opened", shas[0]))
    await bot.until(lambda: bot.runs(shas[0]) and bot.runs(shas[0])[0]["status"] == "in_progress")
    fake.expire_tokens()  # the cached installation token is now refused with 401
    for sha in shas[1:]:
        await bot.send("pull_request", bot.pr("synchronize", sha))
        await bot.until(lambda sha=sha: bot.runs(sha) and bot.runs(sha)[0]["status"] == "in_progress")
    fake.inject("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}", Fault.server_error(502))
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()
    fake.expire_tokens()
    await bot.send("pull_request", bot.pr("closed", shas[3]))
    await bot.settle()
    await bot.send("pull_request", bot.pr("reopened", shas[3]))
    await bot.settle()

    assert fake.pending_faults() == 0  # every fault was met
    assert any(r.status == 401 for r in fake.requests)
    assert any(r.status == 403 and r.fault for r in fake.requests)
    assert_final_state(bot, shas)


async def test_a_restart_with_the_store_kept_edits_the_same_comment(prebuild_bot, tmp_path):
    first = await prebuild_bot(data_dir=tmp_path / "kept")
    sha1 = first.commit("one")
    await first.send("pull_request", first.pr("opened", sha1))
    await first.settle()
    comment_id = first.comment()["id"]
    await first.client.close()

    second = await prebuild_bot(data_dir=tmp_path / "kept", inst=first.inst)
    sha2 = second.commit("two")
    await second.send("pull_request", second.pr("synchronize", sha2))
    await second.settle()
    assert second.comment()["id"] == comment_id and sha2 in second.comment()["body"]
    # the store knew the id: no need to list the PR's comments again
    lists = second.fake.calls("GET", "/repos/{owner}/{repo}/issues/{number}/comments")
    assert len(lists) == 1
    assert second.run(sha1)["conclusion"] == "success" and second.run(sha2)["conclusion"] == "success"


async def test_a_restart_with_the_store_lost_finds_the_comment_again(prebuild_bot, tmp_path):
    first = await prebuild_bot(data_dir=tmp_path / "a")
    sha1 = first.commit("one")
    # someone else's comments come first, across more than one page
    for i in range(120):
        cid = first.fake.next_id()
        first.fake.comments[cid] = {"id": cid, "body": f"comment {i}", "user": first.fake._user("someone"),
                                    "_repo": REPO, "_issue": 7}
    mimic = first.fake.next_id()
    first.fake.comments[mimic] = {
        "id": mimic, "body": MARKER + "\nquoted by a human", "user": first.fake._user("mimic"),
        "_repo": REPO, "_issue": 7}
    other_app = first.fake.next_id()
    first.fake.comments[other_app] = {
        "id": other_app, "body": MARKER + "\nanother App's comment", "user": first.fake._user("other[bot]", "Bot"),
        "performed_via_github_app": {"id": 777, "slug": "other"}, "_repo": REPO, "_issue": 7}
    await first.send("pull_request", first.pr("opened", sha1))
    await first.settle()
    [comment_id] = [c["id"] for c in first.comments() if c["id"] != other_app]
    await first.client.close()

    second = await prebuild_bot(data_dir=tmp_path / "b", inst=first.inst)
    await second.send("pull_request", second.pr("closed", sha1))
    await second.settle()
    await second.send("pull_request", second.pr("reopened", sha1))
    await second.settle()
    [ours] = [c for c in second.fake.comments_on(REPO, 7)
              if c["user"]["type"] == "Bot" and c["id"] != other_app]
    assert ours["id"] == comment_id and "**Ready**" in ours["body"]
    assert "another App's comment" in second.fake.comments[other_app]["body"]  # left alone
    # the image was in the registry: ready at once. The new store made no run for sha1, so it
    # creates one without listing the commit's runs first (issue 13: the store knows which
    # runs it made); losing DATA_DIR costs a second, newest run
    runs = sorted(second.runs(sha1), key=lambda r: r["id"])
    assert len(runs) == 2 and runs[-1]["conclusion"] == "success"
    assert second.fake.calls("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs") == []
    assert len(second.builder.jobs) == 0


async def test_closing_while_building_cancels_and_reopening_builds_again(prebuild_bot):
    bot = await prebuild_bot()
    bot.builder.hold = True
    sha = bot.commit("slow")
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.until(lambda: bot.runs(sha) and bot.runs(sha)[0]["status"] == "in_progress")
    await bot.send("pull_request", bot.pr("closed", sha))
    await bot.settle()
    [run] = bot.runs(sha)
    assert run["conclusion"] == "cancelled" and "closed" in run["output"]["summary"]
    assert bot.builder.cancelled  # the build itself was stopped
    assert "**Closed**" in bot.comment()["body"]
    bot.builder.hold = False
    await bot.send("pull_request", bot.pr("reopened", sha))
    await bot.settle()
    # GitHub cannot reopen a completed run: the new build gets a new one, and it is the latest
    runs = sorted(bot.runs(sha), key=lambda r: r["id"])
    assert [r["conclusion"] for r in runs] == ["cancelled", "success"]
    assert "**Ready**" in bot.comment()["body"]


async def test_check_run_output_is_edited_at_most_every_interval(prebuild_bot):
    """Log lines alone do not edit the run before the interval has passed; when it has, one
    edit carries the newest lines (not one per line). Phase changes go out at once."""
    bot = await prebuild_bot()
    bot.reporter.min_interval = 3600.0  # the interval cannot pass by itself during the test
    bot.builder.hold = True
    bot.builder.log_lines = [f"Step {i}/300 : RUN something" for i in range(300)]
    sha = bot.commit("chatty")
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.until(lambda: bot.runs(sha) and bot.runs(sha)[0]["status"] == "in_progress")
    await bot.builder.wait_held(1)  # the builder has sent every line and waits to be released
    await bot.until(lambda: not bot.reporter.pacer.sending())  # whatever was due has gone out
    history = bot.runs(sha)[0]["_history"]
    assert [h["status"] for h in history] == ["queued", "in_progress"]  # no edit for log lines yet
    await bot.reporter.pacer.drain()  # the interval "passes": the held-back update goes out now
    history = bot.runs(sha)[0]["_history"]
    assert len(history) == 3  # one update carrying the newest lines, not 300
    assert "Step 299/300" in history[2]["output"]["text"]
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()
    history = bot.run(sha)["_history"]
    assert history[-1]["status"] == "completed" and history[-1]["conclusion"] == "success"
    assert len(history) <= 5  # then at most the pushing phase and the completion


async def test_comment_false_turns_the_comment_off(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("quiet", {".github/binder.yml": "comment: false\n"})
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.settle()
    assert bot.run(sha)["conclusion"] == "success"
    assert bot.comments() == []


async def test_urlpath_goes_into_the_comment_and_the_launch_link(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("lab", {".github/binder.yml": "urlpath: lab/tree/index.ipynb\n"})
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.settle()
    assert f"/v2/gh/{REPO}/{sha}?urlpath=lab%2Ftree%2Findex.ipynb" in bot.comment()["body"]
    assert "urlpath=lab%2Ftree%2Findex.ipynb" in bot.run(sha)["output"]["summary"]


async def test_a_failed_build_says_why_on_the_run_and_in_the_comment(prebuild_bot):
    bot = await prebuild_bot()
    bot.builder.fail_with = "repo2docker exited with status 1. pip could not resolve numpy."
    sha = bot.commit("broken")
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.settle()
    run = bot.run(sha)
    assert run["conclusion"] == "failure"
    assert run["output"]["summary"].startswith("repo2docker exited with status 1.")
    assert "Successfully built" in run["output"]["text"]  # the log tail
    assert "**Failed**: repo2docker exited with status 1." in bot.comment()["body"]


async def test_push_and_pr_for_the_same_sha_share_one_run(prebuild_bot):
    bot = await prebuild_bot()
    bot.builder.hold = True
    sha = bot.commit("shared")
    await bot.send("push", bot.push(sha))
    await bot.until(lambda: bot.runs(sha) and bot.runs(sha)[0]["status"] == "in_progress")
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.until(lambda: bot.comments())
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()
    assert bot.run(sha)["conclusion"] == "success"
    assert len(bot.builder.jobs) == 1
    assert "**Ready**" in bot.comment()["body"]


async def test_a_slow_github_does_not_hold_up_the_build(prebuild_bot):
    from bot.model import BuildState
    from tests.fake_github import Fault

    bot = await prebuild_bot()
    sha = bot.commit("slow api")
    github_answers = asyncio.Event()
    bot.fake.inject("POST", "/repos/{owner}/{repo}/check-runs", Fault.held_until(github_answers))
    await bot.send("pull_request", bot.pr("opened", sha))

    async def built():
        rec = await bot.services.builds.latest_for_sha(*REPO.split("/"), sha)
        return rec is not None and rec.state is BuildState.BUILT

    await bot.until(built)
    assert bot.runs(sha) == []  # the build finished while the check run was still being created
    assert bot.fake.calls("POST", "/repos/{owner}/{repo}/check-runs")  # (the request is waiting on GitHub)
    github_answers.set()
    await bot.settle()
    run = bot.run(sha)
    assert run["conclusion"] == "success" and [h["status"] for h in run["_history"]] == ["queued", "completed"]
