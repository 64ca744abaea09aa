"""BinderHub's launch API (``GET /build/gh/...``) where no running Hub is needed:
refusals as failed events, ``build_only``, refs, old build-page links, reconnects, CORS."""
from __future__ import annotations

import pytest

from launcher.api import build_only_asked, parse_event_id, wants_page
from tests.real_hub import free_port, parse_sse


async def dead_hub(launcher, **settings):
    """A launcher whose JUPYTERHUB_API_URL points at a closed port (no server can start)."""
    settings.setdefault("max_servers", -1)
    settings.setdefault("max_servers_per_repo", -1)
    return await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api", **settings)


def test_accept_rules_and_query_parsing():
    assert wants_page("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert not wants_page("text/event-stream")
    assert not wants_page("*/*")
    assert not wants_page("")
    assert not wants_page("text/html, text/event-stream")
    assert build_only_asked("true") and build_only_asked("True")
    assert not build_only_asked("1") and not build_only_asked(None) and not build_only_asked("false")
    assert parse_event_id("abcdefgh12_-.7") == ("abcdefgh12_-", 7)
    assert parse_event_id("7") is None and parse_event_id("x.y") is None and parse_event_id(None) is None


@pytest.mark.parametrize("accept", ["*/*", "text/event-stream", "application/json", None])
async def test_any_accept_gets_an_event_stream_and_a_refusal_is_a_failed_event(launcher, accept):
    ln = await dead_hub(launcher)
    ln.fake.add_repo("other/repo")
    headers = {"Accept": accept} if accept else {}
    resp = await ln.client.get("/build/gh/other/repo/main", headers=headers, skip_auto_headers=["Accept"])
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    events = parse_sse(text)
    assert [e["phase"] for e in events] == ["failed"]
    assert "other/repo is not served here" in events[0]["message"] and events[0]["status_code"] == 404


async def test_unknown_ref_bad_spec_and_other_providers_are_failed_events(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    for path, words, code in [("/build/gh/octo/demo/nope", "no branch, tag or commit called 'nope'", 404),
                              ("/build/gh/octo/demo/a..b", "not a valid git ref", 400),
                              ("/build/gl/group/project/main", "No provider found for prefix 'gl'", 404),
                              ("/build/gh/octo", "Not a launch link", 400)]:
        status, _, events = await ln.events(path)
        assert status == 200, path
        assert [e["phase"] for e in events] == ["failed"], path
        assert words in events[0]["message"] and events[0]["status_code"] == code, path
    assert ln.builder.jobs == []


async def test_build_only_builds_a_missing_image_and_ends_ready_without_a_server(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    sha = ln.fake.repo("octo/demo").branches["main"]
    status, _, events = await ln.events("/build/gh/octo/demo/main?build_only=true")
    assert status == 200
    phases = [e["phase"] for e in events]
    assert phases[-1] == "ready" and "building" in phases and "launching" not in phases
    ready = events[-1]
    assert ready["message"].startswith("Done!") and ready["imageName"] == ln.image_for("octo/demo", sha)
    assert "url" not in ready and "token" not in ready
    for line in ln.builder.log_lines:
        assert line in [e["message"] for e in events]
    assert [j.request.sha for j in ln.builder.jobs] == [sha]
    assert list(ln.services.hub.calls) == []  # the (dead) Hub was never asked for anything

    # again: the image is there now, so it is found, not built
    status, _, events = await ln.events("/build/gh/octo/demo/main?build_only=true")
    assert [e["phase"] for e in events] == ["ready"] and events[0]["message"].startswith("Done!")
    assert len(ln.builder.jobs) == 1


async def test_build_only_with_head_and_short_sha_resolves_to_the_full_sha(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    repo = ln.fake.repo("octo/demo")
    main = repo.branches["main"]
    other = ln.fake.add_commit("octo/demo", {"y": "2"}, branch="feature")
    for ref, sha in (("HEAD", main), (other[:7], other), (other, other)):
        status, _, events = await ln.events(f"/build/gh/octo/demo/{ref}?build_only=true")
        assert events[-1]["phase"] == "ready", (ref, events[-1])
        assert events[-1]["imageName"] == ln.image_for("octo/demo", sha), ref


async def test_a_failed_build_is_a_failed_event(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    ln.builder.fail_with = "pip could not install numpy"
    status, _, events = await ln.events("/build/gh/octo/demo/main?build_only=true")
    assert status == 200 and events[-1]["phase"] == "failed"
    assert "pip could not install numpy" in events[-1]["message"]


async def test_a_reconnecting_eventsource_follows_its_launch_and_is_stopped_after_the_end(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    resp = await ln.client.get("/build/gh/octo/demo/main")
    text = await resp.text()
    ids = [line[4:] for line in text.splitlines() if line.startswith("id: ")]
    events = parse_sse(text)
    assert [e["phase"] for e in events] == ["built", "launching", "failed"]  # the Hub is dead
    launch_id = ids[0].split(".")[0]
    assert all(i.startswith(launch_id + ".") for i in ids)
    # reconnecting after the first event: the rest of the same launch, nothing started again
    status, _, rest = await ln.events("/build/gh/octo/demo/main", headers={"Last-Event-ID": ids[0]})
    assert [e["phase"] for e in rest] == ["launching", "failed"]
    # reconnecting after the end: 204 tells EventSource to stop (no new launch)
    before = len(ln.state.launches._by_id)
    resp = await ln.client.get("/build/gh/octo/demo/main", headers={"Last-Event-ID": ids[-1]})
    assert resp.status == 204
    assert len(ln.state.launches._by_id) == before
    # an id of another repository's launch is not followed: a launch of its own
    await ln.install("octo/other")
    await ln.prebuild("octo/other")
    status, _, other = await ln.events("/build/gh/octo/other/main", headers={"Last-Event-ID": ids[-1]})
    assert other[0]["phase"] == "built" and len(ln.state.launches._by_id) == before + 1


async def test_an_old_build_page_link_opened_in_a_browser_lands_on_the_build_page(prebuild_bot):
    from bot.model import BuildRequest, BuildState

    bot = await prebuild_bot()
    inst = bot.fake.add_installation(["octo/nb"])  # public, installed: a build page shows only what may launch
    await bot.services.gh_state.upsert_installation(inst.id, inst.account)
    await bot.services.gh_state.add_repos(inst.id, [("octo/nb", False)])
    sha = "ab" * 20
    rec = await bot.services.scheduler.submit(BuildRequest(
        owner="octo", repo="nb", sha=sha, clone_url="http://127.0.0.1:1/octo/nb.git", branch="main"))
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    resp = await bot.client.get(f"/build/gh/octo/nb/{sha}", headers=browser, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == f"/builds/gh/octo/nb/{sha}"
    assert "Accept" in resp.headers["Vary"]
    page = await bot.client.get(f"/build/gh/octo/nb/{sha}", headers=browser)
    assert page.status == 200 and rec.image in await page.text()
    assert str(page.url).endswith(f"/builds/gh/octo/nb/{sha}")
    # an EventSource (or any API client) asking for the same URL gets the launch API's stream
    resp = await bot.client.get(f"/build/gh/octo/nb/{sha}", headers={"Accept": "text/event-stream"})
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    await resp.release()
    assert (await bot.services.builds.get(rec.id)).state in (BuildState.BUILT, BuildState.QUEUED,
                                                              BuildState.RUNNING)


async def test_cors_headers_and_preflight_when_an_origin_is_allowed(launcher):
    ln = await dead_hub(launcher, cors_allow_origin="https://book.example")
    await ln.install("octo/demo")
    origin = {"Origin": "https://book.example"}
    for path in ("/build/gh/octo/demo/nope", "/api/events/gh/octo/demo/nope", "/badge/gh/octo/demo/main.svg"):
        resp = await ln.client.get(path, headers=origin)
        await resp.read()
        assert resp.headers.get("Access-Control-Allow-Origin") == "https://book.example", path
        assert "Origin" in resp.headers.get("Vary", ""), path
    resp = await ln.client.options("/build/gh/octo/demo/main", headers={
        **origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "last-event-id"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://book.example"
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "last-event-id"
    # a preflight starts nothing
    assert ln.state.launches._by_id == {}
    # the Hub-facing and admin routes never get CORS headers
    resp = await ln.client.get("/health", headers=origin)
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_no_cors_headers_by_default(launcher):
    ln = await dead_hub(launcher)
    await ln.install("octo/demo")
    resp = await ln.client.get("/badge/gh/octo/demo/main.svg", headers={"Origin": "https://book.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await ln.client.options("/build/gh/octo/demo/main", headers={
        "Origin": "https://book.example", "Access-Control-Request-Method": "GET"})
    assert resp.status == 204 and "Access-Control-Allow-Origin" not in resp.headers
