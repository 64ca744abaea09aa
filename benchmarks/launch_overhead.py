"""Launch overhead benchmark: the launcher's own time for a prebuilt image, beside the Hub's spawn time.

A real JupyterHub (tests/real_hub.py: configurable-http-proxy, real
jupyterhub-singleuser processes) and the launcher (the app's store, scheduler and
EventBus, FakeGitHub for GitHub) in this process. Each launch is made through one of
the two entry points, until the ``ready`` event:

- ``v2``: a browser's click: GET the /v2/gh/... page, then the event stream it opens;
- ``build``: BinderHub's launch API, GET /build/gh/... (what thebe and the Python client read).

The launcher's own overhead is that wall time minus the time spent inside Hub API calls
(HubClient times every call: creating the user, starting the server, its progress
stream, and the server count when it is read). Launches run one after another, with
warm caches (a few warm-up launches first); each server is deleted after its launch,
outside the measured window.

Refs (each over --launches launches, with FakeGitHub answering at once and with 50 ms
added to each of its answers):
- ``sha``: a full 40-hex sha; no GitHub call and no registry lookup at all;
- ``branch``: ``main`` of an installed repository, its head known from push webhooks
  (kept in the store): no GitHub call either;
- ``unrecorded``: ``main`` with no recorded head and the few-second ref cache off, so
  every launch asks GitHub (If-None-Match, answered 304): the cost a branch launch had
  before heads were kept, measured in the same run as the baseline for ``branch``.

    .venv/bin/python benchmarks/launch_overhead.py [--launches 30]
        [--scenarios v2-sha-0,v2-branch-0,...]   (entry-ref-latency; default: all)

Printed per scenario: p50/p99 of the launcher's overhead, of the Hub's API time and of
the spawn (POST server + progress stream), and the GitHub, registry and Hub calls per launch.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from tests.fake_github import FakeGitHub, Fault  # noqa: E402
from tests.real_hub import make_harness, start_hub  # noqa: E402

COMMITS = "/repos/{owner}/{repo}/commits/{ref:.+}"


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


async def one_launch(ln: Any, entry: str, path: str) -> Sample:
    hub_client = ln.services.hub
    github_before = len(ln.fake.requests)
    registry_before = len(ln.images.manifest_requests())
    ln.client.session.cookie_jar.clear()  # a new browser each time: a new launch, not a replay
    t0 = time.perf_counter()
    if entry == "v2":
        status, body, events_url = await ln.open_page(f"/v2/gh/{path}")
        if status != 200:
            raise RuntimeError(f"page answered {status}: {body[:300]}")
    else:
        events_url = f"/build/gh/{path}"
    st, _, events = await ln.events(events_url)
    t1 = time.perf_counter()
    if not events or events[-1]["phase"] != "ready":
        raise RuntimeError(f"launch did not end ready: {events[-1:]}")
    calls = [c for c in hub_client.calls if t0 <= c.started <= t1]
    hub_time = sum(c.seconds for c in calls)
    spawn = sum(c.seconds for c in calls if c.method == "POST" and c.path.endswith("/server")
                or c.path.endswith("/progress"))
    user = events[-1]["url"].split("/user/", 1)[1].split("/", 1)[0]
    await hub_client.delete_user(user)
    ln.state.counter.stopped(user)
    return Sample(total=t1 - t0, hub=hub_time, spawn=spawn, github_calls=len(ln.fake.requests) - github_before,
                  registry_calls=len(ln.images.manifest_requests()) - registry_before, hub_calls=len(calls))


async def run(launches: int, scenarios: list[str], warmup: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="launch-bench-"))
    hub = await asyncio.to_thread(start_hub, tmp / "hub")
    fake = FakeGitHub()
    await fake.start()
    clients: list[TestClient] = []

    async def aiohttp_client(app: Any) -> TestClient:
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    results: dict[str, list[Sample]] = {}
    try:
        for name in scenarios:
            entry, ref, ms = name.split("-")
            latency = int(ms) / 1000
            ln, close = await make_harness(
                aiohttp_client, fake, tmp / name, hub=hub, max_servers=1000, max_servers_per_repo=1000,
                launch_rate_per_minute=0, launch_github_calls_per_minute=-1, launch_github_calls_per_hour=-1,
                attach_options={"fresh_ttl": 0.0, "keepalive": 15.0})
            try:
                await ln.install("octo/demo")
                sha, _ = await ln.prebuild("octo/demo", "main")
                if ref == "branch":
                    await ln.record_heads("octo/demo")  # what push webhooks told the store
                path = f"octo/demo/{sha if ref == 'sha' else 'main'}"
                for _ in range(warmup):
                    await one_launch(ln, entry, path)
                if latency:
                    for key in (COMMITS, "/repos/{owner}/{repo}",
                                "/app/installations/{installation_id}/access_tokens"):
                        fake.inject("*", key, *[Fault.latency(latency) for _ in range(launches * 4)])
                samples = []
                for i in range(launches):
                    samples.append(await one_launch(ln, entry, path))
                    if (i + 1) % 25 == 0:
                        print(f"  {name}: {i + 1}/{launches}", file=sys.stderr, flush=True)
                results[name] = samples
                fake._faults.clear()
            finally:
                await close()
    finally:
        for c in clients:
            await c.close()
        await fake.close()
        hub.stop()

    print()
    print(f"launch overhead for a prebuilt image, {launches} sequential launches per scenario (warm caches)")
    print(f"{'entry':<10}{'ref':<12}{'GitHub':>8}{'overhead p50':>14}{'p99':>10}{'Hub API p50':>13}"
          f"{'spawn p50':>11}{'total p50':>11}{'calls/launch: GitHub':>22}{'registry':>10}{'Hub':>6}")
    entries = {"v2": "/v2/gh", "build": "/build/gh"}
    for name, samples in results.items():
        entry, ref, ms = name.split("-")
        ov = [s.overhead * 1000 for s in samples]
        hb = [s.hub * 1000 for s in samples]
        sp = [s.spawn * 1000 for s in samples]
        tot = [s.total * 1000 for s in samples]
        gh = statistics.mean(s.github_calls for s in samples)
        reg = statistics.mean(s.registry_calls for s in samples)
        hc = statistics.mean(s.hub_calls for s in samples)
        print(f"{entries[entry]:<10}{ref:<12}{'+' + ms + ' ms':>8}{pct(ov, 50):>11.1f} ms{pct(ov, 99):>7.1f} ms"
              f"{pct(hb, 50):>10.1f} ms{pct(sp, 50):>8.1f} ms{pct(tot, 50):>8.1f} ms{gh:>22.2f}{reg:>10.2f}{hc:>6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(all_scenarios()))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` still stops the Hub (finally blocks)
    asyncio.run(run(args.launches, [s.strip() for s in args.scenarios.split(",") if s.strip()], args.warmup))


if __name__ == "__main__":
    main()
