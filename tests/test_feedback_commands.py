"""Re-runs (check_run / check_suite rerequested) and `/binder` commands through the webhook route."""
from __future__ import annotations

from bot.feedback.commands import Command, parse_command
from bot.model import Trigger
from tests import payloads
from tests.feedback_harness import REPO

PERMISSION = "/repos/{owner}/{repo}/collaborators/{username}/permission"


def test_parse_command():
    assert parse_command("/binder build").command is Command.BUILD
    assert parse_command("thanks!\n  /binder rebuild  please").command is Command.REBUILD
    assert parse_command("/Binder HELP").command is Command.HELP
    unknown = parse_command("/binder launch")
    assert unknown.command is Command.UNKNOWN and unknown.word == "launch"
    assert parse_command("> /binder build\nquoted only") is None
    assert parse_command("use /binder build to build") is None
    assert parse_command("") is None and parse_command(None) is None


async def built_pr(bot, message: str = "first"):
    sha = bot.commit(message)
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.settle()
    return sha


async def test_check_run_rerequested_rebuilds_that_sha_in_a_new_run(prebuild_bot):
    bot = await prebuild_bot()
    sha = await built_pr(bot)
    await bot.send("check_run", bot.rerequest(sha))
    await bot.settle()
    assert [j.request.sha for j in bot.builder.jobs] == [sha, sha]
    assert bot.builder.jobs[1].request.trigger is Trigger.RERUN
    runs = sorted(bot.runs(sha), key=lambda r: r["id"])
    assert [(r["status"], r["conclusion"]) for r in runs] == [("completed", "success")] * 2
    assert runs[1]["_history"][0]["status"] == "queued"  # a real new build, not a copy
    assert len(bot.comments()) == 1


async def test_a_failed_build_rerun_succeeds(prebuild_bot):
    bot = await prebuild_bot()
    bot.builder.fail_with = "network hiccup"
    sha = await built_pr(bot)
    assert "**Failed**" in bot.comment()["body"]
    bot.builder.fail_with = None
    await bot.send("check_run", bot.rerequest(sha))
    await bot.settle()
    latest = max(bot.runs(sha), key=lambda r: r["id"])
    assert latest["conclusion"] == "success"
    assert "**Ready**" in bot.comment()["body"]


async def test_rerequests_for_other_apps_or_names_are_ignored(prebuild_bot):
    bot = await prebuild_bot()
    sha = await built_pr(bot)
    await bot.send("check_run", bot.rerequest(sha, name="CI"))
    await bot.send("check_run", bot.rerequest(sha, app_id=999))
    await bot.settle()
    assert len(bot.builder.jobs) == 1


async def test_check_suite_rerequested_rebuilds_its_head(prebuild_bot):
    bot = await prebuild_bot()
    sha = await built_pr(bot)
    run = bot.rerequest(sha)
    body = {"action": "rerequested", "check_suite": {**run["check_run"]["check_suite"], "app": run["check_run"]["app"]},
            "repository": run["repository"], "sender": run["sender"], "installation": run["installation"]}
    await bot.send("check_suite", body)
    await bot.settle()
    assert [j.request.sha for j in bot.builder.jobs] == [sha, sha]


async def test_rerunning_an_old_sha_does_not_cancel_the_prs_newer_head(prebuild_bot):
    bot = await prebuild_bot()
    old = await built_pr(bot, "old")
    bot.builder.hold = True
    new = bot.commit("new")
    await bot.send("pull_request", bot.pr("synchronize", new))
    await bot.until(lambda: bot.runs(new) and bot.runs(new)[0]["status"] == "in_progress")
    await bot.send("check_run", bot.rerequest(old))
    await bot.until(lambda: len(bot.builder.running) == 2)
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()
    assert bot.run(new)["conclusion"] == "success"
    assert sorted(j.request.sha for j in bot.builder.jobs) == sorted([old, old, new])
    assert new in bot.comment()["body"]  # the comment stays on the PR's head


async def test_binder_rebuild_from_a_writer(prebuild_bot):
    bot = await prebuild_bot()
    sha = await built_pr(bot)
    cmd = bot.user_comment("/binder rebuild", "octo-maintainer")
    await bot.send("issue_comment", cmd)
    await bot.settle()
    assert [j.request.sha for j in bot.builder.jobs] == [sha, sha]
    assert bot.builder.jobs[1].request.trigger is Trigger.RERUN
    assert bot.reactions(cmd) == ["rocket"]
    assert max(bot.runs(sha), key=lambda r: r["id"])["conclusion"] == "success"


async def test_binder_build_on_a_built_sha_builds_nothing_new(prebuild_bot):
    bot = await prebuild_bot()
    sha = await built_pr(bot)
    await bot.send("issue_comment", bot.user_comment("/binder build", "octo-maintainer"))
    await bot.settle()
    assert len(bot.builder.jobs) == 1 and len(bot.runs(sha)) == 1


async def test_binder_rebuild_from_a_reader_is_refused(prebuild_bot):
    bot = await prebuild_bot()
    await built_pr(bot)
    cmd = bot.user_comment("/binder rebuild", "drive-by")
    await bot.send("issue_comment", cmd)
    await bot.settle()
    assert len(bot.builder.jobs) == 1
    assert bot.reactions(cmd) == ["-1"]
    [reply] = bot.replies()
    assert "write access" in reply and "/binder rebuild" in reply


async def test_unknown_commands_get_usage_without_echoing_the_word(prebuild_bot):
    bot = await prebuild_bot()
    await built_pr(bot)
    cmd = bot.user_comment("/binder launch-rockets", "octo-maintainer")
    await bot.send("issue_comment", cmd)
    await bot.settle()
    assert bot.reactions(cmd) == ["confused"]
    [reply] = bot.replies()
    assert "not a `/binder` command" in reply and "/binder build" in reply
    assert "launch-rockets" not in reply


async def test_strangers_cannot_make_the_app_echo_words(prebuild_bot):
    """Issue 11 item 8: unknown words from non-writers get nothing, words are never echoed,
    and a writer gets at most one usage reply, however many words they try."""
    bot = await prebuild_bot()
    await built_pr(bot)
    words = ["@binder-examples/maintainers", "[click](https://evil.example)", "<img src=x onerror=alert(1)>", "help"]
    for word in words:
        await bot.send("issue_comment", bot.user_comment(f"/binder {word}", "drive-by"))
    await bot.settle()
    assert bot.replies() == [] and bot.fake.reactions == []
    for word in words[:3]:
        await bot.send("issue_comment", bot.user_comment(f"/binder {word}", "octo-maintainer"))
    await bot.settle()
    [reply] = bot.replies()
    assert not any(w.split("/")[0] in reply for w in words[:3])
    assert "@binder-examples" not in reply and "https://evil" not in reply and "<img" not in reply


async def test_bots_and_ordinary_comments_are_ignored(prebuild_bot):
    bot = await prebuild_bot()
    await built_pr(bot)
    await bot.send("issue_comment", bot.user_comment("/binder rebuild", "ci-helper[bot]", user_type="Bot"))
    await bot.send("issue_comment", bot.user_comment("LGTM, thanks", "octo-maintainer"))
    issue_only = bot.user_comment("/binder build", "octo-maintainer")
    issue_only["issue"].pop("pull_request")
    await bot.send("issue_comment", issue_only)
    await bot.settle()
    assert len(bot.builder.jobs) == 1
    assert bot.fake.calls("GET", PERMISSION) == [] and bot.fake.reactions == []


async def test_commands_on_a_closed_pr_say_so(prebuild_bot):
    bot = await prebuild_bot()
    sha = await built_pr(bot)
    await bot.send("pull_request", bot.pr("closed", sha))
    await bot.settle()
    cmd = bot.user_comment("/binder rebuild", "octo-maintainer")
    cmd["issue"]["state"] = "closed"
    await bot.send("issue_comment", cmd)
    await bot.settle()
    assert len(bot.builder.jobs) == 1
    assert any("closed" in r for r in bot.replies())


async def test_edited_comments_are_not_commands(prebuild_bot):
    bot = await prebuild_bot()
    await built_pr(bot)
    cmd = bot.user_comment("/binder rebuild", "octo-maintainer")
    cmd["action"] = "edited"
    await bot.send("issue_comment", cmd)
    await bot.settle()
    assert len(bot.builder.jobs) == 1


async def test_the_payload_fixture_command_is_handled(prebuild_bot):
    # the stored fixture as GitHub sent it: /binder rebuild by a maintainer on PR 7
    bot = await prebuild_bot()
    sha = await built_pr(bot)
    body = payloads.rewrite(payloads.load("issue_comment.created"), installation_id=bot.inst.id)
    bot.fake.repo(REPO).collaborators[body["comment"]["user"]["login"]] = "admin"
    await bot.send("issue_comment", body)
    await bot.settle()
    assert [j.request.sha for j in bot.builder.jobs] == [sha, sha]


# ------------------------------------------------------------------ approval at the comment's time (issue 11 item 9)


def fork_commit(bot, message: str) -> str:
    from tests.feedback_harness import FORK

    sha = bot.fake.add_commit(REPO, {"requirements.txt": f"pandas # {message}\n"}, branch=None, message=message)
    bot.fake.repo(FORK).commits[sha] = bot.fake.repo(REPO).commits[sha]
    return sha


async def test_a_push_after_the_approval_is_not_built_even_if_its_event_came_first(prebuild_bot):
    bot = await prebuild_bot()
    seen = fork_commit(bot, "the reviewed commit")
    await bot.send("pull_request", bot.pr("opened", seen, fork=True))
    await bot.settle()
    cmd = bot.user_comment("/binder build", "octo-maintainer")  # written while the head is `seen`
    later = fork_commit(bot, "pushed after the approval")
    await bot.send("pull_request", bot.pr("synchronize", later, fork=True))
    await bot.send("issue_comment", cmd)
    await bot.settle()
    assert bot.builder.jobs == []
    [reply] = bot.replies()
    assert seen in reply and later in reply and "nothing was built" in reply


async def test_a_push_github_has_but_we_have_not_heard_of_is_not_built(prebuild_bot):
    bot = await prebuild_bot()
    seen = fork_commit(bot, "the reviewed commit")
    await bot.send("pull_request", bot.pr("opened", seen, fork=True))
    await bot.settle()
    cmd = bot.user_comment("/binder build", "octo-maintainer")
    bot.pr("synchronize", fork_commit(bot, "pushed after"), fork=True)  # GitHub's PR moved; no event yet
    await bot.send("issue_comment", cmd)
    await bot.settle()
    assert bot.builder.jobs == []


async def test_the_approval_reply_names_the_approved_sha(prebuild_bot):
    bot = await prebuild_bot()
    sha = fork_commit(bot, "reviewed")
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    await bot.send("issue_comment", bot.user_comment("/binder build", "octo-maintainer"))
    await bot.settle()
    assert [j.request.sha for j in bot.builder.jobs] == [sha]
    [reply] = bot.replies()
    assert f"approved `{sha}`" in reply


async def test_the_head_at_a_time_follows_pushes_and_a_force_push_back(make_services):
    from bot.store.pr_heads import PullHeads, github_time

    heads = PullHeads((await make_services()).db)
    a, b = "a" * 40, "b" * 40
    for sha, at in ((a, 100.0), (b, 200.0), (a, 300.0), (a, 300.0)):
        await heads.record("Org/Repo", 7, sha, at)
    assert [await heads.head_before("org/repo", 7, t) for t in (100, 150, 250, 350)] == [None, a, b, a]
    assert await heads.head_before("org/repo", 8, 350) is None and await heads.known("org/repo", 7)
    await heads.forget("org/repo", 7)
    assert not await heads.known("org/repo", 7)
    assert github_time("2024-10-08T12:20:41Z") == 1728390041.0 and github_time(None) is None
    assert github_time("yesterday") is None
