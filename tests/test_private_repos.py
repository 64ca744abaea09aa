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
from bot.store.repo_facts import facts_from_repository
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


async def deliver(ln, event: str, payload: dict) -> None:
    """A webhook through the repository-facts feature's router, as the dispatcher runs it."""
    from gidgethub.sansio import Event

    from bot.github.repositories import router

    await router.dispatch(Event(payload, event=event, delivery_id=f"test-{event}"), None, services=ln.services)


def repository_event(action: str, full_name: str, *, private: bool, **changes) -> dict:
    from tests import payloads

    body = payloads.rewrite(payloads.load(f"repository.{action}"), repo=full_name)
    body["repository"].update(private=private, visibility="private" if private else "public")
    return body


async def shown(client, sha: str) -> tuple[bool, bool, bool]:
    """(badge says ready, build page found, launch stream not refused) for octo/demo at ``sha``."""
    badge = ">ready<" in await (await client.get(f"/badge/gh/octo/demo/{sha}.svg")).text()
    page = (await client.get(build_paths("octo", "demo", sha)[0])).status == 200
    events = parse_sse(await (await client.get(f"/build/gh/octo/demo/{sha}?build_only=true")).text())
    return badge, page, events[-1].get("status_code") != 404


async def test_a_repository_made_private_later_stops_launching_its_old_builds(launcher, site):
    ln = await start(launcher)
    await ln.install(PUBLIC)
    sha, _ = await ln.prebuild(PUBLIC)  # recorded while public: the record says "not private"
    client = await site(ln)
    assert await shown(client, sha) == (True, True, True)

    ln.fake.repo(PUBLIC).private = True
    await deliver(ln, "repository", repository_event("privatized", PUBLIC, private=True))
    ln.fake.requests.clear()
    # the event decides at once, whatever the build record says, and without asking GitHub
    assert await shown(client, sha) == (False, False, False)
    assert ">unknown<" in await (await client.get(f"/badge/gh/octo/demo/{sha}.svg")).text()
    assert ln.fake.calls("GET", REPO_CALLS) == []

    # a late snapshot (a push delivered after the change) cannot make it public again ...
    push = payloads_push(PUBLIC, sha, private=False)
    await deliver(ln, "push", push)
    assert await shown(client, sha) == (False, False, False)
    await ln.state.resolver.known_repos.settle()
    assert len(ln.fake.calls("GET", REPO_CALLS)) == 1  # ... it only made the next look ask GitHub (private)
    assert await shown(client, sha) == (False, False, False)

    # publicized is the change itself: served again at once
    ln.fake.repo(PUBLIC).private = False
    await deliver(ln, "repository", repository_event("publicized", PUBLIC, private=False))
    assert await shown(client, sha) == (True, True, True)


def payloads_push(full_name: str, sha: str, *, private: bool) -> dict:
    from tests import payloads

    body = payloads.rewrite(payloads.load("push.branch"), repo=full_name, sha=sha)
    body["repository"].update(private=private, visibility="private" if private else "public")
    return body


async def test_a_missed_privatized_event_heals_behind_the_next_click(launcher, site):
    clock = ManualClock()
    ln = await start(launcher, clock=clock)
    known = ln.state.resolver.known_repos
    known.store.clock = clock.time
    await ln.install(PUBLIC)
    sha, _ = await ln.prebuild(PUBLIC)
    # what the push webhook records (bot/github/repositories.py), on the test's clock
    await known.store.record(facts_from_repository(payloads_push(PUBLIC, sha, private=False)["repository"]),
                             authoritative=False)
    client = await site(ln)
    ln.fake.repo(PUBLIC).private = True  # and its event never reaches us
    ln.fake.requests.clear()
    await clock.advance(known.fresh - 1)
    assert await shown(client, sha) == (True, True, True)  # fresh facts: no GitHub call
    assert ln.fake.calls("GET", REPO_CALLS) == []

    await clock.advance(2)  # old now: this click is answered from them, and they are re-read behind it
    assert (await shown(client, sha))[0]
    await known.settle()
    calls = ln.fake.calls("GET", REPO_CALLS)
    assert len(calls) == 1  # one re-read for the burst of requests that click made
    assert await shown(client, sha) == (False, False, False)

    # facts older than max_age are not trusted at all: GitHub is asked before answering
    ln.fake.repo(PUBLIC).private = False
    await known.store.record(facts_from_repository(payloads_push(PUBLIC, sha, private=False)["repository"]),
                             authoritative=False)  # a stale snapshot: not trusted to reopen it
    await clock.advance(known.max_age + 1)
    assert await shown(client, sha) == (True, True, True)
    revalidated = ln.fake.calls("GET", REPO_CALLS)[1:]
    assert revalidated and revalidated[-1].headers.get("if-none-match")  # conditional: a 304 costs no quota


async def test_deleted_and_renamed_repositories_forget_their_facts_and_heads(launcher):
    from bot.store.heads import HeadStore

    ln = await start(launcher)
    await ln.install(PUBLIC)
    await ln.record_heads(PUBLIC)
    store, heads = ln.state.resolver.known_repos.store, HeadStore(ln.services.db)
    await deliver(ln, "push", payloads_push(PUBLIC, ln.fake.repo(PUBLIC).branches["main"], private=False))
    assert (await store.lookup(PUBLIC)).facts.clone_url.endswith("/octo/demo.git")

    await deliver(ln, "repository", repository_event("renamed", "octo/demo-renamed", private=False))
    body = repository_event("renamed", "octo/other", private=False)
    body["changes"]["repository"]["name"]["from"] = "demo"
    await deliver(ln, "repository", body)
    assert await store.lookup(PUBLIC) is None and await heads.lookup(PUBLIC, "main") is None
    assert (await store.lookup("octo/other")).facts.private is False

    body = repository_event("transferred", "someone/other", private=True)
    body["changes"]["owner"]["from"]["user"]["login"] = "octo"
    await deliver(ln, "repository", body)
    assert await store.lookup("octo/other") is None
    assert (await store.lookup("someone/other")).facts.private is True

    await deliver(ln, "repository", repository_event("deleted", "someone/other", private=True))
    assert await store.lookup("someone/other") is None
