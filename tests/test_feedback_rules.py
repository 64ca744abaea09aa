"""Fork policy, repo config errors, skip markers and filters, end to end through the webhook route."""
from __future__ import annotations

from tests import payloads
from tests.feedback_harness import FORK, REPO

CONTENTS = "/repos/{owner}/{repo}/contents/{path:.*}"


def fork_commit(bot, message: str = "from a fork", files: dict[str, str] | None = None) -> str:
    """A fork's commit, reachable from the base repository (as refs/pull/N/head makes it on GitHub)."""
    files = files or {"requirements.txt": "pandas\n"}
    sha = bot.fake.add_commit(REPO, files, branch=None, message=message)
    bot.fake.repo(FORK).commits[sha] = bot.fake.repo(REPO).commits[sha]
    return sha


# forks ------------------------------------------------------------------------------


async def test_a_fork_pr_is_skipped_by_default_and_says_how_to_build_it(prebuild_bot):
    bot = await prebuild_bot()
    sha = fork_commit(bot)
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    run = bot.run(sha)
    assert run["conclusion"] == "skipped" and "/binder build" in run["output"]["summary"]
    assert bot.builder.jobs == [] and bot.comments() == []


async def test_a_maintainer_approves_a_fork_with_binder_build(prebuild_bot):
    bot = await prebuild_bot()
    sha = fork_commit(bot)
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    cmd = bot.user_comment("/binder build", "octo-maintainer")
    await bot.send("issue_comment", cmd)
    await bot.settle()
    [job] = bot.builder.jobs
    assert job.request.sha == sha
    assert job.request.clone_url == f"{bot.fake.web_url}/{FORK}.git"  # the fork's, as the API reports it
    assert "rocket" in bot.reactions(cmd)
    runs = sorted(bot.runs(sha), key=lambda r: r["id"])
    assert [r["conclusion"] for r in runs] == ["skipped", "success"]  # a completed run cannot be reopened
    assert "**Ready**" in bot.comment()["body"]
    perm_calls = bot.fake.calls("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission")
    assert [c.path.rsplit("/", 2)[-2] for c in perm_calls] == ["octo-maintainer"]


async def test_approval_covers_that_head_only(prebuild_bot):
    bot = await prebuild_bot()
    sha1 = fork_commit(bot, "one")
    await bot.send("pull_request", bot.pr("opened", sha1, fork=True))
    await bot.settle()
    bot.pr("opened", sha1, fork=True)
    await bot.send("issue_comment", bot.user_comment("/binder build", "octo-maintainer"))
    await bot.settle()
    sha2 = fork_commit(bot, "two")
    await bot.send("pull_request", bot.pr("synchronize", sha2, fork=True))
    await bot.settle()
    assert [j.request.sha for j in bot.builder.jobs] == [sha1]
    assert bot.run(sha2)["conclusion"] == "skipped"
    assert "**Skipped**" in bot.comment()["body"] and sha2 in bot.comment()["body"]


async def test_anyone_else_gets_a_reaction_and_one_reply_that_says_why(prebuild_bot):
    bot = await prebuild_bot()
    sha = fork_commit(bot)
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    first = bot.user_comment("/binder build", "drive-by")
    await bot.send("issue_comment", first)
    second = bot.user_comment("please\n/binder build", "drive-by")
    await bot.send("issue_comment", second)
    await bot.settle()
    assert bot.builder.jobs == []
    assert bot.reactions(first) == ["-1"] and bot.reactions(second) == ["-1"]
    [reply] = bot.replies()
    assert reply.startswith("@drive-by") and "write access" in reply and "nothing was built" in reply


async def test_forks_true_in_the_base_config_builds_forks(prebuild_bot):
    bot = await prebuild_bot()
    bot.fake.add_commit(REPO, {".github/binder.yml": "forks: true\n"}, branch="main", message="allow forks")
    sha = fork_commit(bot)
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    assert bot.run(sha)["conclusion"] == "success"
    assert [j.request.clone_url for j in bot.builder.jobs] == ["https://github.com/jdoe-contrib/requirements.git"]
    # for a fork, the comment has no branch link: that branch lives in another repository
    assert "Launch the branch" not in bot.comment()["body"]


async def test_a_fork_cannot_allow_itself_in_its_own_config(prebuild_bot):
    bot = await prebuild_bot()
    sha = fork_commit(bot, files={".github/binder.yml": "forks: true\n"})
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    assert bot.run(sha)["conclusion"] == "skipped" and bot.builder.jobs == []


# config errors -------------------------------------------------------------------------


async def test_a_config_with_a_wrong_type_fails_the_check_run_naming_the_key(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("bad config", {".github/binder.yml": "enabled: true\nforks: yes please\n"})
    await bot.send("push", bot.push(sha))
    await bot.settle()
    run = bot.run(sha)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert "forks" in run["output"]["title"]
    summary = run["output"]["summary"]
    assert "`forks`" in summary and "must be true or false" in summary and "line 2, column 8" in summary
    assert bot.builder.jobs == []


async def test_a_yaml_syntax_error_gives_its_line_and_column(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("broken yaml", {".github/binder.yml": "branches: [main\nforks: true\n"})
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.settle()
    run = bot.run(sha)
    assert run["conclusion"] == "failure" and "YAML syntax error" in run["output"]["summary"]
    assert "line 2" in run["output"]["summary"]
    assert bot.builder.jobs == [] and bot.comments() == []  # no build, so no comment is created


async def test_an_unknown_key_is_named(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("typo", {".github/binder.yml": "pull_request: false\n"})
    await bot.send("push", bot.push(sha))
    await bot.settle()
    summary = bot.run(sha)["output"]["summary"]
    assert "`pull_request`" in summary and "did you mean `pull_requests`" in summary


async def test_the_config_is_read_once_per_sha(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("cfg", {".github/binder.yml": "subdir: binder\n"})
    await bot.send("push", bot.push(sha))
    await bot.send("pull_request", bot.pr("opened", sha))
    await bot.settle()
    reads = [c for c in bot.fake.calls("GET", CONTENTS) if c.query.get("ref") == sha]
    assert len(reads) == 1
    assert [j.request.subdir for j in bot.builder.jobs] == ["binder"]


async def test_disabled_by_config_is_a_skipped_run(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("off", {".github/binder.yml": "enabled: false\n"})
    await bot.send("push", bot.push(sha))
    await bot.settle()
    run = bot.run(sha)
    assert run["conclusion"] == "skipped" and "enabled: false" in run["output"]["summary"]
    assert bot.builder.jobs == []


async def test_branches_filter_ignores_other_branches_silently(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("elsewhere", {".github/binder.yml": "branches: [main, 'release/*']\n"})
    await bot.send("push", bot.push(sha, branch="add-altair"))
    await bot.settle()
    assert bot.runs(sha) == [] and bot.builder.jobs == []


# skip markers and ignored pushes ------------------------------------------------------------


async def test_skip_marker_on_push_skips_without_reading_the_config(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("Docs only [skip binder]")
    await bot.send("push", bot.push(sha))
    await bot.settle()
    run = bot.run(sha)
    assert run["conclusion"] == "skipped" and "[skip binder]" in run["output"]["summary"]
    assert bot.builder.jobs == []
    assert not [c for c in bot.fake.calls("GET", CONTENTS) if c.query.get("ref") == sha]


async def test_skip_marker_on_a_pr_head_edits_the_comment(prebuild_bot):
    bot = await prebuild_bot()
    sha1 = bot.commit("first")
    await bot.send("pull_request", bot.pr("opened", sha1))
    await bot.settle()
    sha2 = bot.commit("tweak [binder skip]")
    await bot.send("pull_request", bot.pr("synchronize", sha2))
    await bot.settle()
    assert bot.run(sha2)["conclusion"] == "skipped"
    assert [j.request.sha for j in bot.builder.jobs] == [sha1]
    body = bot.comment()["body"]
    assert "**Skipped**" in body and sha2 in body


async def test_a_skip_delivered_twice_posts_one_run(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("again [skip binder]")
    await bot.send("push", bot.push(sha))
    await bot.settle()
    await bot.send("push", bot.push(sha))  # a second push of the same sha (another delivery)
    await bot.settle()
    assert len(bot.runs(sha)) == 1


async def test_deleted_branches_and_tags_build_nothing(prebuild_bot):
    bot = await prebuild_bot()
    await bot.send("push", payloads.rewrite(payloads.load("push.deleted"), installation_id=bot.inst.id))
    tag = payloads.rewrite(payloads.load("push.tag"), sha=bot.commit("tagged"), installation_id=bot.inst.id)
    await bot.send("push", tag)
    await bot.settle()
    assert bot.builder.jobs == [] and bot.fake.check_runs == {}


async def test_tags_build_when_configured(prebuild_bot):
    bot = await prebuild_bot(build_tags=True)
    sha = bot.commit("release")
    tag = payloads.rewrite(payloads.load("push.tag"), sha=sha, installation_id=bot.inst.id)
    await bot.send("push", tag)
    await bot.settle()
    assert bot.run(sha)["conclusion"] == "success" and [j.request.sha for j in bot.builder.jobs] == [sha]


# untrusted text and the fork policy (issue 11 item 10) ------------------------------------------

HOSTILE = "../[x](https://evil.example) @binder-examples/maintainers <b>bold</b> #1 www.evil.example"


def assert_inert(text: str) -> None:
    """Nothing GitHub would turn into a link, a mention, a reference or HTML."""
    assert "](" not in text and "<b>" not in text
    assert "@binder-examples" not in text and "https://evil" not in text and "www.evil" not in text
    assert " #1" not in text


async def test_a_forks_config_is_not_read_before_the_fork_policy_applies(prebuild_bot):
    bot = await prebuild_bot()
    sha = fork_commit(bot, files={".github/binder.yml": f"subdir: '{HOSTILE}'\n"})
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    assert not [c for c in bot.fake.calls("GET", CONTENTS) if c.query.get("ref") == sha]
    run = bot.run(sha)
    assert run["conclusion"] == "skipped" and "/binder build" in run["output"]["summary"]
    assert "evil" not in run["output"]["summary"]


async def test_config_error_text_in_the_check_run_is_inert(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit("hostile config", {".github/binder.yml": f"subdir: '{HOSTILE}'\n"})
    await bot.send("push", bot.push(sha))
    await bot.settle()
    run = bot.run(sha)
    assert run["conclusion"] == "failure" and "`subdir`" in run["output"]["summary"]
    assert "evil" in run["output"]["summary"]  # shown, as typed
    assert_inert(run["output"]["summary"])
    assert_inert(run["output"]["title"])


async def test_config_error_text_in_a_command_reply_is_inert(prebuild_bot):
    bot = await prebuild_bot()
    sha = fork_commit(bot, files={".github/binder.yml": f"enabled: '{HOSTILE}'\n"})
    await bot.send("pull_request", bot.pr("opened", sha, fork=True))
    await bot.settle()
    await bot.send("issue_comment", bot.user_comment("/binder build", "octo-maintainer"))
    await bot.settle()
    assert bot.builder.jobs == []
    [reply] = bot.replies()
    assert "invalid" in reply and "evil" in reply
    assert_inert(reply.removeprefix("@octo-maintainer"))
    for run in bot.runs(sha):
        assert_inert(run["output"]["summary"])
    for comment in bot.comments():
        assert_inert(comment["body"])
