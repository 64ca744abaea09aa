"""BinderHub's launch API against a real JupyterHub, read by real clients.

* BinderHub's documented Python client: ``requests`` (``Accept: */*``) reads ``/build/gh/...``
  to ``ready``, then calls ``{url}api/status?token={token}`` on the server it got.
* thebe-core (npm), the client of Jupyter Book and MyST sites, in headless Chromium from a
  static page on another loopback origin: it launches through ``/build/gh/...``, starts a
  kernel on the new server over its websocket and runs ``print(6*7)``.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import requests
from aiohttp import web

from tests.chromium import Browser

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[1]
THEBE_LIB = ROOT / ".cache/node/node_modules/thebe-core/dist/lib"


def read_stream(url: str, timeout: float = 120) -> list[dict]:
    """What BinderHub's docs show: iterate the lines, json-decode the ``data:`` ones, stop at the end."""
    events = []
    with requests.get(url, stream=True, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.request.headers["Accept"] == "*/*"
        for line in resp.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line.split(":", 1)[1]))
                if events[-1]["phase"] in ("ready", "failed"):
                    break
    return events


async def test_python_client_launches_and_uses_the_server(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    repo = ln.fake.repo("octo/demo")
    sha, image = await ln.prebuild("octo/demo", "main")
    public = ln.services.settings.public_url.rstrip("/") + "/"
    for ref in ("HEAD", sha, sha[:8]):
        events = await asyncio.to_thread(read_stream, str(ln.client.make_url(f"/build/gh/octo/demo/{ref}")))
        phases = [e["phase"] for e in events]
        assert phases[0] == "built" and phases[-1] == "ready" and set(phases) == {"built", "launching", "ready"}, \
            (ref, events[-1])
        ready = events[-1]
        assert ready["url"].startswith(f"{hub.url}/user/octo-demo-") and ready["url"].endswith("/")
        assert "?" not in ready["url"] and ready["token"]
        assert ready["image"] == image and ready["repo_url"].endswith("/octo/demo.git")
        assert ready["binder_ref_url"].endswith(f"/octo/demo/tree/{sha}")
        assert ready["binder_launch_host"] == public
        assert ready["binder_request"] == f"v2/gh/octo/demo/{ref}"
        assert ready["binder_persistent_request"] == f"v2/gh/octo/demo/{sha}"
        status = await asyncio.to_thread(requests.get, f"{ready['url']}api/status?token={ready['token']}",
                                         timeout=30)
        assert status.status_code == 200 and "started" in status.json(), ref
        # the token is the key: without it the server does not answer its API
        denied = await asyncio.to_thread(requests.get, f"{ready['url']}api/status", timeout=30,
                                         allow_redirects=False)
        assert denied.status_code in (302, 403), ref
    assert repo.default_branch == "main"
    assert len(hub.running_servers()) == 3


THEBE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>thebe-core</title>
<script src="/thebe/thebe-core.min.js"></script></head>
<body><script>
window.result = {status: "starting", log: []};
(async function () {
  try {
    const api = window.thebeCore.api;
    const config = api.makeConfiguration({
      binderOptions: {binderUrl: BINDER_URL, repo: "octo/demo", ref: "HEAD", repoProvider: "github"},
      savedSessionOptions: {enabled: false},
      kernelOptions: {kernelName: "python3"},
    });
    config.events.on("status", function (evt, data) { window.result.log.push(data.status + ": " + data.message); });
    const rendermime = api.makeRenderMimeRegistry();
    const server = api.connectToBinder(config);
    await server.ready;
    window.result.status = "server ready";
    const session = await server.startNewSession(rendermime);
    window.result.status = "kernel started";
    const future = session.kernel.requestExecute({code: "print(6*7)"});
    let output = "";
    future.onIOPub = function (msg) {
      if (msg.header.msg_type === "stream") { output += msg.content.text; }
    };
    await future.done;
    window.result.output = output;
    window.result.status = "done";
  } catch (e) {
    window.result.error = String((e && e.message) || e);
    window.result.status = "error";
  }
})();
</script></body></html>
"""


async def test_thebe_core_on_another_origin_runs_code_on_a_launched_server(hub, launcher, aiohttp_server,
                                                                          tmp_path):
    if not (THEBE_LIB / "thebe-core.min.js").exists():
        pytest.fail("thebe-core is not installed: run scripts/install.sh (npm install --prefix .cache/node "
                    "thebe-core)", pytrace=False)
    site = web.Application()
    binder_url: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        html = THEBE_PAGE.replace("BINDER_URL", json.dumps(binder_url["url"]))
        return web.Response(text=html, content_type="text/html")

    site.router.add_get("/", page)
    site.router.add_static("/thebe/", THEBE_LIB)
    static = await aiohttp_server(site)
    origin = f"http://127.0.0.1:{static.port}"

    ln = await launcher(hub=hub, cors_allow_origin=origin)
    await ln.install("octo/demo")
    sha, image = await ln.prebuild("octo/demo", "main")
    binder_url["url"] = str(ln.client.make_url("/")).rstrip("/")
    assert origin != str(ln.client.make_url("/")).rstrip("/")  # a cross-origin client

    async with Browser.start(tmp_path / "chromium-profile") as browser:
        await browser.call("Page.navigate", url=origin + "/")
        result: dict = {}
        async with asyncio.timeout(180):
            while result.get("status") not in ("done", "error"):
                await asyncio.sleep(0.2)
                result = await browser.eval("window.result") or {}
    assert result["status"] == "done", result
    assert result["output"].strip() == "42"
    # the launch went through the API, onto a server of our image
    running = hub.running_servers()
    assert len(running) == 1
    assert [r["image"] for r in hub.records() if f"{r['user']}/" == running[0]] == [image]
