"""Launch overhead benchmark: the launcher's own time for a prebuilt image, beside BinderHub's.

Issue 12's target: per launch of a prebuilt image, our own overhead is at most a third of
BinderHub's, measured side by side (same JupyterHub, same GitHub stand-in, same registry,
launches interleaved), for a full sha, a branch, and a branch with GitHub 50 ms late.

One real JupyterHub (tests/real_hub.py: configurable-http-proxy, real jupyterhub-singleuser
processes), FakeGitHub and, per scenario, a fake registry holding the prebuilt image. Two
launchers use them:

- ours: the launcher (the app's store, scheduler and EventBus) in this process;
- BinderHub, current source, as its own process from .cache/binderhub-venv (installed on
  first use: benchmarks/binderhub_baseline.py says how and with which config), with its
  own Hub service token and the same image prefix, so it names the same image in the same
  registry and launches it without building. The Hub's spawner (``BaselineSpawner``) is
  the product's check, letting through BinderHub's shorter launch token only.

A launch is one of the two entry points, read until the ``ready`` event:
- ``v2``: a browser's click: GET the /v2/gh/... page, then the event stream it opens
  (for BinderHub: /build/gh/... with the page's build token);
- ``build``: BinderHub's launch API, GET /build/gh/... (what thebe and the Python client read).

Own overhead = that wall time minus the time spent inside Hub API calls. Both launchers
reach the Hub through the same timing reverse proxy (a subprocess, one port each), which
times every call (creating the user, starting the server, the progress stream, any other
call made within the launch); overlapping calls count once. The hop to the proxy counts as
the launcher's own time, for both. In each scenario the launches alternate (ours,
BinderHub's, ours, ...) after a few warm-up launches of each; each server is deleted
after its launch, outside the measured window. Our launcher shares this process's event
loop with the benchmark's client, FakeGitHub and the registry; BinderHub has a process of
its own: if anything, that favours BinderHub.

Refs (each over --launches launches, with FakeGitHub answering at once and with 50 ms
added to each of its answers):
- ``sha``: a full 40-hex sha (ours: no GitHub call, no registry lookup; BinderHub asks
  GitHub for the commit, If-None-Match, and the registry for the manifest);
- ``branch``: ``main``, its head known to ours from push webhooks (kept in the store);
- ``unrecorded``: ``main`` with no recorded head and ours' few-second ref cache off, so
  every launch of ours asks GitHub too (BinderHub: the same as ``branch``).

    .venv/bin/python benchmarks/launch_overhead.py [--launches 30]
        [--scenarios build-sha-0,build-branch-50,...]   (entry-ref-latency; default: all)
        [--binderhub-source SPEC | --no-binderhub]

--binderhub-source (or BINDERHUB_SOURCE) is what pip installs BinderHub from: PyPI has only
0.1.0 (2018), so give git+https://github.com/jupyterhub/binderhub@<commit> or a clone's path.
Without BinderHub the table says why its column is missing.

Printed per scenario and launcher: p50/p99 of the own overhead, the Hub's API time and the
spawn (POST server + progress stream), and the GitHub, registry and Hub calls per launch;
on BinderHub's row, ours/BinderHub at p50 and p99.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from benchmarks.binderhub_baseline import (  # noqa: E402
    DEFAULT_SOURCE, BaselineUnavailable, BinderHubProcess, HubTimingProxy, ensure_binderhub, inside,
    start_binderhub)
from tests.fake_github import FakeGitHub, Fault  # noqa: E402
from tests.real_hub import free_port, make_harness, start_hub  # noqa: E402

COMMITS = "/repos/{owner}/{repo}/commits/{ref:.+}"
SSE = {"Accept": "text/event-stream"}
OURS, BINDERHUB = "ours", "binderhub"
TARGET = 1 / 3  # issue 12: ours at most a third of BinderHub's


@dataclasses.dataclass
class Sample:
    total: float
    hub: float
    spawn: float
    github_calls: int
    registry_calls: int
    hub_calls: int

    @property
    def overhead(self) -> float:
        return self.total - self.hub


@dataclasses.dataclass
class Rig:
    """What one scenario launches through."""

    ln: Any  # tests.real_hub.LauncherHarness
    proxy: HubTimingProxy
    session: aiohttp.ClientSession  # BinderHub's client (keep-alive, like the TestClient for ours)
    binderhub: BinderHubProcess | None


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def all_scenarios() -> list[str]:
    return [f"{entry}-{ref}-{ms}" for entry in ("v2", "build") for ref in ("sha", "branch", "unrecorded")
            for ms in (0, 50)]


def from_binderhub(headers: dict[str, str]) -> bool:
    """Who sent a recorded request: BinderHub's clients are tornado's (pycurl or its own), ours aiohttp's."""
    agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), "")
    return agent.startswith(("BinderHub", "Tornado/")) or "pycurl" in agent


async def read_until_ready(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    """The stream's events up to ``ready`` or ``failed`` (read as they come, then the stream is let go)."""
    events: list[dict[str, Any]] = []
    buf = ""
    async for chunk in resp.content.iter_any():
        buf += chunk.decode().replace("\r\n", "\n")
        while "\n\n" in buf:
            block, buf = buf.split("\n\n", 1)
            data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
            if data:
                events.append(json.loads(data))
                if events[-1].get("phase") in ("ready", "failed"):
                    return events
    return events


async def open_stream(rig: Rig, who: str, entry: str, path: str) -> aiohttp.ClientResponse:
    """Start one launch as a browser or an API client would; returns the open event stream."""
    if who == OURS:
        events_url = f"/build/gh/{path}"
        if entry == "v2":
            status, body, events_url = await rig.ln.open_page(f"/v2/gh/{path}")
            if status != 200 or not events_url:
                raise RuntimeError(f"our page answered {status}: {body[:300]}")
        return await rig.ln.client.get(events_url, headers=SSE)
    assert rig.binderhub is not None
    events_url = f"{rig.binderhub.url}/build/gh/{path}"
    if entry == "v2":
        async with rig.session.get(f"{rig.binderhub.url}/v2/gh/{path}") as r:
            body = await r.text()
        found = re.search(r"window\.pageConfig = (\{.*?\});", body)
        if r.status != 200 or not found:
            raise RuntimeError(f"BinderHub's page answered {r.status}: {body[:300]}")
        events_url += "?build_token=" + json.loads(found.group(1))["buildToken"]
    return await rig.session.get(events_url, headers=SSE)


async def one_launch(rig: Rig, who: str, entry: str, path: str) -> Sample:
    ln = rig.ln
    github_before, registry_before = len(ln.fake.requests), len(ln.images.requests)
    ln.client.session.cookie_jar.clear()  # a new browser each time: a new launch, not a replay
    rig.session.cookie_jar.clear()
    t0 = time.monotonic()
    resp = await open_stream(rig, who, entry, path)
    try:
        events = await read_until_ready(resp)
    finally:
        resp.close()
    t1 = time.monotonic()
    if not events or events[-1].get("phase") != "ready":
        raise RuntimeError(f"{who}'s launch did not end ready: {events[-1:]}")
    calls = [c for c in await rig.proxy.calls(rig.session, t0) if c.label == who and c.start <= t1]
    spawn = [c for c in calls if c.path.endswith("/progress")
             or c.method == "POST" and re.search(r"/server(s/[^/]*)?$", c.path)]
    user = events[-1]["url"].split("/user/", 1)[1].split("/", 1)[0]
    await ln.services.hub.delete_user(user)
    if who == OURS:
        ln.state.counter.stopped(user)
    mine = (lambda r: from_binderhub(r.headers) == (who == BINDERHUB))
    return Sample(total=t1 - t0, hub=inside(calls, t0, t1), spawn=inside(spawn, t0, t1),
                  github_calls=sum(map(mine, ln.fake.requests[github_before:])),
                  registry_calls=sum(mine(r) for r in ln.images.requests[registry_before:]
                                     if "/manifests/" in r.path),
                  hub_calls=len(calls))


async def run_scenario(rig: Rig, name: str, launches: int, warmup: int, fake: FakeGitHub
                       ) -> dict[str, list[Sample]]:
    entry, ref, ms = name.split("-")
    ln = rig.ln
    await ln.install("octo/demo")
    sha, _ = await ln.prebuild("octo/demo", "main")
    if ref == "branch":
        await ln.record_heads("octo/demo")  # what push webhooks told the store
    path = f"octo/demo/{sha if ref == 'sha' else 'main'}"
    who_all = [OURS] + ([BINDERHUB] if rig.binderhub else [])
    for _ in range(warmup):
        for who in who_all:
            await one_launch(rig, who, entry, path)
    if int(ms):
        for key in (COMMITS, "/repos/{owner}/{repo}", "/app/installations/{installation_id}/access_tokens"):
            fake.inject("*", key, *[Fault.latency(int(ms) / 1000) for _ in range(launches * 8)])
    samples: dict[str, list[Sample]] = {who: [] for who in who_all}
    try:
        for i in range(launches):
            for who in who_all:  # interleaved: ours, BinderHub's, ours, ...
                samples[who].append(await one_launch(rig, who, entry, path))
            if (i + 1) % 25 == 0:
                print(f"  {name}: {i + 1}/{launches}", file=sys.stderr, flush=True)
    finally:
        fake._faults.clear()
    return samples


async def run(launches: int, scenarios: list[str], warmup: int, source: str | None, spares: int) -> None:
    python, version, missing = None, "", ""
    if source is None:
        missing = "BinderHub column omitted: --no-binderhub was given"
    else:
        python, version = await asyncio.to_thread(ensure_binderhub, source)
    tmp = Path(tempfile.mkdtemp(prefix="launch-bench-"))
    hub = await asyncio.to_thread(start_hub, tmp / "hub", extra_services=(BINDERHUB,) if python else (),
                                  spawner="BaselineSpawner" if python else "RecordingSpawner")
    fake = FakeGitHub()
    await fake.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    proxy = HubTimingProxy(hub.url, {OURS: free_port(), BINDERHUB: free_port()}, tmp / "proxy.log")
    clients: list[TestClient] = []

    async def aiohttp_client(app: Any) -> TestClient:
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    results: dict[str, dict[str, list[Sample]]] = {}
    try:
        await proxy.start(session)
        for name in scenarios:
            ln, close = await make_harness(
                aiohttp_client, fake, tmp / name, hub=hub, hub_api_url=proxy.url(OURS) + "/hub/api",
                max_servers=1000, max_servers_per_repo=1000, launch_rate_per_minute=0,
                launch_github_calls_per_minute=-1, launch_github_calls_per_hour=-1, spare_hub_users=spares,
                attach_options={"fresh_ttl": 0.0, "keepalive": 15.0})
            bh = None
            try:
                if python:
                    bh = await start_binderhub(
                        python, tmp / name / "binderhub", port=free_port(), hub_url=hub.url,
                        hub_local=proxy.url(BINDERHUB), token=hub.service_tokens[BINDERHUB],
                        registry_url=ln.services.images.base_url, image_prefix=hub.prefix, github_api=fake.url)
                results[name] = await run_scenario(Rig(ln, proxy, session, bh), name, launches, warmup, fake)
            finally:
                if bh:
                    bh.stop()
                await close()
    finally:
        for c in clients:
            await c.close()
        await session.close()
        await fake.close()
        proxy.stop()
        hub.stop()
    report(results, launches, version, missing)


def report(results: dict[str, dict[str, list[Sample]]], launches: int, version: str, missing: str) -> None:
    print()
    print(f"launch overhead for a prebuilt image, {launches} interleaved launches per launcher and scenario "
          f"(warm caches); Hub time measured at the same proxy for both")
    print(f"BinderHub {version}" if version else missing)
    print(f"{'entry':<10}{'ref':<11}{'GitHub':>7}  {'launcher':<10}{'overhead p50':>13}{'p99':>10}"
          f"{'Hub API p50':>13}{'spawn p50':>11}{'total p50':>11}{'calls: GitHub':>15}{'registry':>10}{'Hub':>6}"
          f"{'ours/BinderHub p50 (p99)':>27}")
    entries = {"v2": "/v2/gh", "build": "/build/gh"}
    met, compared = 0, 0
    for name, by_who in results.items():
        entry, ref, ms = name.split("-")
        head = f"{entries[entry]:<10}{ref:<11}{'+' + ms + ' ms':>7}  "
        for who, samples in by_who.items():
            ov = [s.overhead * 1000 for s in samples]
            ratio = ""
            if who == BINDERHUB and by_who.get(OURS):
                ours = [s.overhead * 1000 for s in by_who[OURS]]
                r50, r99 = pct(ours, 50) / pct(ov, 50), pct(ours, 99) / pct(ov, 99)
                compared += 1
                met += r50 <= TARGET
                ratio = f"{r50:.2f} ({r99:.2f}){' ok' if r50 <= TARGET else ' NOT MET':>8}"
            print(f"{head}{('BinderHub' if who == BINDERHUB else 'ours'):<10}"
                  f"{pct(ov, 50):>10.1f} ms{pct(ov, 99):>7.1f} ms"
                  f"{pct([s.hub * 1000 for s in samples], 50):>10.1f} ms"
                  f"{pct([s.spawn * 1000 for s in samples], 50):>8.1f} ms"
                  f"{pct([s.total * 1000 for s in samples], 50):>8.1f} ms"
                  f"{statistics.mean(s.github_calls for s in samples):>15.2f}"
                  f"{statistics.mean(s.registry_calls for s in samples):>10.2f}"
                  f"{statistics.mean(s.hub_calls for s in samples):>6.2f}{ratio:>27}")
            head = " " * len(head)
    if compared:
        print(f"target (issue 12): ours <= 1/3 of BinderHub's own overhead at p50: met in {met} of {compared} "
              "scenarios")
    else:
        print(missing or "no BinderHub figures")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(all_scenarios()))
    ap.add_argument("--binderhub-source", default=os.environ.get("BINDERHUB_SOURCE") or DEFAULT_SOURCE,
                    help="what pip installs BinderHub from into .cache/binderhub-venv (a requirement, "
                         "a source checkout or a wheel; default: %(default)s)")
    ap.add_argument("--no-binderhub", action="store_true", help="measure our launcher alone")
    ap.add_argument("--spare-hub-users", type=int, default=20,
                    help="ours' SPARE_HUB_USERS (0: every launch makes its Hub user; default: %(default)s)")
    args = ap.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in all_scenarios()]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; known: {','.join(all_scenarios())}")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` still stops the Hub (finally blocks)
    try:
        asyncio.run(run(args.launches, scenarios, args.warmup, None if args.no_binderhub else args.binderhub_source,
                        args.spare_hub_users))
    except BaselineUnavailable as e:
        sys.exit(f"BinderHub, the baseline, is unavailable: {e}\n"
                 "(run with --no-binderhub to measure our launcher alone)")


if __name__ == "__main__":
    main()
