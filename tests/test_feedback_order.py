"""A delivery that runs late (a retry, a restart) never lets an older head supersede the newer one."""
from __future__ import annotations

from tests.feedback_harness import REPO


async def test_a_late_opened_for_an_older_head_leaves_the_newer_head_alone(prebuild_bot):
    bot = await prebuild_bot()
    bot.builder.hold = True
    old, new = bot.commit("first"), bot.commit("second")
    late = bot.pr("opened", old)
    await bot.send("pull_request", late)
    await bot.until(lambda: bot.runs(old) and bot.runs(old)[0]["status"] == "in_progress")
    await bot.send("pull_request", bot.pr("synchronize", new))  # GitHub's PR now points at `new`
    await bot.until(lambda: bot.runs(new) and bot.runs(new)[0]["status"] == "in_progress")

    await bot.send("pull_request", late)  # the same older event again, as a new delivery (late, redelivered)
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()

    assert (bot.run(new)["status"], bot.run(new)["conclusion"]) == ("completed", "success")
    assert (bot.run(old)["status"], bot.run(old)["conclusion"]) == ("completed", "cancelled")
    assert [j.request.sha for j in bot.builder.jobs] == [old, new]
    body = bot.comment()["body"]
    assert "**Ready**" in body and new in body and old not in body


async def test_a_late_push_of_an_older_commit_leaves_the_branch_head_alone(prebuild_bot):
    bot = await prebuild_bot()
    bot.builder.hold = True
    old = bot.commit("first", branch="topic")
    new = bot.commit("second", branch="topic")  # a child of `old`: the branch's history says which is newer
    await bot.send("push", bot.push(new, branch="topic"))
    await bot.until(lambda: bot.runs(new) and bot.runs(new)[0]["status"] == "in_progress")

    await bot.send("push", bot.push(old, branch="topic"))  # delivered (or retried) after the newer push
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()

    assert (bot.run(new)["status"], bot.run(new)["conclusion"]) == ("completed", "success")
    assert bot.runs(old) == []
    assert [j.request.sha for j in bot.builder.jobs] == [new]


async def test_a_push_newer_than_a_lagging_branch_answer_is_built(prebuild_bot):
    """GitHub's API may still show the previous head when the webhook arrives: the push wins then."""
    bot = await prebuild_bot()
    old = bot.commit("first", branch="topic")
    new = bot.commit("second", branch="topic")
    bot.fake.repo(REPO).branches["topic"] = old  # the API lags behind the push
    await bot.send("push", bot.push(new, branch="topic"))
    await bot.settle()
    assert (bot.run(new)["status"], bot.run(new)["conclusion"]) == ("completed", "success")
    assert [j.request.sha for j in bot.builder.jobs] == [new]


async def test_a_late_synchronize_after_the_pr_closed_builds_nothing(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("only")
    late = bot.pr("synchronize", sha)
    await bot.send("pull_request", bot.pr("closed", sha))  # GitHub's PR is closed now
    await bot.settle()
    await bot.send("pull_request", late)
    await bot.settle()
    assert bot.builder.jobs == []
    assert bot.runs(sha) == []
