"""Private repositories stay private everywhere (issue 11, items 1 and 2).

Launch page and stream, build page and its stream, badge and status page: a private
repository's names, shas, logs and states reach nobody the launcher would not launch
for (private = only when LAUNCH_ALLOW lists it), decided from the repository's current
visibility (cached briefly), before any byte about the build is sent.
"""
from __future__ import annotations

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.model import BuildRequest, Trigger
from bot.web import pages
from launcher import api, build_page, routes
from launcher.build_page import build_paths
from tests.fake_clock import ManualClock
from tests.real_hub import free_port, parse_sse

SECRET = "octo/secret"
HIDDEN = "octo/hidden-thing"
PUBLIC = "octo/demo"
REPO_CALLS = "/repos/{owner}/{repo}"


@pytest.fixture
def site(aiohttp_client):
    """Every public page of the service over the harness's services: launch routes, build page, status page."""
    async def make(ln):
        app = web.Application()
        app[SERVICES] = ln.services
        routes.setup(app)
        build_page.setup(app)
        api.setup(app)
        pages.setup(app)
        return await aiohttp_client(app)
    return make


async def start(launcher, clock=None, **settings):
    opts = {"clock": clock.time} if clock is not None else {}
    return await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api", max_servers=-1,
                          max_servers_per_repo=-1, attach_options=opts, **settings)


async def running_build(ln, full_name: str, *, private: bool):
    """A build of ``full_name``'s main branch, held running with its log lines emitted."""
    inst = await ln.install(full_name, private=private)
    repo = ln.fake.repo(full_name)
    sha = repo.branches["main"]
    ln.builder.hold = True
    await ln.services.scheduler.submit(BuildRequest(
        owner=repo.owner, repo=repo.name, sha=sha, clone_url=f"{ln.fake.web_url}/{full_name}.git",
        installation_id=inst, private=private, branch="main", trigger=Trigger.PUSH))
    await ln.builder.wait_running(1)
    return sha


def assert_reveals_nothing(text: str, sha: str) -> None:
    assert sha not in text and sha[:12] not in text
    assert "Step 1/3" not in text and "Successfully built" not in text
    assert "is running" not in text and "building" not in text.lower().replace("not built", "")


async def test_launch_page_and_stream_of_a_private_build_reveal_nothing(launcher, site):
    ln = await start(launcher)
    sha = await running_build(ln, SECRET, private=True)
    client = await site(ln)
    page = await (await client.get("/v2/gh/octo/secret/main")).text()  # the page does no work: knows nothing
    assert sha not in page and sha[:12] not in page and "Step 1/3" not in page
    for path in ("/api/events/gh/octo/secret/main", f"/api/events/gh/octo/secret/{sha}",
                 "/build/gh/octo/secret/main"):
        resp = await client.get(path)
        text = await resp.text()
        events = parse_sse(text)
        assert [e["phase"] for e in events] == ["failed"] and events[0]["status_code"] == 404, path
        assert "not served here" in text
        assert_reveals_nothing(text.replace(f"/{sha}", ""), sha)
    assert ln.state.launches._by_id == {}  # nothing reserved, nothing followed


async def test_a_private_repository_in_launch_allow_is_served(launcher, site):
    ln = await start(launcher, launch_allow=(SECRET,))
    await running_build(ln, SECRET, private=True)
    badge = await (await site(ln)).get("/badge/gh/octo/secret/main.svg")
    assert ">building<" in await badge.text()


async def test_build_page_and_stream_of_a_private_build_are_a_404_like_no_build(launcher, site):
    ln = await start(launcher)
    sha = await running_build(ln, SECRET, private=True)
    client = await site(ln)
    page_path, stream_path, _ = build_paths("octo", "secret", sha)
    page = await client.get(page_path)
    text = await page.text()
    assert page.status == 404
    unknown = await client.get(build_paths("octo", "secret", "0" * 40)[0])
    assert text.replace(sha, "0" * 40) == await unknown.text()  # the same answer as for no build at all
    resp = await client.get(stream_path)
    text = await resp.text()
    assert resp.status == 404
    unknown = await client.get(build_paths("octo", "secret", "0" * 40)[1])
    assert text.replace(sha, "0" * 40) == await unknown.text()
    assert "Step 1/3" not in text and "running" not in text


async def test_badge_of_a_private_repository_says_nothing(launcher, site):
    ln = await start(launcher)
    await ln.install(SECRET, private=True)
    sha, _ = await ln.prebuild(SECRET)
    client = await site(ln)
    nothing = await (await client.get("/badge/gh/nobody/nothing/main.svg")).text()
    for ref in ("main", sha):
        resp = await client.get(f"/badge/gh/octo/secret/{ref}.svg")
        svg = await resp.text()
        assert resp.status == 200 and ">unknown<" in svg and ">ready<" not in svg
        assert svg == await (await client.get("/badge/gh/nobody/nothing/main.svg")).text() == nothing


async def test_status_page_lists_only_repositories_that_may_be_shown(launcher, site):
    ln = await start(launcher, launch_allow=("allowed/*",))
    await ln.install(PUBLIC)
    public_sha, _ = await ln.prebuild(PUBLIC)
    await ln.install(HIDDEN, private=True)
    secret_sha, _ = await ln.prebuild(HIDDEN)
    await ln.install("allowed/private-ok", private=True)
    allowed_sha, _ = await ln.prebuild("allowed/private-ok")
    for i, name in enumerate((PUBLIC, HIDDEN, "allowed/private-ok")):
        await ln.services.deliveries.add(f"delivery-{i}-{name.replace('/', '-')}", "push",
                                         {"x-github-event": "push"}, b"{}", repo=name)
    text = await (await (await site(ln)).get("/")).text()
    assert public_sha[:12] in text and "delivery-0-octo-demo" in text
    assert allowed_sha[:12] in text and "allowed/private-ok" in text
    assert "hidden-thing" not in text and secret_sha[:12] not in text


async def test_a_repository_made_private_later_stops_launching_its_old_builds(launcher, site):
    clock = ManualClock()
    ln = await start(launcher, clock=clock)
    await ln.install(PUBLIC)
    sha, _ = await ln.prebuild(PUBLIC)  # recorded while public: the record says "not private"
    client = await site(ln)
    badge = f"/badge/gh/octo/demo/{sha}.svg"
    page_path = build_paths("octo", "demo", sha)[0]
    assert ">ready<" in await (await client.get(badge)).text()
    assert (await client.get(page_path)).status == 200
    calls = len(ln.fake.calls("GET", REPO_CALLS))
    assert calls == 1  # one look at the repository serves a burst of requests

    ln.fake.repo(PUBLIC).private = True
    await clock.advance(5)  # cached briefly: within the window, the answer stands without another call
    assert ">ready<" in await (await client.get(badge)).text()
    assert len(ln.fake.calls("GET", REPO_CALLS)) == calls

    await clock.advance(60)  # past it: GitHub's current answer decides, whatever the build record says
    launch = parse_sse(await (await client.get(f"/api/events/gh/octo/demo/{sha}")).text())
    assert launch[-1]["status_code"] == 404 and "not served here" in launch[-1]["message"]
    assert ">unknown<" in await (await client.get(badge)).text()
    assert (await client.get(page_path)).status == 404
    revalidated = ln.fake.calls("GET", REPO_CALLS)[calls:]
    assert revalidated and revalidated[0].headers.get("if-none-match")  # conditional: a 304 costs no quota
