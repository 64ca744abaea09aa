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


async def test_total_server_cap_is_refused_naming_the_limit(hub, launcher):
    ln = await launcher(hub=hub, max_servers=1, max_servers_per_repo=5)
    await ln.install("octo/demo", "octo/other")
    await ln.prebuild("octo/demo")
    await ln.prebuild("octo/other")
    events = await launch(ln, "/v2/gh/octo/demo/main")
    assert events[-1]["phase"] == "ready"
    new_browser(ln)
    refused = (await launch(ln, "/v2/gh/octo/other/main"))[-1]
    assert refused["phase"] == "failed" and refused["limit"] == "total"
    assert "1 servers in total" in refused["message"] and refused["retryAfter"] > 0
    assert len(hub.running_servers()) == 1
    metrics = await (await ln.client.get("/metrics")).text()
    assert 'binder_prebuild_launches_total{outcome="quota"} 1.0' in metrics
    assert "binder_prebuild_servers_running 1.0" in metrics


async def test_per_repository_cap(hub, launcher):
    ln = await launcher(hub=hub, max_servers=10, max_servers_per_repo=1)
    await ln.install("octo/demo", "octo/other")
    await ln.prebuild("octo/demo")
    await ln.prebuild("octo/other")
    assert (await launch(ln, "/v2/gh/octo/demo/main"))[-1]["phase"] == "ready"
    new_browser(ln)
    refused = (await launch(ln, "/v2/gh/octo/demo/main"))[-1]
    assert refused["phase"] == "failed" and refused["limit"] == "per-repository"
    assert "octo/demo" in refused["message"] and "1 per repository" in refused["message"]
    # another repository still fits
    assert (await launch(ln, "/v2/gh/octo/other/main"))[-1]["phase"] == "ready"
    assert len(hub.running_servers()) == 2


async def test_launches_admitted_together_cannot_exceed_the_cap(hub, launcher):
    """Two pages load before either server exists; the second stream is refused, not started."""
    ln = await launcher(hub=hub, max_servers=1)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    jar = ln.client.session.cookie_jar
    _, _, first = await ln.open_page("/v2/gh/octo/demo/main")
    first_cookies = list(jar)
    new_browser(ln)
    _, _, second = await ln.open_page("/v2/gh/octo/demo/main")
    assert list(jar) and list(jar)[0].value != first_cookies[0].value  # two browsers
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
    ln.builder.hold = True  # the launches wait on their build: each stays in progress
    for _ in range(2):
        new_browser(ln)
        status, body, events_url = await ln.open_page("/v2/gh/octo/demo/main")
        assert status == 200, body
        resp = await ln.client.get(events_url)  # the stream starts the launch
        await resp.content.readuntil(b"\n\n")
        resp.close()
    # the last browser reconnecting to its own launch is not a new launch
    resp = await ln.client.get(events_url)
    await resp.content.readuntil(b"\n\n")
    resp.close()
    new_browser(ln)
    refused = (await launch(ln, "/v2/gh/octo/demo/main"))[-1]
    assert refused["phase"] == "failed" and "2 per minute" in refused["message"]
    assert 0 < refused["retryAfter"] <= 60
    # the API stream is limited the same way, with the same header
    resp = await ln.client.get("/build/gh/octo/demo/main")
    assert resp.status == 200 and "Retry-After" in resp.headers  # a failed event the client can read
    events = parse_sse(await resp.text())
    assert events[-1]["phase"] == "failed" and events[-1]["status_code"] == 429
    await ln.builder.wait_running(1)
    assert len(ln.builder.jobs) == 1 and hub.users() == []  # the two admitted launches share one build
    ln.builder.release()


async def test_launches_do_not_list_the_hubs_users_each_time(hub, launcher):
    """The count is read from the Hub once, then kept from our own starts and reconciled in the background."""
    ln = await launcher(hub=hub, max_servers=3, max_servers_per_repo=3)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    for _ in range(3):
        new_browser(ln)
        assert (await launch(ln, "/v2/gh/octo/demo/main"))[-1]["phase"] == "ready"
    listings = [c for c in ln.services.hub.calls if c.method == "GET" and c.path.startswith("/users")]
    assert len(listings) == 1
    new_browser(ln)
    events = await launch(ln, "/v2/gh/octo/demo/main")  # the fourth does not fit: counted without the Hub
    assert events[-1]["phase"] == "failed" and events[-1]["limit"] == "total"
    # a server stopped behind our back (the idle culler) is noticed by the background reconcile
    culled = hub.running_servers()[0].rstrip("/")
    assert hub.api("DELETE", f"/users/{culled}/server")[0] in (202, 204)
    for _ in range(100):
        if culled + "/" not in hub.running_servers():
            break
        await asyncio.sleep(0.1)
    await ln.state.counter.reconcile()
    new_browser(ln)
    assert (await launch(ln, "/v2/gh/octo/demo/main"))[-1]["phase"] == "ready"
