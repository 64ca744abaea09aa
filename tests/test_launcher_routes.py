"""The launch routes' answers that need no running Hub: refusals, pages, badge headers."""
from __future__ import annotations

import pytest

from bot.model import BuildRequest, BuildState, Trigger
from tests.real_hub import free_port, parse_sse


async def dead_hub(launcher, **settings):
    """A launcher whose JUPYTERHUB_API_URL points at a closed port."""
    return await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api", **settings)


@pytest.mark.parametrize("path", [
    "/v2/gh/-bad/repo/main", "/v2/gh/octo/..//main", "/v2/gh/octo/demo/a..b", "/v2/gh/octo/demo/x~1",
])
async def test_malformed_links_get_a_400_page(launcher, path):
    ln = await dead_hub(launcher)
    resp = await ln.client.get(path)
    assert resp.status in (400, 404)  # aiohttp itself may not route some of them
    if resp.status == 400:
        assert "Not a launch link" in await resp.text()


async def page_then_stream(ln, path: str) -> list[dict]:
    """A browser: the page (which does no work), then the stream it opens."""
    status, body, events_url = await ln.open_page(path)
    assert status == 200, body
    _, _, events = await ln.events(events_url)
    return events


async def test_the_page_get_does_no_work(launcher):
    """Link unfurlers and crawlers fetch these links: no ref resolution, no Hub call, no reservation."""
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    ln.fake.requests.clear()
    for path in ("/v2/gh/octo/demo/main?urlpath=lab", "/v2/gh/nobody/nothing/HEAD", "/v2/gh/octo/demo/abc1234"):
        resp = await ln.client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html", path
    assert ln.fake.requests == []
    assert list(ln.services.hub.calls) == []
    assert ln.state.launches._by_id == {}
    assert await ln.services.builds.in_state(*__import__("bot.model", fromlist=["BuildState"]).BuildState) == []


async def test_repo_without_the_app_is_refused_with_a_message_that_says_why(launcher):
    ln = await dead_hub(launcher)
    ln.fake.add_repo("other/repo")
    events = await page_then_stream(ln, "/v2/gh/other/repo/main")
    assert [e["phase"] for e in events] == ["failed"] and events[0]["status_code"] == 404
    message = events[0]["message"]
    assert "other/repo is not served here" in message and "not installed" in message and "LAUNCH_ALLOW" in message


async def test_unknown_ref_is_refused(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    events = await page_then_stream(ln, "/v2/gh/octo/demo/nope")
    assert events[-1]["phase"] == "failed" and "no branch, tag or commit called 'nope'" in events[-1]["message"]


async def test_hub_that_is_down_gives_a_clear_message_and_503_health(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    events = await page_then_stream(ln, "/v2/gh/octo/demo/main")
    assert events[-1]["phase"] == "failed"
    assert "reach JupyterHub" in events[-1]["message"] and "try again" in events[-1]["message"]
    assert events[-1]["retryAfter"] == 30
    health = await ln.client.get("/health")
    data = await health.json()
    assert health.status == 503
    hub_check = next(c for c in data["checks"] if c["name"] == "hub")
    assert hub_check["ok"] is False and "not reachable" in hub_check["detail"]
    # the streams say the same to API clients, as a failed event on a 200 stream (never a 5xx):
    # an EventSource cannot read the body of an error status
    for path in ("/api/events/gh/octo/demo/main", "/build/gh/octo/demo/main"):
        status, headers, events = await ln.events(path)
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        assert [e["phase"] for e in events] == ["failed"]
        assert "reach JupyterHub" in events[0]["message"] and events[0]["status_code"] == 503


async def test_no_hub_configured_is_refused(launcher):
    ln = await launcher()
    await ln.install("octo/demo")
    events = await page_then_stream(ln, "/v2/gh/octo/demo/main")
    assert events[-1]["status_code"] == 503 and "no JupyterHub configured" in events[-1]["message"]


async def test_private_repositories_are_not_launched_unless_allowed(launcher):
    ln = await dead_hub(launcher, max_servers=-1, max_servers_per_repo=-1)
    await ln.install("octo/secret", private=True)
    # the repository object's current visibility decides, before the stream starts
    resp = await ln.client.get("/api/events/gh/octo/secret/main")
    text = await resp.text()
    (event,) = parse_sse(text)
    assert event["phase"] == "failed" and event["status_code"] == 404 and "private repository" in text
    assert ln.fake.repo("octo/secret").branches["main"] not in text


@pytest.mark.parametrize("ref", ["main", "sha"])
async def test_a_prebuilt_private_repository_is_not_launched_unless_allowed(launcher, ref):
    """An image already built for a private repository (no build to start, so no repository
    read on the way) is still refused when LAUNCH_ALLOW does not list it: no server is started."""
    ln = await dead_hub(launcher, max_servers=-1, max_servers_per_repo=-1)
    await ln.install("octo/secret", private=True)
    sha, _image = await ln.prebuild("octo/secret")
    ref = sha if ref == "sha" else ref
    resp = await ln.client.get(f"/api/events/gh/octo/secret/{ref}")
    text = await resp.text()
    phases = [e["phase"] for e in parse_sse(text)]
    # refused before anything about the build (tests/test_private_repos.py): one failed event, nothing else
    assert phases == ["failed"] and parse_sse(text)[0]["status_code"] == 404 and "private repository" in text, text
    assert ln.builder.jobs == []


async def test_not_prebuilt_when_build_on_launch_is_off(launcher):
    ln = await dead_hub(launcher, build_on_launch=False, max_servers=-1, max_servers_per_repo=-1)
    await ln.install("octo/demo")
    events = await page_then_stream(ln, "/v2/gh/octo/demo/main")
    assert events[-1]["status_code"] == 404 and "has not been prebuilt" in events[-1]["message"]
    assert ln.builder.jobs == []


async def test_badge_states_and_cache_headers(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    repo = ln.fake.repo("octo/demo")
    main = repo.branches["main"]
    resp = await ln.client.get("/badge/gh/octo/demo/main.svg")
    svg = await resp.text()
    assert resp.status == 200 and resp.content_type == "image/svg+xml"
    assert ">not built<" in svg
    cc = resp.headers["Cache-Control"]
    assert "no-cache" in cc and "max-age=30" in cc
    etag = resp.headers["ETag"]
    again = await ln.client.get("/badge/gh/octo/demo/main.svg", headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag

    # a running build, then a failed one, then a built image, for a branch and a sha with slashes
    ln.builder.hold = True
    sha = ln.fake.add_commit("octo/demo", {"x": "1"}, branch="feature/x")
    req = BuildRequest(owner="octo", repo="demo", sha=sha, clone_url="http://x/octo/demo.git",
                       branch="feature/x", trigger=Trigger.PUSH)
    record = await ln.services.scheduler.submit(req)
    await ln.builder.wait_running(1)
    svg = await (await ln.client.get("/badge/gh/octo/demo/feature/x.svg")).text()
    assert ">building<" in svg
    ln.builder.fail_with = "boom"
    ln.builder.release()
    for _ in range(100):
        rec = await ln.services.builds.get(record.id)
        if rec.state is BuildState.FAILED:
            break
        import asyncio
        await asyncio.sleep(0.05)
    svg = await (await ln.client.get(f"/badge/gh/octo/demo/{sha}.svg")).text()
    assert ">failed<" in svg
    await ln.prebuild("octo/demo", "main")
    resp = await ln.client.get(f"/badge/gh/octo/demo/{main}.svg", headers={"If-None-Match": etag})
    assert resp.status == 200 and ">ready<" in await resp.text()


async def test_badge_never_fails(launcher):
    ln = await dead_hub(launcher)
    for path in ("/badge/gh/nobody/nothing/main.svg", "/badge/gh/-x/y/z.svg", "/badge/gh/a/b/c..d.svg"):
        resp = await ln.client.get(path)
        assert resp.status == 200, path
        assert ">unknown<" in await resp.text()


async def test_a_launch_is_followed_only_by_its_own_browser(launcher):
    ln = await dead_hub(launcher, max_servers=-1, max_servers_per_repo=-1)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    status, _, events_url = await ln.open_page("/v2/gh/octo/demo/main")
    assert "launch=" not in events_url  # nothing in the URL hands out a launch (or its token)
    _, _, first = await ln.events(events_url)
    ids = set(ln.state.launches._by_id)
    assert len(ids) == 1
    ln.client.session.cookie_jar.clear()  # someone else, holding only the URL
    _, _, other = await ln.events(events_url)
    assert len(ln.state.launches._by_id) == 2  # a launch of their own
    assert len({launch.client for launch in ln.state.launches._by_id.values()}) == 2
    assert first[-1]["phase"] == other[-1]["phase"] == "failed"  # (the dead Hub)


async def test_head_requests_start_nothing(launcher):
    ln = await dead_hub(launcher, max_servers=-1, max_servers_per_repo=-1)
    await ln.install("octo/demo")
    for path in ("/v2/gh/octo/demo/main", "/api/events/gh/octo/demo/main"):
        resp = await ln.client.head(path)
        assert resp.status == 405
    assert ln.state.launches.get("x") is None and ln.state.launches._by_id == {}
    assert (await ln.client.head("/badge/gh/octo/demo/main.svg")).status == 200


async def test_a_last_event_id_from_another_launch_replays_this_one_from_the_start(launcher):
    ln = await dead_hub(launcher, max_servers=-1, max_servers_per_repo=-1)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    status, _, events = await ln.events("/api/events/gh/octo/demo/main", headers={"Last-Event-ID": "99"})
    assert status == 200
    assert [e["phase"] for e in events] == ["built", "launching", "failed"]
