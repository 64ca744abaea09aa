"""Headless Chromium for the browser tests, driven over the Chrome DevTools protocol.

Debian's ``chromium`` with ``--remote-debugging-port``: its WebSocket is spoken with
aiohttp, so no browser driver package is needed.
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
