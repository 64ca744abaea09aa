"""Launch overhead benchmark: the launcher's own time for a prebuilt image, beside the Hub's spawn time.

A real JupyterHub (tests/real_hub.py: configurable-http-proxy, real
jupyterhub-singleuser processes) and the launcher (the app's store, scheduler and
EventBus, FakeGitHub for GitHub) in this process. Each launch is a browser's: GET
the /v2/gh/... page, then its event stream until the ``ready`` event. The launcher's
own overhead is that wall time minus the time spent inside Hub API calls (HubClient
times every call: creating the user, starting the server, its progress stream,
counting servers for the quotas). Launches run one after another, with warm caches
(a few warm-up launches first); each server is deleted after its launch, outside
the measured window.

Scenarios (each over --launches launches):
- ``sha``: a full 40-hex sha; no GitHub call and no registry lookup at all;
- ``branch``: ``main`` with the fresh-cache TTL at 0, so every launch revalidates the
  ref with GitHub (If-None-Match, answered 304), once with FakeGitHub answering at
  once and once with 50 ms added to each of its answers.

    .venv/bin/python benchmarks/launch_overhead.py [--launches 100] [--scenarios sha,branch-0,branch-50]

The figures printed: p50/p99 of the launcher's overhead, of the Hub's API time and
of the spawn (POST server + progress stream) per scenario, GitHub calls per launch.
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


async def one_launch(ln: Any, path: str) -> Sample:
    hub_client = ln.services.hub
    github_before = len(ln.fake.requests)
    ln.client.session.cookie_jar.clear()  # a new browser each time: a new launch, not a replay
    t0 = time.perf_counter()
    status, body, events_url = await ln.open_page(path)
    if status != 200:
        raise RuntimeError(f"page answered {status}: {body[:300]}")
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
    return Sample(total=t1 - t0, hub=hub_time, spawn=spawn, github_calls=len(ln.fake.requests) - github_before)


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
            full_sha = name == "sha"
            latency = 0.05 if name.endswith("-50") else 0.0
            ln, close = await make_harness(
                aiohttp_client, fake, tmp / name, hub=hub, max_servers=1000, max_servers_per_repo=1000,
                launch_rate_per_minute=0, attach_options={"fresh_ttl": 0.0, "keepalive": 15.0})
            try:
                await ln.install("octo/demo")
                sha, _ = await ln.prebuild("octo/demo", "main")
                path = f"/v2/gh/octo/demo/{sha if full_sha else 'main'}"
                for _ in range(warmup):
                    await one_launch(ln, path)
                if latency:
                    for key in (COMMITS, "/repos/{owner}/{repo}",
                                "/app/installations/{installation_id}/access_tokens"):
                        fake.inject("*", key, *[Fault.latency(latency) for _ in range(launches * 4)])
                samples = []
                for i in range(launches):
                    samples.append(await one_launch(ln, path))
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
    print(f"{'scenario':<28}{'overhead p50':>14}{'p99':>10}{'Hub API p50':>14}{'p99':>10}"
          f"{'spawn p50':>12}{'p99':>10}{'total p50':>12}{'GitHub calls':>14}")
    labels = {"sha": "full sha (no GitHub call)", "branch-0": "branch, GitHub at once",
              "branch-50": "branch, GitHub +50 ms"}
    for name, samples in results.items():
        ov = [s.overhead * 1000 for s in samples]
        hb = [s.hub * 1000 for s in samples]
        sp = [s.spawn * 1000 for s in samples]
        tot = [s.total * 1000 for s in samples]
        gh = statistics.mean(s.github_calls for s in samples)
        print(f"{labels.get(name, name):<28}{pct(ov, 50):>11.1f} ms{pct(ov, 99):>7.1f} ms"
              f"{pct(hb, 50):>11.1f} ms{pct(hb, 99):>7.1f} ms{pct(sp, 50):>9.1f} ms{pct(sp, 99):>7.1f} ms"
              f"{pct(tot, 50):>9.1f} ms{gh:>14.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--scenarios", default="sha,branch-0,branch-50")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` still stops the Hub (finally blocks)
    asyncio.run(run(args.launches, [s.strip() for s in args.scenarios.split(",") if s.strip()], args.warmup))


if __name__ == "__main__":
    main()
