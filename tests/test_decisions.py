"""push / pull_request payloads -> BuildRequest | Skip | None (pure; real-shaped payloads)."""
from __future__ import annotations

import pytest

from bot.model import BuildRequest, Trigger
from bot.prebuild.decisions import (
    Skip,
    SkipKind,
    decide,
    decide_pull_request,
    decide_push,
    has_skip_marker,
    pull_request_candidate,
)
from bot.prebuild.repo_config import DEFAULT, parse_repo_config
from tests import payloads

SHA = "1" * 40


def cfg(text: str):
    return parse_repo_config(text)


# push ---------------------------------------------------------------------------


def test_push_to_a_branch_builds_its_head_with_the_payload_clone_url():
    body = payloads.rewrite(payloads.load("push.branch"), clone_url="http://127.0.0.1:9/o/r.git",
                            installation_id=77)
    req = decide_push(body, DEFAULT, delivery_id="d-1")
    assert isinstance(req, BuildRequest)
    assert req.sha == body["head_commit"]["id"] == body["after"]
    assert req.clone_url == "http://127.0.0.1:9/o/r.git"
    assert (req.owner, req.repo) == ("binder-examples", "requirements")
    assert req.branch == body["ref"].removeprefix("refs/heads/")
    assert req.pr_number is None and req.installation_id == 77
    assert req.trigger is Trigger.PUSH and req.delivery_id == "d-1"
    assert req.supersede_key == f"binder-examples/requirements#branch/{req.branch}"
    assert req.default_branch == body["repository"]["default_branch"]


def test_a_forced_push_still_builds():
    body = payloads.load("push.forced")
    req = decide_push(body, DEFAULT)
    assert isinstance(req, BuildRequest) and req.sha == body["after"]


def test_a_branch_deletion_builds_nothing():
    body = payloads.load("push.deleted")
    assert body["deleted"] is True
    assert decide_push(body, DEFAULT) is None


def test_an_all_zero_after_is_a_deletion_even_without_the_flag():
    body = payloads.load("push.branch")
    body["deleted"] = False
    body["after"] = "0" * 40
    body["head_commit"] = None
    assert decide_push(body, DEFAULT) is None


def test_tags_only_when_configured():
    body = payloads.load("push.tag")
    assert decide_push(body, DEFAULT) is None
    req = decide_push(body, DEFAULT, build_tags=True)
    assert isinstance(req, BuildRequest)
    assert req.branch is None and req.sha == body["head_commit"]["id"]
    assert req.supersede_key.endswith(f"#sha/{req.sha}")


def test_an_annotated_tag_builds_the_commit_not_the_tag_object():
    body = payloads.load("push.tag")
    body["after"] = "a" * 40  # the tag object
    req = decide_push(body, DEFAULT, build_tags=True)
    assert isinstance(req, BuildRequest) and req.sha == body["head_commit"]["id"] != body["after"]


@pytest.mark.parametrize("message", [
    "Fix typo [skip binder]", "[binder skip] docs only", "WIP\n\nbody [Skip Binder]", "[ skip  binder ]"])
def test_skip_markers_in_the_head_commit_message(message):
    body = payloads.load("push.branch")
    body["head_commit"]["message"] = message
    out = decide_push(body, DEFAULT)
    assert isinstance(out, Skip) and out.kind is SkipKind.MARKER
    assert out.sha == body["after"] and "[skip binder]" in out.reason


@pytest.mark.parametrize("message", ["skip binder", "[skip ci]", "[binder]", "", None])
def test_no_marker_no_skip(message):
    assert not has_skip_marker(message)


def test_disabled_by_config_is_a_skip():
    out = decide_push(payloads.load("push.branch"), cfg("enabled: false"))
    assert isinstance(out, Skip) and out.kind is SkipKind.DISABLED and "enabled: false" in out.reason


def test_branch_globs_filter_pushes_silently():
    body = payloads.load("push.branch")
    branch = body["ref"].removeprefix("refs/heads/")
    assert decide_push(body, cfg(f"branches: ['{branch}']")) is not None
    assert decide_push(body, cfg("branches: [only-this]")) is None
    assert decide_push(body, cfg(f"branches: ['**', '!{branch}']")) is None


def test_subdir_from_config_reaches_the_request():
    req = decide_push(payloads.load("push.branch"), cfg("subdir: binder"))
    assert isinstance(req, BuildRequest) and req.subdir == "binder"


def test_a_ref_that_is_neither_branch_nor_tag_is_ignored():
    body = payloads.load("push.branch")
    body["ref"] = "refs/notes/commits"
    assert decide_push(body, DEFAULT) is None


# pull_request -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pull_request.opened", "pull_request.synchronize", "pull_request.reopened"])
def test_pr_build_actions_build_the_head_sha(name):
    body = payloads.load(name)
    req = decide_pull_request(body, DEFAULT, head_message="Add altair")
    assert isinstance(req, BuildRequest)
    pr = body["pull_request"]
    assert req.sha == pr["head"]["sha"] and req.pr_number == pr["number"]
    assert req.clone_url == pr["head"]["repo"]["clone_url"]
    assert req.branch == pr["head"]["ref"] and req.trigger is Trigger.PULL_REQUEST
    assert req.supersede_key == f"binder-examples/requirements#pr/{pr['number']}"


@pytest.mark.parametrize("action", ["closed", "edited", "labeled", "assigned", "ready_for_review"])
def test_other_pr_actions_build_nothing(action):
    body = payloads.load("pull_request.opened")
    body["action"] = action
    assert decide_pull_request(body, DEFAULT, head_message="x") is None


def test_pr_skip_marker_comes_from_the_head_commit_message():
    body = payloads.load("pull_request.synchronize")
    out = decide_pull_request(body, DEFAULT, head_message="tweak [binder skip]")
    assert isinstance(out, Skip) and out.kind is SkipKind.MARKER and out.pr_number == 7
    # the title saying so does not count: only the head commit message does
    body["pull_request"]["title"] = "[skip binder] title"
    assert isinstance(decide_pull_request(body, DEFAULT, head_message="plain"), BuildRequest)


def test_pull_requests_false_ignores_prs():
    assert decide_pull_request(payloads.load("pull_request.opened"), cfg("pull_requests: false"),
                               head_message="x") is None


def test_pr_branch_filter_applies_to_the_base_branch():
    body = payloads.load("pull_request.opened")
    assert isinstance(decide_pull_request(body, cfg("branches: [main]"), head_message="x"), BuildRequest)
    assert decide_pull_request(body, cfg("branches: [release]"), head_message="x") is None


def test_fork_pr_is_skipped_by_default_and_uses_the_fork_clone_url():
    body = payloads.load("pull_request.opened.fork")
    c = pull_request_candidate(body)
    assert not isinstance(c, Skip) and c is not None
    assert c.is_fork and c.clone_url == body["pull_request"]["head"]["repo"]["clone_url"]
    assert c.clone_url != body["repository"]["clone_url"]
    assert c.branch is None  # the fork's branch name means nothing in the base repository
    assert c.policy_sha == body["pull_request"]["base"]["sha"]
    out = decide(c, DEFAULT, head_message="x")
    assert isinstance(out, Skip) and out.kind is SkipKind.FORK and "/binder build" in out.reason
    assert (out.owner, out.repo) == ("binder-examples", "requirements")  # the status goes to the base


def test_fork_pr_builds_when_the_base_policy_allows_forks():
    c = pull_request_candidate(payloads.load("pull_request.opened.fork"))
    req = decide(c, DEFAULT, policy=cfg("forks: true"), head_message="x")
    assert isinstance(req, BuildRequest) and req.clone_url == c.clone_url and req.pr_number == c.pr_number


def test_a_fork_cannot_allow_itself():
    # the head's config says forks: true, but the policy comes from the base
    c = pull_request_candidate(payloads.load("pull_request.opened.fork"))
    out = decide(c, cfg("forks: true\nsubdir: env"), policy=DEFAULT, head_message="x")
    assert isinstance(out, Skip) and out.kind is SkipKind.FORK


def test_approval_builds_a_fork_and_overrides_markers_but_not_disabled():
    c = pull_request_candidate(payloads.load("pull_request.opened.fork"))
    req = decide(c, cfg("subdir: env"), policy=DEFAULT, head_message="[skip binder]", approved=True)
    assert isinstance(req, BuildRequest) and req.subdir == "env"
    out = decide(c, DEFAULT, policy=cfg("enabled: false"), head_message="x", approved=True)
    assert isinstance(out, Skip) and out.kind is SkipKind.DISABLED


def test_a_pr_whose_head_repository_was_deleted_is_a_skip():
    body = payloads.load("pull_request.opened.fork")
    body["pull_request"]["head"]["repo"] = None
    out = pull_request_candidate(body)
    assert isinstance(out, Skip) and out.kind is SkipKind.HEAD_GONE


def test_a_closed_pr_state_builds_nothing_even_on_a_build_action():
    body = payloads.load("pull_request.reopened")
    body["pull_request"]["state"] = "closed"
    assert decide_pull_request(body, DEFAULT, head_message="x") is None


def test_a_push_is_stale_only_when_its_branch_has_moved_on_past_it():
    from bot.prebuild.decisions import push_is_stale

    a, b = "a" * 40, "b" * 40
    assert not push_is_stale(a, None, None)  # the branch is gone: cannot tell
    assert not push_is_stale(a, a, None)  # it is the head
    assert push_is_stale(a, b, "ahead")  # in the branch's history, behind its head
    assert push_is_stale(a, b, "diverged")  # force-pushed over
    assert not push_is_stale(a, b, "behind")  # GitHub's answer lags the webhook: the push is newest
    assert not push_is_stale(a, b, None)  # no comparison: trust the event
