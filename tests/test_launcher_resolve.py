"""Ref -> sha and who is served, against FakeGitHub (GitHub's wire format, ETags, 304)."""
from __future__ import annotations

import uuid

import pytest

from launcher.resolve import GitHubDown, NotServed, RefNotFound, allowed_by_list
from launcher.spec import parse_spec
from tests.fake_github import Fault

COMMITS = "/repos/{owner}/{repo}/commits/{ref:.+}"


def commit_calls(fake):
    return fake.calls("GET", COMMITS)


async def test_full_sha_needs_no_github_call(launcher):
    ln = await launcher()
    await ln.install("octo/demo")
    sha = ln.fake.repo("octo/demo").branches["main"]
    r = ln.state.resolver
    spec = parse_spec("octo", "demo", sha.upper())
    before = len(ln.fake.requests)
    assert await r.resolve(spec, await r.access(spec)) == sha
    assert len(ln.fake.requests) == before


async def test_branch_is_resolved_with_the_sha_media_type_then_revalidated_with_its_etag(launcher):
    ln = await launcher(attach_options={"fresh_ttl": 0})
    await ln.install("octo/demo")
    sha1 = ln.fake.repo("octo/demo").branches["main"]
    r = ln.state.resolver
    spec = parse_spec("octo", "demo", "main")
    access = await r.access(spec)
    assert await r.resolve(spec, access) == sha1
    first = commit_calls(ln.fake)[-1]
    assert first.headers["accept"].startswith("application/vnd.github.sha")
    assert first.headers["authorization"].startswith("token ")  # the installation's token
    assert first.status == 200 and "if-none-match" not in first.headers

    assert await r.resolve(spec, access) == sha1
    second = commit_calls(ln.fake)[-1]
    assert second.headers.get("if-none-match") and second.status == 304

    sha2 = ln.fake.add_commit("octo/demo", {"new.txt": "x"}, branch="main")
    assert await r.resolve(spec, access) == sha2
    assert commit_calls(ln.fake)[-1].status == 200
    assert len(commit_calls(ln.fake)) == 3


async def test_a_burst_of_clicks_costs_one_call(launcher):
    ln = await launcher(attach_options={"fresh_ttl": 30})
    await ln.install("octo/demo")
    r = ln.state.resolver
    spec = parse_spec("octo", "demo", "main")
    access = await r.access(spec)
    for _ in range(10):
        await r.resolve(spec, access)
    assert len(commit_calls(ln.fake)) == 1


async def test_tags_and_slashed_branches_resolve(launcher):
    ln = await launcher()
    await ln.install("octo/demo")
    sha = ln.fake.add_commit("octo/demo", {"a": "1"}, branch="feature/x")
    ln.fake.add_tag("octo/demo", "v1.0", sha)
    r = ln.state.resolver
    for ref in ("feature/x", "v1.0"):
        spec = parse_spec("octo", "demo", ref)
        assert await r.resolve(spec, await r.access(spec)) == sha


async def test_unknown_ref_is_not_found(launcher):
    ln = await launcher()
    await ln.install("octo/demo")
    r = ln.state.resolver
    spec = parse_spec("octo", "demo", "no-such-branch")
    with pytest.raises(RefNotFound, match="no-such-branch"):
        await r.resolve(spec, await r.access(spec))


async def test_repos_without_the_app_are_not_served(launcher):
    ln = await launcher()
    ln.fake.add_repo("other/repo")
    r = ln.state.resolver
    with pytest.raises(NotServed, match="not installed"):
        await r.access(parse_spec("other", "repo", "main"))
    assert ln.fake.requests == []  # decided from the store alone


async def test_launch_allow_serves_public_repos_without_an_installation(launcher, git_server):
    ln = await launcher(launch_allow=("public/*", "solo/one"))
    suffix = uuid.uuid4().hex[:8]
    served = {}
    for full in ("public/thing", "solo/one"):
        commit = git_server.create(f"{full}-{suffix}", {"README.md": "x"})
        ln.fake.add_repo(full, clone_url=commit.clone_url)
        served[full] = commit.sha
    r = ln.state.resolver
    for owner, repo in (("public", "thing"), ("solo", "one")):
        spec = parse_spec(owner, repo, "main")
        access = await r.access(spec)
        assert access.installation_id is None and access.allowed
        # refs through git ls-remote at the clone URL (tests/test_launch_without_app.py), not the API
        assert await r.resolve(spec, access) == served[f"{owner}/{repo}"]
    assert commit_calls(ln.fake) == []
    with pytest.raises(NotServed):
        await r.access(parse_spec("solo", "two", "main"))


def test_allow_list_patterns():
    assert allowed_by_list("Octo/Demo", ("octo/demo",))
    assert allowed_by_list("octo/anything", ("octo/*",))
    assert not allowed_by_list("octopus/x", ("octo/*",))
    assert not allowed_by_list("octo/demo", ())


async def test_repository_object_gives_clone_url_and_is_cached(launcher):
    ln = await launcher()
    await ln.install("octo/demo")
    ln.fake.repo("octo/demo").clone_url = "http://git.example.test/octo/demo.git"
    r = ln.state.resolver
    spec = parse_spec("octo", "demo", "main")
    access = await r.access(spec)
    info = await r.repo(spec, access)
    again = await r.repo(spec, access)
    assert info == again
    assert info.clone_url == "http://git.example.test/octo/demo.git"
    assert info.html_url.endswith("/octo/demo") and info.default_branch == "main" and not info.private
    assert len(ln.fake.calls("GET", "/repos/{owner}/{repo}")) == 1


async def test_github_refusing_us_is_reported_as_down(launcher):
    ln = await launcher()
    await ln.install("octo/demo")
    ln.fake.inject("GET", COMMITS, Fault.unauthorized(), Fault.unauthorized())
    r = ln.state.resolver
    spec = parse_spec("octo", "demo", "main")
    with pytest.raises(GitHubDown, match="401"):
        await r.resolve(spec, await r.access(spec))
