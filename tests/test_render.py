"""Check-run output and the PR comment: wording, links, hygiene and GitHub's size limits."""
from __future__ import annotations

import re

import pytest

from bot.feedback import render
from bot.feedback.render import (
    COMMENT_MARKER,
    OUTPUT_LIMIT,
    CheckStatus,
    CommentState,
    CommentView,
    Conclusion,
)
from bot.model import Phase

PUBLIC = "https://binder.example.org/"
SHA = "77f91980f0ee1bf18b3db3cd4424f24100b01bb8"
NEW = "e148c4e2466becd951f9345e27e551f160a309d7"


def test_launch_and_badge_urls_use_public_url_and_binderhub_scheme():
    assert render.launch_url(PUBLIC, "o", "r", SHA) == f"https://binder.example.org/v2/gh/o/r/{SHA}"
    assert render.launch_url(PUBLIC, "o", "r", "feat/x", "lab/tree/a b.ipynb") == (
        "https://binder.example.org/v2/gh/o/r/feat/x?urlpath=lab%2Ftree%2Fa%20b.ipynb")
    assert render.badge_url(PUBLIC, "o", "r", SHA) == f"https://binder.example.org/badge/gh/o/r/{SHA}.svg"


def test_commit_url_comes_from_the_clone_url_host():
    assert render.commit_url("https://ghe.corp/org/r.git", SHA) == f"https://ghe.corp/org/r/commit/{SHA}"
    assert render.commit_url("http://127.0.0.1:9/o/r.git", SHA) == f"http://127.0.0.1:9/o/r/commit/{SHA}"
    assert render.commit_url("https://x-access-token:abc@github.com/o/r.git", SHA) == (
        f"https://github.com/o/r/commit/{SHA}")
    assert render.commit_url("git@github.com:o/r.git", SHA) is None


def test_queued():
    v = render.check_queued("https://d/")
    f = v.as_fields()
    assert f["status"] == "queued" and "conclusion" not in f and f["details_url"] == "https://d/"
    assert "queued" in f["output"]["summary"]


def test_in_progress_shows_phase_and_last_log_lines():
    lines = [f"line {i}" for i in range(100)]
    v = render.check_in_progress(Phase.BUILDING, lines, "https://d/", "reg/img:abc")
    f = v.as_fields()
    assert f["status"] == "in_progress" and f["output"]["title"] == "Building the image"
    assert "Building the image" in f["output"]["summary"] and "reg/img:abc" in f["output"]["summary"]
    text = f["output"]["text"]
    assert "line 99" in text and "line 70" in text and "line 69" not in text


def test_success_has_launch_link_image_build_time_and_cache_flag():
    v = render.check_success(image="reg/img:abc", launch="https://b/v2/gh/o/r/abc", duration=83.4,
                             from_cache=False, details_url="https://d/")
    f = v.as_fields()
    assert f["status"] == "completed" and f["conclusion"] == "success"
    s = f["output"]["summary"]
    assert "[launch it](https://b/v2/gh/o/r/abc)" in s and "`reg/img:abc`" in s
    assert "1 min 23 s" in s and "| From cache | no |" in s
    cached = render.check_success(image="i", launch="l", duration=None, from_cache=True, details_url=None)
    assert "| From cache | yes |" in cached.summary and "already built" in cached.title


def test_failure_says_why_in_one_sentence_then_the_log_tail():
    v = render.check_failure(reason="repo2docker exited with status 1. Then lots more detail here.",
                             log_tail=["Step 1", "ERROR: No matching distribution found for nope"],
                             details_url=None)
    f = v.as_fields()
    assert f["conclusion"] == "failure" and f["output"]["title"] == "Build failed"
    assert f["output"]["summary"].startswith("repo2docker exited with status 1.")
    assert "lots more detail" not in f["output"]["summary"]
    assert "No matching distribution found" in f["output"]["text"]


def test_failure_with_a_huge_log_stays_within_the_output_limit_and_keeps_the_end():
    tail = [f"{i:06d} " + "é" * 300 for i in range(2000)]  # multi-byte, ~1.2 MB in all
    v = render.check_failure(reason="x" * 100_000, log_tail=tail, details_url=None)
    f = v.as_fields()
    for field in ("summary", "text"):
        assert len(f["output"][field]) <= OUTPUT_LIMIT
        assert len(f["output"][field].encode()) <= OUTPUT_LIMIT
    assert "001999" in f["output"]["text"]  # the newest line survives
    assert "000000" not in f["output"]["text"]
    assert "earlier lines not shown" in f["output"]["text"]


def test_log_text_is_scrubbed_of_escapes_and_credentials_and_fenced_safely():
    v = render.check_failure(reason="boom", log_tail=[
        "\x1b[31mred\x1b[0m",
        "cloning https://x-access-token:ghs_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r.git",
        "token ghp_abcdefghijklmnopqrstuvwxyz0123 leaked",
        "```` fence in log",
    ], details_url=None)
    text = v.as_fields()["output"]["text"]
    assert "\x1b" not in text and "red" in text
    assert "ghs_" not in text and "ghp_" not in text and "https://***@github.com" in text
    fence = text.split("\n", 1)[0]
    assert re.fullmatch(r"`{5,}text", fence)  # longer than the 4 backticks inside
    assert text.rstrip().endswith(fence[:-4])


def test_cancelled_links_the_newer_commit():
    v = render.check_cancelled(new_sha=NEW, new_commit_url=f"https://gh/o/r/commit/{NEW}", reason="superseded",
                               details_url=None)
    f = v.as_fields()
    assert f["conclusion"] == "cancelled" and f["output"]["title"] == "Superseded by a newer commit"
    assert f"[{NEW[:7]}](https://gh/o/r/commit/{NEW})" in f["output"]["summary"]
    closed = render.check_cancelled(new_sha=None, new_commit_url=None, reason="The pull request was closed.",
                                    details_url=None)
    assert closed.title == "Cancelled" and closed.summary == "The pull request was closed."


def test_skipped_and_config_error():
    s = render.check_skipped("The head commit message asks to skip Binder ([skip binder]).")
    assert s.as_fields()["conclusion"] == "skipped" and "[skip binder]" in s.summary
    e = render.check_config_error(key="forks", problem="must be true or false, not a string ('yes')",
                                  line=3, column=8)
    f = e.as_fields()
    assert f["status"] == "completed" and f["conclusion"] == "failure"
    assert "forks" in f["output"]["title"]
    assert "line 3, column 8" in f["output"]["summary"] and "`forks`" in f["output"]["summary"]
    assert "must be true or false" in f["output"]["summary"]


def _comment(state, **kw):
    base = dict(public_url=PUBLIC, owner="o", repo="r", sha=SHA, state=state, branch="add-altair")
    base.update(kw)
    return render.comment_body(CommentView(**base))


@pytest.mark.parametrize("state,words", [
    (CommentState.BUILDING, "**Building**"),
    (CommentState.READY, "**Ready**"),
    (CommentState.FAILED, "**Failed**: pip failed."),
    (CommentState.CLOSED, "**Closed**: this pull request was closed"),
])
def test_comment_body(state, words):
    body = _comment(state, reason="pip failed. More words.")
    assert body.startswith(COMMENT_MARKER + "\n")
    badge = f"https://binder.example.org/badge/gh/o/r/{SHA}.svg"
    launch = f"https://binder.example.org/v2/gh/o/r/{SHA}"
    assert f"[![Binder]({badge})]({launch})" in body
    assert "https://binder.example.org/v2/gh/o/r/add-altair" in body  # follows the branch
    assert words in body
    assert SHA in body and f"`{SHA[:7]}`" in body


def test_comment_urlpath_goes_into_both_links_and_forks_have_no_branch_link():
    body = _comment(CommentState.READY, urlpath="lab/tree/index.ipynb", branch=None)
    assert f"/v2/gh/o/r/{SHA}?urlpath=lab%2Ftree%2Findex.ipynb" in body
    assert "Launch the branch" not in body


def test_comment_reason_cannot_mention_people_or_inject_markup():
    body = _comment(CommentState.FAILED, reason="ping @everyone <img src=x> [x](javascript:1)")
    assert "@everyone" not in body and "\\@\u200beveryone" in body  # escaped, and no mention GitHub could link
    assert re.search(r"(?<!\\)<img", body) is None and "](javascript" not in body


def test_merged_comment_says_merged():
    assert "was merged" in _comment(CommentState.CLOSED, merged=True)


def test_statuses_and_conclusions_are_githubs_words():
    assert {s.value for s in CheckStatus} <= {"queued", "in_progress", "completed"}
    assert {c.value for c in Conclusion} <= {"success", "failure", "neutral", "cancelled", "skipped", "timed_out",
                                             "action_required", "stale"}


def test_duration_words():
    assert render.duration_words(None) == "unknown"
    assert render.duration_words(5.4) == "5 s"
    assert render.duration_words(3725) == "1 h 2 min"
