"""A click on a Binder link, against a real JupyterHub running real single-user servers."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

pytestmark = pytest.mark.hub

PAGE = "/v2/gh/octo/demo/main"


async def launch_through_page(ln, path: str = PAGE):
    status, body, events_url = await ln.open_page(path)
    assert status == 200, body
    assert events_url
    st, headers, events = await ln.events(events_url)
    assert st == 200 and headers["Content-Type"].startswith("text/event-stream")
    return events_url, events


def user_of(url: str) -> str:
    return url.split("/user/", 1)[1].split("/", 1)[0]


async def test_click_on_prebuilt_image_lands_on_running_server(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    sha, image = await ln.prebuild("octo/demo", "main")
    _, events = await launch_through_page(ln, PAGE + "?urlpath=api/status")
    phases = [e["phase"] for e in events]
    assert phases == ["built", "launching", "ready"]
    ready = events[-1]
    assert ready["image"] == image and ready["token"] and ready["repo_url"].endswith("/octo/demo.git")
    # BinderHub's shape: the server's base URL (no landing path, no query), the token apart
    assert ready["url"].startswith(f"{hub.url}/user/octo-demo-") and ready["url"].endswith("/")
    assert "?" not in ready["url"]
    user = user_of(ready["url"])
    assert ready["url"] == f"{hub.url}/user/{user}/"

    async with aiohttp.ClientSession() as browser:
        # where the page sends the browser: the server accepts the token from the URL
        async with browser.get(f"{ready['url']}api/status?token={ready['token']}") as resp:
            assert resp.status == 200
            assert "started" in json.loads(await resp.text())
        # and the documented check: /user/{name}/api/status with the token
        async with browser.get(f"{hub.url}/user/{user}/api/status",
                               headers={"Authorization": f"token {ready['token']}"}) as resp:
            assert resp.status == 200
        # a wrong token is refused
        async with browser.get(f"{hub.url}/user/{user}/api/status?token=wrong-token-wrong-token",
                               allow_redirects=False) as resp:
            assert resp.status in (302, 403)

    spawns = [r for r in hub.records() if r["user"] == user]
    assert [r["image"] for r in spawns] == [image]
    env = spawns[0]["env"]
    assert env["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] == "1"
    assert env["BINDER_REPO_URL"] == ready["repo_url"]
    assert env["BINDER_REF_URL"].endswith(f"/octo/demo/tree/{sha}")
    assert env["BINDER_REQUEST"] == "v2/gh/octo/demo/main"
    assert env["BINDER_PERSISTENT_REQUEST"] == f"v2/gh/octo/demo/{sha}"
    assert env["BINDER_LAUNCH_HOST"] == ln.services.settings.public_url.rstrip("/") + "/"
    assert hub.running_servers() == [f"{user}/"]

    metrics = await (await ln.client.get("/metrics")).text()
    assert 'binder_prebuild_launches_total{outcome="ready"} 1.0' in metrics
    assert "binder_prebuild_launch_seconds_count 1.0" in metrics


async def test_ready_full_sha_needs_no_github_call_and_no_registry_lookup(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    sha, image = await ln.prebuild("octo/demo", "main")
    # the repository's visibility is what the installation event told (kept in the store, like
    # heads): a ready full sha needs nothing from GitHub, not even on the first click
    ln.fake.requests.clear()
    ln.images.requests.clear()
    _, events = await launch_through_page(ln, f"/v2/gh/octo/demo/{sha}")
    assert events[-1]["phase"] == "ready" and events[-1]["image"] == image
    assert ln.fake.requests == []
    assert ln.images.requests == []


async def test_a_branch_launch_makes_no_github_call(hub, launcher):
    """Issue 12: the ref from the heads push webhooks recorded, the visibility from the facts the
    installation and push events carried: a branch, a tag or HEAD launches with no GitHub call."""
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    sha, image = await ln.prebuild("octo/demo", "main")
    await ln.record_heads("octo/demo")
    ln.fake.requests.clear()
    _, events = await launch_through_page(ln, "/v2/gh/octo/demo/main")
    assert events[-1]["phase"] == "ready" and events[-1]["image"] == image
    _, _, events = await ln.events("/build/gh/octo/demo/HEAD")
    assert events[-1]["phase"] == "ready" and events[-1]["image"] == image
    assert [f"{r.method} {r.path}" for r in ln.fake.requests] == []


async def test_landing_paths_follow_binderhub(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo", "main")
    status, body, events_url = await ln.open_page(PAGE + "?labpath=notebooks/intro.ipynb")
    # the page composes the redirect (as BinderHub's page does) from the landing path it was given
    assert '"url_path": "doc/tree/notebooks/intro.ipynb"' in body
    _, _, events = await ln.events(events_url)
    assert events[-1]["phase"] == "ready" and events[-1]["url"].endswith("/")


async def test_reconnecting_does_not_start_a_second_server(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    _, image = await ln.prebuild("octo/demo", "main")
    status, _, events_url = await ln.open_page(PAGE)
    # the stream drops after its first event ...
    resp = await ln.client.get(events_url)
    first = b""
    while b"data:" not in first:
        first += await resp.content.readuntil(b"\n\n")
    resp.close()
    last_id = int(first.decode().split("id: ", 1)[1].split("\n", 1)[0])
    # ... the browser reloads the page (same cookie): the same launch, not a new one
    status, _, again_url = await ln.open_page(PAGE)
    assert again_url == events_url
    # ... and EventSource reconnects with Last-Event-ID: it gets the rest, not a repeat
    st, _, rest = await ln.events(events_url, headers={"Last-Event-ID": str(last_id)})
    assert rest[-1]["phase"] == "ready"
    assert "built" not in [e["phase"] for e in rest]
    # a third connection after the end replays the ready event
    st, _, replay = await ln.events(events_url)
    assert replay[-1]["url"] == rest[-1]["url"]
    user = user_of(rest[-1]["url"])
    assert hub.running_servers() == [f"{user}/"]
    assert [r["image"] for r in hub.records() if r["image"] == image and r["user"] == user] == [image]
    assert len([r for r in hub.records() if r["user"].startswith("octo-demo-")
                and r["user"] in {u["name"] for u in hub.users()}]) == 1

    # another browser (no cookie) gets a launch of its own
    ln.client.session.cookie_jar.clear()
    _, other = await launch_through_page(ln)
    assert user_of(other[-1]["url"]) != user
    assert len(hub.running_servers()) == 2


async def test_missing_image_is_built_on_launch_with_phases_and_log_lines(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    sha = ln.fake.repo("octo/demo").branches["main"]
    _, events = await launch_through_page(ln)
    phases = [e["phase"] for e in events]
    for phase in ("waiting", "fetching", "building", "pushing", "built", "launching", "ready"):
        assert phase in phases
    assert phases.index("building") < phases.index("pushing") < phases.index("built") < phases.index("ready")
    messages = [e["message"] for e in events]
    for line in ln.builder.log_lines:
        assert line in messages
    assert len(ln.builder.jobs) == 1
    job = ln.builder.jobs[0]
    assert job.request.sha == sha and job.request.clone_url == f"{ln.fake.web_url}/octo/demo.git"
    user = user_of(events[-1]["url"])
    assert [r["image"] for r in hub.records() if r["user"] == user] == [job.image]


async def test_running_build_is_attached_to_not_repeated(hub, launcher):
    from bot.model import BuildRequest, Trigger

    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    sha = ln.fake.repo("octo/demo").branches["main"]
    ln.builder.hold = True
    await ln.services.scheduler.submit(BuildRequest(
        owner="octo", repo="demo", sha=sha, clone_url=f"{ln.fake.web_url}/octo/demo.git", branch="main",
        trigger=Trigger.PUSH))
    await ln.builder.wait_running(1)
    status, _, events_url = await ln.open_page(PAGE)

    async def release_soon():
        await asyncio.sleep(1.0)
        ln.builder.release()

    releaser = asyncio.create_task(release_soon())
    _, _, events = await ln.events(events_url)
    await releaser
    assert "A build of this commit is running" in events[0]["message"]
    assert events[-1]["phase"] == "ready"
    assert len(ln.builder.jobs) == 1


async def test_failed_build_ends_the_launch_with_its_reason(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    ln.builder.fail_with = "pip could not install numpy"
    _, events = await launch_through_page(ln)
    assert events[-1]["phase"] == "failed"
    assert "pip could not install numpy" in events[-1]["message"]
    assert hub.users() == []


async def test_server_that_never_starts_is_given_up_after_the_launch_timeout(hub, launcher):
    ln = await launcher(hub=hub, launch_timeout=3)
    await ln.install("octo/stuck-thing")
    _, image = await ln.prebuild("octo/stuck-thing", "main")
    assert "stuck-" in image
    _, events = await launch_through_page(ln, "/v2/gh/octo/stuck-thing/main")
    assert events[-1]["phase"] == "failed"
    assert "did not start within 3 seconds" in events[-1]["message"]
    for _ in range(100):  # the temporary user is removed
        if not hub.users():
            break
        await asyncio.sleep(0.2)
    assert hub.users() == []
    metrics = await (await ln.client.get("/metrics")).text()
    assert 'binder_prebuild_launches_total{outcome="timeout"} 1.0' in metrics
