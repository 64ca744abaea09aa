"""Launch limits against a real JupyterHub: servers in total, per repository, launches per minute."""
from __future__ import annotations

import asyncio

import pytest

from tests.real_hub import parse_sse

pytestmark = pytest.mark.hub


def new_browser(ln):
    ln.client.session.cookie_jar.clear()


async def launch(ln, path):
    status, body, events_url = await ln.open_page(path)
    assert status == 200, body
    _, _, events = await ln.events(events_url)
    return events


async def test_total_server_cap_gives_a_429_page_naming_the_limit(hub, launcher):
    ln = await launcher(hub=hub, max_servers=1, max_servers_per_repo=5,
                        attach_options={"count_ttl": 0})
    await ln.install("octo/demo", "octo/other")
    await ln.prebuild("octo/demo")
    await ln.prebuild("octo/other")
    events = await launch(ln, "/v2/gh/octo/demo/main")
    assert events[-1]["phase"] == "ready"
    new_browser(ln)
    resp = await ln.client.get("/v2/gh/octo/other/main")
    body = await resp.text()
    assert resp.status == 429
    assert "1 servers in total" in body
    assert int(resp.headers["Retry-After"]) > 0
    assert len(hub.running_servers()) == 1
    metrics = await (await ln.client.get("/metrics")).text()
    assert 'binder_prebuild_launches_total{outcome="quota"} 1.0' in metrics
    assert "binder_prebuild_servers_running 1.0" in metrics


async def test_per_repository_cap(hub, launcher):
    ln = await launcher(hub=hub, max_servers=10, max_servers_per_repo=1, attach_options={"count_ttl": 0})
    await ln.install("octo/demo", "octo/other")
    await ln.prebuild("octo/demo")
    await ln.prebuild("octo/other")
    assert (await launch(ln, "/v2/gh/octo/demo/main"))[-1]["phase"] == "ready"
    new_browser(ln)
    resp = await ln.client.get("/v2/gh/octo/demo/main")
    body = await resp.text()
    assert resp.status == 429 and "octo/demo" in body and "1 per repository" in body
    assert "Retry-After" in resp.headers
    # another repository still fits
    assert (await launch(ln, "/v2/gh/octo/other/main"))[-1]["phase"] == "ready"
    assert len(hub.running_servers()) == 2


async def test_launches_admitted_together_cannot_exceed_the_cap(hub, launcher):
    """Two pages load before either server exists; the second stream is refused, not started."""
    ln = await launcher(hub=hub, max_servers=1, attach_options={"count_ttl": 0})
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    jar = ln.client.session.cookie_jar
    _, _, first = await ln.open_page("/v2/gh/octo/demo/main")
    first_cookies = list(jar)
    new_browser(ln)
    _, _, second = await ln.open_page("/v2/gh/octo/demo/main")
    assert first != second
    # each browser opens its own stream (with its own cookie); both launches then run at once
    second_resp = await ln.client.get(second)
    jar.clear()
    jar.update_cookies({c.key: c.value for c in first_cookies})
    first_resp = await ln.client.get(first)
    texts = await asyncio.gather(first_resp.text(), second_resp.text())
    results = [parse_sse(t) for t in texts]
    finals = sorted(events[-1]["phase"] for events in results)
    assert finals == ["failed", "ready"]
    failed = next(events[-1] for events in results if events[-1]["phase"] == "failed")
    assert failed["limit"] == "total" and "1 servers in total" in failed["message"]
    assert len(hub.running_servers()) == 1


async def test_rate_limit_per_client_ip(hub, launcher):
    ln = await launcher(hub=hub, launch_rate_per_minute=2)
    await ln.install("octo/demo")
    for _ in range(2):
        new_browser(ln)
        status, body, events_url = await ln.open_page("/v2/gh/octo/demo/main")
        assert status == 200, body
    # the last browser reloading its own launch is not a new launch
    status, _, again = await ln.open_page("/v2/gh/octo/demo/main")
    assert status == 200 and again == events_url
    new_browser(ln)
    resp = await ln.client.get("/v2/gh/octo/demo/main")
    body = await resp.text()
    assert resp.status == 429
    assert "2 per minute" in body
    assert 0 < int(resp.headers["Retry-After"]) <= 60
    # the API stream is limited the same way, with the same header
    resp = await ln.client.get("/api/events/gh/octo/demo/main")
    assert resp.status == 200 and "Retry-After" in resp.headers  # a failed event the client can read
    events = parse_sse(await resp.text())
    assert events[-1]["phase"] == "failed" and events[-1]["status_code"] == 429
    assert ln.builder.jobs == [] and hub.users() == []
