"""The build's own progress page and stream (the check run's details_url): it starts nothing."""
from __future__ import annotations

import asyncio
import json

import aiohttp

from bot.model import BuildRequest, BuildState
from launcher.build_page import build_paths

SHA = "ab" * 20


def req(sha: str = SHA) -> BuildRequest:
    return BuildRequest(owner="octo", repo="nb", sha=sha, clone_url="http://127.0.0.1:1/octo/nb.git", branch="main")


async def read_events(resp: aiohttp.ClientResponse, until: str, timeout: float = 10) -> list[dict]:
    events: list[dict] = []

    async def _read() -> None:
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["phase"] == until:
                    return

    await asyncio.wait_for(_read(), timeout)
    return events


async def serve_octo_nb(bot) -> None:
    """octo/nb, public, with the App installed (a build page shows only what may be launched)."""
    inst = bot.fake.add_installation(["octo/nb"])
    await bot.services.gh_state.upsert_installation(inst.id, inst.account)
    await bot.services.gh_state.add_repos(inst.id, [("octo/nb", False)])


async def test_finished_build_page_and_stream(prebuild_bot):
    bot = await prebuild_bot()
    await serve_octo_nb(bot)
    rec = await bot.services.scheduler.submit(req())
    for _ in range(500):
        if (await bot.services.builds.get(rec.id)).state == BuildState.BUILT:
            break
        await asyncio.sleep(0.01)
    page_path, stream_path, launch_path = build_paths("octo", "nb", SHA)
    page = await bot.client.get(page_path)
    assert page.status == 200
    text = await page.text()
    assert rec.image in text and launch_path in text and stream_path in text
    resp = await bot.client.get(stream_path)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = await read_events(resp, "built")
    assert "Successfully built" in [e["message"] for e in events]
    assert events[-1]["phase"] == "built"
    assert len(bot.builder.jobs) == 1  # viewing started nothing


async def test_running_build_streams_its_log_then_ends_built(prebuild_bot):
    bot = await prebuild_bot()
    await serve_octo_nb(bot)
    bot.builder.hold = True
    rec = await bot.services.scheduler.submit(req())
    await bot.builder.wait_running(1)
    _, stream_path, _ = build_paths("octo", "nb", SHA)
    resp = await bot.client.get(stream_path)
    first = await read_events(resp, "building")
    assert first[0]["phase"] in ("fetching", "building")
    bot.builder.release()
    rest = await read_events(resp, "built")
    phases = [e["phase"] for e in first + rest]
    assert phases[-1] == "built" and "pushing" in phases
    assert (await bot.services.builds.get(rec.id)).state == BuildState.BUILT


async def test_unknown_or_malformed_commit_is_404_and_builds_nothing(prebuild_bot):
    bot = await prebuild_bot()
    for sha in ("cd" * 20, "not-a-sha"):
        page_path, stream_path, _ = build_paths("octo", "nb", sha)
        assert (await bot.client.get(page_path)).status == 404
        assert (await bot.client.get(stream_path)).status == 404
    assert bot.builder.jobs == []
