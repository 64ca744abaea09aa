"""Trying it without a GitHub App: LAUNCH_ALLOW repositories resolve refs with ``git ls-remote``.

Real git against repositories served on loopback (tests/git_server.py); GitHub is
FakeGitHub, and the point is that it is (almost) never asked.
"""
from __future__ import annotations

import asyncio
import subprocess
import uuid

import pytest

from bot.git_remote import Outcome, check_url, classify_failure, git_env, ls_remote_command, parse_ls_remote
from bot.model import BuildRequest, BuildState, Trigger
from bot.oneshot import resolve_ref
from launcher.git_refs import GitRefs
from launcher.resolve import GitHubDown, NotServed, RefNotFound
from launcher.spec import parse_spec

COMMITS = "/repos/{owner}/{repo}/commits/{ref:.+}"
A, B, C = "a" * 40, "b" * 40, "c" * 40


class Clock:
    """A driven clock for the answer cache."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_name() -> str:
    return "demo-" + uuid.uuid4().hex[:8]


async def wait_for(predicate, what: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def git_processes(url: str) -> list[str]:
    """Running git processes that talk to ``url`` (ours: the URL carries a random repo name)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if url in line and "git" in line]


# -- pure parts ----------------------------------------------------------------------------------
def test_ls_remote_output_gives_branches_tags_and_head():
    out = (f"ref: refs/heads/trunk\tHEAD\n{A}\tHEAD\n{A}\trefs/heads/trunk\n{B}\trefs/heads/v1\n"
           f"{C}\trefs/tags/v1\n{A}\trefs/tags/v1^{{}}\n{B}\trefs/tags/light\n")
    head = parse_ls_remote(out, "HEAD")
    assert (head.outcome, head.sha, head.branch, head.default_branch) == (Outcome.FOUND, A, "trunk", "trunk")
    trunk = parse_ls_remote(out, "trunk")
    assert (trunk.sha, trunk.branch) == (A, "trunk")
    v1 = parse_ls_remote(out, "v1")  # an annotated tag: the commit it points at; tags win over branches
    assert (v1.sha, v1.branch) == (A, None)
    assert parse_ls_remote(out, "light").sha == B
    assert parse_ls_remote(out, "nope").outcome is Outcome.NO_REF
    assert parse_ls_remote("", "HEAD").outcome is Outcome.NO_REF
    assert parse_ls_remote(f"{A}\trefs/remotes/x/refs/heads/main\n", "main").outcome is Outcome.NO_REF


def test_git_failures_are_read_as_missing_or_unreachable():
    missing = [
        "fatal: repository 'http://127.0.0.1:1/x.git/' not found",
        "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
        "remote: Repository not found.\nfatal: Authentication failed for 'https://github.com/o/r/'",
    ]
    for text in missing:
        assert classify_failure(text).outcome is Outcome.NO_REPO, text
    down = [
        "fatal: unable to access 'http://127.0.0.1:9/x.git/': Failed to connect to 127.0.0.1 port 9",
        "fatal: unable to access 'https://github.com/o/r/': The requested URL returned error: 502",
        "fatal: unable to access 'https://github.com/o/r/': Could not resolve host: github.com",
        "",
    ]
    for text in down:
        assert classify_failure(text).outcome is Outcome.UNREACHABLE, text
    assert classify_failure("warning: x\nfatal: last line\n").detail == "fatal: last line"


def test_git_runs_anonymously_without_the_services_secrets():
    args = ls_remote_command("https://github.com/o/r.git", "feature/x")
    assert args[:6] == ["git", "-c", "credential.helper=", "-c", "core.askPass=", "ls-remote"]
    assert args[-4:] == ["https://github.com/o/r.git", "refs/heads/feature/x", "refs/tags/feature/x",
                         "refs/tags/feature/x^{}"]
    assert args[args.index("--") + 1] == "https://github.com/o/r.git"
    env = git_env({"PATH": "/bin", "HOME": "/root", "GITHUB_PRIVATE_KEY": "k", "GITHUB_WEBHOOK_SECRET": "s",
                   "JUPYTERHUB_API_TOKEN": "t", "https_proxy": "http://proxy:3128", "LC_ALL": "C"})
    assert not [k for k in env if k.startswith(("GITHUB_", "JUPYTERHUB_"))]
    assert env["https_proxy"] == "http://proxy:3128" and env["LC_ALL"] == "C"
    assert env["GIT_TERMINAL_PROMPT"] == "0" and "file" not in env["GIT_ALLOW_PROTOCOL"].split(":")
    for bad in ("file:///etc", "/srv/repo", "-uhelp", "ext::sh -c id", "https://h/x y"):
        with pytest.raises(ValueError):
            check_url(bad)


# -- the resolver, against real git on loopback ------------------------------------------------------
async def allowed(launcher, git_server, **settings):
    """A launcher allowing public/*; a served repository public/NAME registered in FakeGitHub only."""
    name = new_name()
    first = git_server.create(name, {"README.md": "# demo\n"})
    ln = await launcher(launch_allow=("public/*",), **settings)
    ln.fake.add_repo(f"public/{name}", clone_url=first.clone_url)
    return ln, name, first


async def resolve(ln, name: str, ref: str) -> str:
    r = ln.state.resolver
    spec = parse_spec("public", name, ref)
    return await r.resolve(spec, await r.access(spec))


async def test_allowed_repo_resolves_refs_with_git_not_the_api(launcher, git_server):
    ln, name, first = await allowed(launcher, git_server)
    second = git_server.commit(name, {"b.txt": "2"})
    git_server.tag(name, "v1", first.sha, annotated=True)
    git_server.tag(name, "light", first.sha)
    assert await resolve(ln, name, "main") == second.sha
    assert await resolve(ln, name, "HEAD") == second.sha
    assert await resolve(ln, name, "v1") == first.sha  # peeled: the commit, not the tag object
    assert await resolve(ln, name, "light") == first.sha
    with pytest.raises(RefNotFound, match="no branch or tag called 'nope'"):
        await resolve(ln, name, "nope")
    assert ln.fake.calls("GET", COMMITS) == []  # no anonymous API call for refs
    assert len(ln.fake.calls("GET", "/repos/{owner}/{repo}")) == 1  # its clone_url, once
    assert git_server.ref_adverts(name) == 5


async def test_clone_url_from_our_own_build_needs_no_github_call(launcher, git_server):
    """What ``binder-prebuild build`` leaves in the store is enough: GitHub is never asked."""
    name = new_name()
    commit = git_server.create(name, {"README.md": "# demo\n"})
    ln = await launcher(launch_allow=(f"public/{name}",))
    image = ln.image_for(f"public/{name}", commit.sha)
    ln.images.push(image)
    ln.services.images.forget(image)  # pushed from outside, as `binder-prebuild build` does
    record = await ln.services.scheduler.submit(BuildRequest(
        owner="public", repo=name, sha=commit.sha, clone_url=commit.clone_url, branch="main", trigger=Trigger.CLI))
    assert record.state is BuildState.BUILT
    assert await resolve(ln, name, "main") == commit.sha
    assert ln.fake.requests == []


async def test_missing_or_private_repository_is_not_served(launcher, git_server):
    name = new_name()
    git_server.create(name, {"a": "1"}, private=True)
    ln = await launcher(launch_allow=("public/*",))
    ln.fake.add_repo(f"public/{name}", clone_url=git_server.clone_url(name))
    ln.fake.add_repo("public/gone", clone_url=git_server.clone_url("gone-" + name))
    with pytest.raises(NotServed, match="cannot be read anonymously"):
        await resolve(ln, name, "main")
    assert name in git_server.denied  # asked, without credentials
    with pytest.raises(NotServed):
        await resolve(ln, "gone", "main")
    before = len(git_server.requests)
    with pytest.raises(NotServed):  # any other ref of it: answered from the cache, no git
        await resolve(ln, name, "other")
    assert len(git_server.requests) == before


async def test_answers_are_cached_briefly_including_missing_refs(launcher, git_server):
    ln, name, first = await allowed(launcher, git_server)
    clock = Clock()
    ln.state.resolver.git = GitRefs(ttl=5, negative_ttl=10, timer=clock)
    for _ in range(3):
        assert await resolve(ln, name, "main") == first.sha
        with pytest.raises(RefNotFound):
            await resolve(ln, name, "nope")
    assert git_server.ref_adverts(name) == 2
    second = git_server.commit(name, {"b": "2"})
    clock.now += 6  # the found ref expires, the missing one not yet
    assert await resolve(ln, name, "main") == second.sha
    with pytest.raises(RefNotFound):
        await resolve(ln, name, "nope")
    assert git_server.ref_adverts(name) == 3
    clock.now += 5
    with pytest.raises(RefNotFound):
        await resolve(ln, name, "nope")
    assert git_server.ref_adverts(name) == 4


async def test_a_burst_of_clicks_runs_one_git(launcher, git_server):
    ln, name, first = await allowed(launcher, git_server)
    await ln.state.resolver.repo(parse_spec("public", name, "main"), await ln.state.resolver.access(
        parse_spec("public", name, "main")))  # the clone URL, before the host stalls
    git_server.hold.clear()
    try:
        burst = [asyncio.create_task(resolve(ln, name, "main")) for _ in range(20)]
        await wait_for(lambda: git_server.held == 1, "the first ls-remote to reach the server")
        assert ln.state.resolver.git.running == 1 and ln.state.resolver.git.waiting == 0
    finally:
        git_server.hold.set()
    assert await asyncio.gather(*burst) == [first.sha] * 20
    assert git_server.ref_adverts(name) == 1


async def test_git_processes_are_capped_and_the_queue_is_bounded(launcher, git_server):
    ln, name, first = await allowed(launcher, git_server)
    r = ln.state.resolver
    await r.repo(parse_spec("public", name, "main"), await r.access(parse_spec("public", name, "main")))
    git = r.git = GitRefs(max_running=2, max_waiting=3, timeout=60)
    git_server.hold.clear()
    try:
        queued = [asyncio.create_task(resolve(ln, name, f"branch-{i}")) for i in range(5)]
        await wait_for(lambda: git_server.held == 2, "two ls-remotes at the server")
        await wait_for(lambda: git.waiting == 3, "three lookups queued")
        assert git.running == 2
        with pytest.raises(GitHubDown, match="too many ref lookups"):
            async with asyncio.timeout(30):  # refused at once; queued, it would wait for the held host
                await resolve(ln, name, "one-too-many")
        assert git.running == 2 and git.waiting == 3
    finally:
        git_server.hold.set()
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(e, RefNotFound) for e in results), results
    assert git_server.ref_adverts(name) == 5 and git.running == 0 and git.waiting == 0


async def test_a_host_that_does_not_answer_is_given_up_and_git_killed(launcher, git_server):
    ln, name, first = await allowed(launcher, git_server)
    r = ln.state.resolver
    await r.repo(parse_spec("public", name, "main"), await r.access(parse_spec("public", name, "main")))
    r.git = GitRefs(timeout=1.0)
    url = git_server.clone_url(name)
    git_server.hold.clear()
    try:
        with pytest.raises(GitHubDown, match="did not answer"):
            async with asyncio.timeout(30):  # (a git left waiting on the held host would hang here)
                await resolve(ln, name, "main")
        assert git_processes(url) == []  # git and git-remote-http are gone, not waiting on
        before = len(git_server.requests)
        with pytest.raises(GitHubDown):  # the host is known to be down for a while: no new git
            await resolve(ln, name, "other")
        assert len(git_server.requests) == before
    finally:
        git_server.hold.set()


# -- through the routes ------------------------------------------------------------------------------
async def test_launch_page_and_stream_for_an_allowed_repo_without_installation(launcher, git_server):
    # a Hub that is never reached: the page only decides (the stream would start the server)
    ln, name, first = await allowed(launcher, git_server, jupyterhub_api_url="http://127.0.0.1:9/hub/api",
                                    jupyterhub_api_token="x" * 32, max_servers=-1, max_servers_per_repo=-1)
    status, body, events_url = await ln.open_page(f"/v2/gh/public/{name}/main")
    assert status == 200 and events_url, body
    # the page itself decides nothing (issue 12); its stream resolves the ref with git
    _, _, events = await ln.events(events_url)
    assert any(e.get("imageName") == ln.image_for(f"public/{name}", first.sha) for e in events), events
    for path, words in ((f"/v2/gh/public/{name}/no-such-branch", "no branch or tag called"),
                        (f"/v2/gh/other/{name}/main", "LAUNCH_ALLOW")):
        status, body, events_url = await ln.open_page(path)
        assert status == 200, body
        _, _, events = await ln.events(events_url)
        assert events[-1]["phase"] == "failed" and events[-1]["status_code"] == 404, events
        assert words in events[-1]["message"]
    assert ln.fake.calls("GET", COMMITS) == []


@pytest.mark.hub
async def test_allowed_repo_without_installation_launches_on_the_hub(hub, launcher, git_server):
    """The whole click with no App: git resolves the ref, the image is built on launch, the Hub runs it."""
    ln, name, first = await allowed(launcher, git_server, hub=hub)
    page = f"/v2/gh/public/{name}/main"
    status, body, events_url = await ln.open_page(page)
    assert status == 200, body
    st, _, events = await ln.events(events_url)
    assert st == 200 and events[-1]["phase"] == "ready", events
    image = ln.image_for(f"public/{name}", first.sha)
    assert events[-1]["image"] == image and events[-1]["repo_url"] == first.clone_url
    assert [b.request.clone_url for b in ln.builder.jobs] == [first.clone_url]
    assert ln.fake.calls("GET", COMMITS) == []
    assert hub.running_servers()


async def test_the_build_command_resolves_refs_with_git(git_server):
    """``binder-prebuild build OWNER/REPO [--ref REF]``: sha, branch (the supersede key) and default branch."""
    name = new_name()
    first = git_server.create(name, {"a": "1"})
    second = git_server.commit(name, {"a": "2"})
    git_server.tag(name, "v1", first.sha, annotated=True)
    url = first.clone_url
    assert await resolve_ref(url, None) == (second.sha, "main", "main")
    assert await resolve_ref(url, "main") == (second.sha, "main", "main")
    assert await resolve_ref(url, "v1") == (first.sha, None, "main")
    assert await resolve_ref(url, first.sha.upper()) == (first.sha, None, "main")
    with pytest.raises(SystemExit, match="no branch or tag 'nope'"):
        await resolve_ref(url, "nope")
    with pytest.raises(SystemExit, match="cannot read"):
        await resolve_ref(git_server.clone_url("missing-" + name), "main")


async def test_stopping_the_service_kills_lookups_in_flight(launcher, git_server):
    ln, name, first = await allowed(launcher, git_server)
    r = ln.state.resolver
    await r.repo(parse_spec("public", name, "main"), await r.access(parse_spec("public", name, "main")))
    url = git_server.clone_url(name)
    git_server.hold.clear()
    try:
        lookup = asyncio.create_task(resolve(ln, name, "main"))
        await wait_for(lambda: git_server.held == 1, "the ls-remote at the server")
        assert git_processes(url)
        await ln.client.close()  # the app's cleanup, as when `serve` stops
        assert git_processes(url) == []
        with pytest.raises(asyncio.CancelledError):
            await lookup
    finally:
        git_server.hold.set()
