"""How a launch follows the Hub's answer to "start the server", against a scripted Hub API.

JupyterHub answers ``POST /users/{name}/server`` with 201 once the server is up and routed
(the spawn finished within its ``slow_spawn_timeout``) and with 202 while it is still
spawning. Only a 202 needs the progress stream; a 201 launch is ready at once, without a
third Hub round trip. The progress call, when made, counts as the Hub's time (the launch
overhead benchmark subtracts it), even though the launch stops reading at ``ready``.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.real_hub import parse_sse


def scripted_hub(spawn_status: int) -> tuple[web.Application, list[tuple[str, str]]]:
    """A Hub API answering the launcher's calls; ``seen`` lists (method, path) as they come."""
    seen: list[tuple[str, str]] = []

    async def record(request: web.Request) -> None:
        seen.append((request.method, request.path))

    async def users(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response([])

    async def create_user(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"name": request.match_info["name"]}, status=201)

    async def start(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=spawn_status, content_type="text/plain")

    async def progress(request: web.Request) -> web.StreamResponse:
        await record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        name = request.match_info["name"]
        for event in ({"progress": 50, "message": "Pulling the image"},
                      {"progress": 100, "ready": True, "message": "Ready", "url": f"/user/{name}/"}):
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/hub/api/users", users)
    app.router.add_post("/hub/api/users/{name}", create_user)
    app.router.add_post("/hub/api/users/{name}/server", start)
    app.router.add_get("/hub/api/users/{name}/server/progress", progress)
    return app, seen


async def launch(launcher: Any, aiohttp_server: Any, spawn_status: int) -> tuple[Any, list[dict], list]:
    app, seen = scripted_hub(spawn_status)
    server = await aiohttp_server(app)
    ln = await launcher(hub_api_url=str(server.make_url("/hub/api")), hub_url=str(server.make_url("")).rstrip("/"))
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo", "main")
    resp = await ln.client.get("/build/gh/octo/demo/main")
    events = parse_sse(await resp.text())
    # the calls for the launch's user (the first server count's GET /users aside)
    return ln, events, [(m, p) for m, p in seen if p.startswith("/hub/api/users/")]


async def test_server_started_within_the_request_needs_no_progress_stream(launcher, aiohttp_server):
    ln, events, seen = await launch(launcher, aiohttp_server, 201)
    assert [e["phase"] for e in events] == ["built", "launching", "ready"]
    assert [m for m, _ in seen] == ["POST", "POST"]
    assert not any(p.endswith("/progress") for _, p in seen)
    assert events[-1]["url"].endswith(f"/user/{seen[0][1].rsplit('/', 1)[1]}/")


async def test_pending_spawn_is_followed_through_its_progress_and_timed_as_the_hubs(launcher, aiohttp_server):
    ln, events, seen = await launch(launcher, aiohttp_server, 202)
    assert [e["phase"] for e in events] == ["built", "launching", "launching", "ready"]
    assert events[2]["message"] == "Pulling the image" and events[2]["progress"] == 0.85 + 0.15 * 0.5
    assert seen[-1][1].endswith("/server/progress")
    # the launch stopped reading at "ready": the call is still recorded, with its duration
    calls = [c for c in ln.services.hub.calls if c.path.endswith("/progress")]
    assert len(calls) == 1 and calls[0].status == 200 and calls[0].seconds >= 0


async def test_a_launch_that_waited_for_its_build_checks_visibility_again(launcher, aiohttp_server, monkeypatch):
    """The request checked the repository's visibility; a server started after a build (here: any
    later than the recheck threshold, set to 0) checks it again: made private meanwhile, no server."""
    import asyncio

    from launcher import launches
    from tests.test_private_repos import deliver, repository_event

    monkeypatch.setattr(launches, "VISIBILITY_RECHECK_AFTER", 0.0)
    app, seen = scripted_hub(201)
    server = await aiohttp_server(app)
    ln = await launcher(hub_api_url=str(server.make_url("/hub/api")), hub_url=str(server.make_url("")).rstrip("/"))
    await ln.install("octo/demo")
    ln.builder.hold = True
    stream = asyncio.create_task(ln.client.get("/build/gh/octo/demo/main"))
    await ln.builder.wait_held(1)
    ln.fake.repo("octo/demo").private = True
    await deliver(ln, "repository", repository_event("privatized", "octo/demo", private=True))
    ln.builder.release()
    events = parse_sse(await (await stream).text())
    assert events[-1]["phase"] == "failed" and "not served here" in events[-1]["message"]
    assert not any(p.endswith("/server") for _, p in seen)
