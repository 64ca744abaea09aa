"""Launch URLs as plain data: repo specs, BinderHub's landing-path rules, names, SSE lines."""
from __future__ import annotations

import json
import re

import pytest

from launcher import sse
from launcher.spec import (SpecError, is_full_sha, new_launch_token, parse_spec, server_url,
                           url_path_from_query, username_for)

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("owner,repo,ref", [
    ("binder-examples", "requirements", "main"),
    ("octo", "demo.git", "v1.0"),
    ("octo", "my_repo.js", "feature/with/slashes"),
    ("a", "b", SHA.upper()),
])
def test_valid_specs_are_accepted(owner, repo, ref):
    spec = parse_spec(owner, repo, ref)
    assert spec.owner == owner
    assert spec.repo == repo.removesuffix(".git")
    assert spec.ref == (ref.lower() if is_full_sha(ref) else ref)
    assert spec.request_path == f"v2/gh/{owner}/{spec.repo}/{spec.ref}"
    assert spec.persistent_path(SHA) == f"v2/gh/{owner}/{spec.repo}/{SHA}"


@pytest.mark.parametrize("owner,repo,ref", [
    ("-bad", "repo", "main"), ("bad--", "repo", "main"), ("o" * 40, "repo", "main"), ("own er", "r", "main"),
    ("octo", "..", "main"), ("octo", "a/b", "main"), ("octo", "", "main"), ("octo", "r" * 101, "main"),
    ("octo", "repo", ""), ("octo", "repo", "a..b"), ("octo", "repo", "a b"), ("octo", "repo", "x~1"),
    ("octo", "repo", "br:anch"), ("octo", "repo", "/main"), ("octo", "repo", "main/"), ("octo", "repo", "x.lock"),
    ("octo", "repo", "a//b"), ("octo", "repo", "@{1}"), ("octo", "repo", "r" * 256), ("octo", "repo", "a\\b"),
])
def test_invalid_specs_are_refused_with_a_reason(owner, repo, ref):
    with pytest.raises(SpecError) as e:
        parse_spec(owner, repo, ref)
    assert str(e.value)


@pytest.mark.parametrize("query,expected", [
    ({}, ""),
    ({"urlpath": "lab"}, "lab"),
    ({"urlpath": "/lab/tree/index.ipynb"}, "lab/tree/index.ipynb"),
    ({"urlpath": "voila/render/a.ipynb?x=1"}, "voila/render/a.ipynb?x=1"),
    ({"filepath": "notebooks/intro.ipynb"}, "tree/notebooks/intro.ipynb"),
    ({"filepath": "dir/"}, "tree/dir"),
    ({"labpath": "notebooks/intro.ipynb"}, "doc/tree/notebooks/intro.ipynb"),
    ({"labpath": "with space/ä.ipynb"}, "doc/tree/with%20space/%C3%A4.ipynb"),
    # BinderHub: labpath wins over filepath, which wins over urlpath
    ({"urlpath": "lab", "filepath": "a.ipynb"}, "tree/a.ipynb"),
    ({"urlpath": "lab", "filepath": "a.ipynb", "labpath": "b.ipynb"}, "doc/tree/b.ipynb"),
])
def test_landing_path_follows_binderhub(query, expected):
    assert url_path_from_query(query) == expected


def test_usernames_are_unique_valid_and_derived_from_the_repo():
    names = {username_for("Binder-Examples", "Requirements") for _ in range(50)}
    assert len(names) == 50
    for n in names:
        assert re.fullmatch(r"binder-examples-requirements-[a-z0-9]{8}", n)
    long = username_for("an-organisation-with-a-long-name", "a_repository.with.dots", "abcdefgh")
    assert re.fullmatch(r"[a-z0-9-]+", long) and len(long) <= 41
    assert long.endswith("-abcdefgh") and long.startswith("an-organisation")
    assert username_for("o", "r", "x1234567") == "o-r-x1234567"


def test_launch_tokens_are_long_random_and_url_safe():
    tokens = {new_launch_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)


def test_sse_format_and_last_event_id():
    raw = sse.format_event({"phase": "ready", "message": "a\nb"}, 7)
    assert raw.startswith(b"id: 7\ndata: ") and raw.endswith(b"\n\n")
    assert raw.count(b"\n") == 3  # JSON escapes the newline: one data line
    assert json.loads(raw.decode().split("data: ", 1)[1]) == {"phase": "ready", "message": "a\nb"}
    assert sse.KEEPALIVE == b":keepalive\n\n"
    assert sse.parse_last_event_id("12") == 12
    assert sse.parse_last_event_id(None) == 0
    assert sse.parse_last_event_id("x") == 0
    assert sse.parse_last_event_id("-3") == 0


def test_server_url_is_the_absolute_base_url_with_a_trailing_slash_and_no_query():
    base = server_url("http://hub.example/", "octo-demo-abc")
    assert base == "http://hub.example/user/octo-demo-abc/"
    assert server_url("http://hub.example", "u", "srv") == "http://hub.example/user/u/srv/"
