"""The progress page in headless Chromium: phases, log lines, progress bar, then the running server."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.chromium import Browser

pytestmark = pytest.mark.hub


async def test_progress_page_shows_phases_and_log_lines_then_lands_on_the_server(hub, launcher, tmp_path):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    ln.builder.hold = True  # the build waits until the page has shown it
    ln.builder.log_lines = ["Step 1/3 : FROM base", "Step 2/3 : COPY . .", "Successfully built 0123abcd"]
    page_url = str(ln.client.make_url("/v2/gh/octo/demo/main?urlpath=api/status"))

    async with Browser.start(tmp_path / "chromium-profile") as browser:
        await browser.call("Page.navigate", url=page_url)
        seen_phases: list[str] = []
        snap: dict[str, Any] = {}

        async def watch(until, timeout: float) -> dict[str, Any]:
            async with asyncio.timeout(timeout):
                while True:
                    s = await browser.snapshot()
                    if s.get("phase") and (not seen_phases or seen_phases[-1] != s["phase"]):
                        seen_phases.append(s["phase"])
                    if until(s):
                        return s
                    await asyncio.sleep(0.05)

        snap = await watch(lambda s: "Successfully built 0123abcd" in (s.get("log") or ""), 60)
        assert snap["phase"] == "building"
        assert "Step 1/3 : FROM base" in snap["log"] and "Step 2/3 : COPY . ." in snap["log"]
        assert snap["bar"] not in (None, "", "0%")
        assert not snap["error"]

        ln.builder.release()
        snap = await watch(lambda s: "/user/" in (s.get("href") or ""), 90)
        # landed on the running server, through the token in the redirect URL
        assert snap["href"].startswith(f"{hub.url}/user/octo-demo-")
        assert "/api/status?token=" in snap["href"]
        await watch(lambda s: '"started"' in (s.get("body") or ""), 30)

    for phase in ("building", "launching"):
        assert phase in seen_phases, seen_phases
    assert seen_phases.index("building") < seen_phases.index("launching")
    assert len(hub.running_servers()) == 1
    assert [r["image"] for r in hub.records() if r["user"] == hub.running_servers()[0].rstrip("/")] == \
        [ln.builder.jobs[0].image]


async def test_progress_page_shows_a_failure(hub, launcher, tmp_path):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    ln.builder.fail_with = "repo2docker: could not find a base image"
    page_url = str(ln.client.make_url("/v2/gh/octo/demo/main"))
    async with Browser.start(tmp_path / "chromium-profile") as browser:
        await browser.call("Page.navigate", url=page_url)
        async with asyncio.timeout(60):
            while True:
                snap = await browser.snapshot()
                if snap.get("error"):
                    break
                await asyncio.sleep(0.05)
        assert snap["phase"] == "failed"
        assert "could not find a base image" in snap["error"]
        assert snap["href"] == page_url  # no redirect
    assert hub.users() == []
