"""The progress page in headless Chromium: phases, log lines, progress bar, then the running server.

Drives Debian's ``chromium`` through the Chrome DevTools protocol (its
``--remote-debugging-port`` WebSocket) with aiohttp; no browser driver package needed.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.hub

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--disable-default-apps", "--mute-audio", "--remote-debugging-port=0",
                  "--remote-debugging-address=127.0.0.1"]


class Browser:
    """One headless Chromium tab, driven over CDP."""

    def __init__(self, proc: subprocess.Popen[bytes], ws: aiohttp.ClientWebSocketResponse,
                 session: aiohttp.ClientSession) -> None:
        self.proc, self.ws, self.session = proc, ws, session
        self._ids = itertools.count(1)

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, profile: Path):
        binary = shutil.which("chromium") or "/usr/bin/chromium"
        if not Path(binary).exists():
            pytest.fail("Debian's chromium is not installed: `apt-get install -y chromium`", pytrace=False)
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        session = aiohttp.ClientSession()
        try:
            port_file = profile / "DevToolsActivePort"
            for _ in range(300):
                if port_file.exists() and port_file.read_text().strip():
                    break
                await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
            browser = cls(proc, ws, session)
            await browser.call("Page.enable")
            await browser.call("Runtime.enable")
            yield browser
        finally:
            await session.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive(timeout=30)
            data = json.loads(msg.data)
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def snapshot(self) -> dict[str, Any]:
        return await self.eval("""(() => {
            const t = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
            const bar = document.querySelector('#bar > div');
            return {href: location.href, phase: t('phase'), log: t('log'), error: t('error'),
                    bar: bar ? bar.style.width : null, body: document.body ? document.body.innerText : ''};
        })()""") or {}


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
