"""Benchmark: 1000 build requests over 100 repositories against the fake Kubernetes API.

Pods succeed at once (the fake's autopilot), so what is measured is the cost of
running builds, not of building: per build, the wall time and this process's
CPU time; the watch connections held (must be 1, whatever the number of builds);
and this process's resident memory. The fake runs in its own process, so its
schema validation and bookkeeping are not counted as ours.

Runs, same fake, same concurrency (MAX_CONCURRENT_BUILDS):
- baseline: the bare REST calls a build needs (create pod, follow its log to the
  end, delete it) made with plain aiohttp: the floor;
- builder: KubernetesBuilder.run for each build (shared watch, log parsing, events);
- scheduler: the requests submitted to bot.scheduler.Scheduler (store records,
  registry check, queue, cap, events), which runs them on the KubernetesBuilder;
- builder under pressure: KubernetesBuilder.run again, against a second fake that
  answers 10% of calls with 429 + Retry-After and restarts (ends every watch and
  forgets its history) every 30 s: every build must still end BUILT, with LIST
  calls per minute bounded by the list-and-watch back-off.

    .venv/bin/python benchmarks/k8s_builds.py [--builds 1000] [--repos 100] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bot.builders import k8s_objects as objs  # noqa: E402
from bot.builders.base import BuildDeferred, ImageLookup  # noqa: E402
from bot.builders.kubernetes import KubernetesBuilder  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.model import BuildJob, BuildOutcome, BuildRequest, BuildState, Phase, ProgressEvent  # noqa: E402
from bot.store.builds import build_id  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def requests_for(n: int, repos: int) -> list[BuildRequest]:
    out = []
    for i in range(n):
        repo = f"repo{i % repos:03d}"
        sha = f"{i:08x}".ljust(40, "a")  # distinct in the first 12 characters, as real shas are
        out.append(BuildRequest(owner="bench", repo=repo, sha=sha, clone_url=f"https://git.example.org/bench/{repo}",
                                installation_id=1, branch=f"b{i}"))
    return out


def job_for(req: BuildRequest, settings: Settings) -> BuildJob:
    from bot.images import effective_prefix, image_name

    image = image_name(req.owner, req.repo, req.sha, effective_prefix(settings.image_prefix, settings.registry_url))
    return BuildJob(build_id=build_id(req.owner, req.repo, req.sha, 1), request=req, image=image)


class Measure:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> "Measure":
        gc.collect()
        self.rss0 = rss_mb()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        self.rss1 = rss_mb()


async def fake_stats(session: aiohttp.ClientSession, url: str, reset: bool = False) -> dict[str, int]:
    async with session.get(f"{url}/_fake/stats", params={"reset": "1"} if reset else {}) as r:
        return await r.json()


async def quiet(session: aiohttp.ClientSession, url: str) -> None:
    """Wait until the previous run's watch has closed, then restart the fake's maximum."""
    for _ in range(100):
        if (await fake_stats(session, url))["open_watches"] == 0:
            break
        await asyncio.sleep(0.05)
    await fake_stats(session, url, reset=True)


async def run_baseline(url: str, reqs: list[BuildRequest], settings: Settings, concurrency: int) -> None:
    """The floor: create, follow the log to its end, delete; no watch, no parsing."""
    ns = settings.kube_namespace
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as s:
        async def one(req: BuildRequest) -> None:
            job = job_for(req, settings)
            body = objs.build_pod_for_job(job, settings)
            name = body["metadata"]["name"] + "-raw"
            body["metadata"]["name"] = name
            async with sem:
                async with s.post(f"{url}/api/v1/namespaces/{ns}/pods", json=body) as r:
                    assert r.status == 201, await r.text()
                async with s.get(f"{url}/api/v1/namespaces/{ns}/pods/{name}/log",
                                 params={"follow": "true"}) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                async with s.delete(f"{url}/api/v1/namespaces/{ns}/pods/{name}") as r:
                    assert r.status == 200

        await asyncio.gather(*(one(r) for r in reqs))


async def run_builder(url: str, reqs: list[BuildRequest], settings: Settings, concurrency: int) -> dict[str, Any]:
    from kubernetes_asyncio.client import Configuration

    builder = KubernetesBuilder(settings, None, configuration=Configuration(host=url))
    await builder.start()
    sem = asyncio.Semaphore(concurrency)
    events = 0

    async def emit(e: ProgressEvent) -> None:
        nonlocal events
        events += 1

    async def one(req: BuildRequest) -> BuildOutcome:
        async with sem:
            while True:
                try:
                    return await builder.run(job_for(req, settings), emit)
                except BuildDeferred as e:  # what the scheduler does: back in the queue, then again
                    await asyncio.sleep(e.retry_after or 1.0)

    try:
        outcomes = await asyncio.gather(*(one(r) for r in reqs))
    finally:
        await builder.close()
    return {"built": sum(o.phase is Phase.BUILT for o in outcomes), "events": events}


class AfterBuildImages(ImageLookup):
    """The registry as the scheduler sees it: an image exists once its build succeeded."""

    def __init__(self) -> None:
        self.images: set[str] = set()

    async def exists(self, image: str) -> bool | None:
        return image in self.images


class RecordingBuilder(KubernetesBuilder):
    """Stands in for the push: a BUILT outcome puts the image in AfterBuildImages."""

    images: AfterBuildImages

    async def run(self, job: BuildJob, emit: Any) -> BuildOutcome:
        outcome = await super().run(job, emit)
        if outcome.phase is Phase.BUILT:
            self.images.images.add(job.image)
        return outcome


async def run_scheduler(url: str, reqs: list[BuildRequest], settings: Settings) -> dict[str, Any]:
    from kubernetes_asyncio.client import Configuration

    from bot.events import EventBus
    from bot.metrics import Metrics
    from bot.scheduler import Scheduler
    from bot.services import Services
    from bot.store.schema import open_store
    from bot.store.builds import BuildStore
    from bot.store.deliveries import DeliveryStore
    from bot.store.github_state import GitHubState

    db = await open_store(settings.db_path)
    session = aiohttp.ClientSession()
    services = Services(settings=settings, db=db, session=session, deliveries=DeliveryStore(db),
                        builds=BuildStore(db), gh_state=GitHubState(db), bus=EventBus())
    services.metrics = Metrics()
    images = AfterBuildImages()
    builder = RecordingBuilder(settings, services.metrics, configuration=Configuration(host=url))
    builder.images = images
    services.images = images
    services.builder = builder
    done: dict[str, int] = {}
    finished = asyncio.Event()

    async def listener(record: Any, event: ProgressEvent) -> None:
        if event.phase.terminal_for_build:
            done[event.phase.value] = done.get(event.phase.value, 0) + 1
            if sum(done.values()) >= len(reqs):
                finished.set()

    services.bus.add_listener(listener)
    await builder.start()
    scheduler = Scheduler(services)
    services.scheduler = scheduler
    await scheduler.start()
    try:
        for req in reqs:
            await scheduler.submit(req)
        await asyncio.wait_for(finished.wait(), 600)
        left = await services.builds.in_state(BuildState.QUEUED, BuildState.RUNNING)
    finally:
        await scheduler.stop()
        await builder.close()
        await session.close()
        await db.close()
    return {"outcomes": done, "left": len(left)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=1000)
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-scheduler", action="store_true", help="skip the run through the Scheduler")
    parser.add_argument("--no-pressure", action="store_true", help="skip the run under 429s and watch restarts")
    parser.add_argument("--throttle", type=float, default=0.1)
    parser.add_argument("--restart-every", type=float, default=30.0)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)  # the retries under pressure are expected: counted, not printed

    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_k8s", "--port", "0", "--succeed"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        url = fake.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http"), "the fake did not start"
        tmp = tempfile.TemporaryDirectory()
        settings = Settings(builder="kubernetes", data_dir=Path(tmp.name), max_concurrent_builds=args.concurrency,
                            registry_url="https://registry.example.org")
        reqs = requests_for(args.builds, args.repos)
        n = len(reqs)
        print(f"{n} build requests over {args.repos} repositories, {args.concurrency} at a time; "
              f"fake Kubernetes API in its own process (pods succeed at once)\n")
        start_rss = rss_mb()
        rows = []
        async with aiohttp.ClientSession() as s:
            warm = requests_for(50, 5)  # warm up the fake (its schema cache) and the clients
            await run_baseline(url, [dataclasses.replace(r, owner="warmup") for r in warm], settings,
                               args.concurrency)
            with Measure("baseline") as m:
                await run_baseline(url, reqs, settings, args.concurrency)
            rows.append((m, {}, await fake_stats(s, url)))
            await quiet(s, url)
            with Measure("builder") as m:
                extra = await run_builder(url, reqs, settings, args.concurrency)
            stats = await fake_stats(s, url)
            assert extra["built"] == n, extra
            rows.append((m, extra, stats))
            if not args.no_scheduler:
                settings_s = Settings(builder="kubernetes", data_dir=Path(tmp.name) / "s",
                                      max_concurrent_builds=args.concurrency,
                                      registry_url="https://registry.example.org")
                settings_s.data_dir.mkdir()
                await quiet(s, url)
                with Measure("scheduler") as m:
                    extra = await run_scheduler(url, reqs, settings_s)
                rows.append((m, extra, await fake_stats(s, url)))
        print(f"{'run':<34}{'wall ms/build':>14}{'cpu ms/build':>14}{'watch conns':>13}{'RSS MB':>9}")
        labels = {"baseline": "baseline (raw REST calls)", "builder": "KubernetesBuilder.run",
                  "scheduler": "Scheduler.submit -> builder"}
        for m, extra, st in rows:
            watches = "-" if m.name == "baseline" else f"{st['max_open_watches']}"
            print(f"{labels[m.name]:<34}{m.wall / n * 1000:>14.2f}{m.cpu / n * 1000:>14.2f}{watches:>13}"
                  f"{m.rss1:>9.1f}")
        print()
        print(f"watch connections held at most: {max(r[2]['max_open_watches'] for r in rows[1:])} "
              f"(watch requests made: {rows[-1][2]['watch_requests']}, re-lists on 410: "
              f"{rows[-1][2]['expired_watches']})")
        print("scheduling overhead per build (this process's CPU beyond the raw calls): "
              f"{(rows[1][0].cpu - rows[0][0].cpu) / n * 1000:.2f} ms (builder)"
              + (f", {(rows[2][0].cpu - rows[0][0].cpu) / n * 1000:.2f} ms (scheduler + builder)"
                 if len(rows) > 2 else ""))
        print(f"resident memory: {start_rss:.1f} MB at start, {rss_mb():.1f} MB at the end, "
              f"peak {peak_rss_mb():.1f} MB; pods left in the fake: {rows[-1][2]['pods']}")
        if len(rows) > 2:
            print(f"scheduler outcomes: {json.dumps(rows[2][1]['outcomes'])}, still active: {rows[2][1]['left']}")
        if any(r[2]["max_open_watches"] != 1 for r in rows[1:]):
            raise SystemExit("FAIL: more than one watch connection")
        if not args.no_pressure:
            await pressure_run(args, reqs, rows[1])
    finally:
        fake.terminate()
        fake.wait(10)


async def pressure_run(args: argparse.Namespace, reqs: list[BuildRequest], clean: tuple) -> None:
    """The builder again, against a fake that throttles and restarts; printed beside the clean run."""
    n = len(reqs)
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_k8s", "--port", "0", "--succeed", "--throttle", str(args.throttle),
         "--restart-watches", str(args.restart_every)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        url = fake.stdout.readline().strip()  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(builder="kubernetes", data_dir=Path(tmp), max_concurrent_builds=args.concurrency,
                                registry_url="https://registry.example.org")
            with Measure("pressure") as m:
                extra = await run_builder(url, reqs, settings, args.concurrency)
        async with aiohttp.ClientSession() as s:
            st = await fake_stats(s, url)
    finally:
        fake.terminate()
        fake.wait(10)
    cm, _, cst = clean
    minutes = max(m.wall / 60, 1 / 60)
    print(f"\nunder pressure ({args.throttle:.0%} of calls 429 + Retry-After 1 s, an API restart every "
          f"{args.restart_every:g} s), side by side with the clean run:")
    print(f"{'run':<26}{'built':>8}{'wall s':>9}{'LISTs':>7}{'LISTs/min':>11}{'watch reqs':>12}{'429s':>7}")
    print(f"{'clean':<26}{n:>8}{cm.wall:>9.1f}{cst['lists']:>7}{cst['lists'] / max(cm.wall / 60, 1 / 60):>11.1f}"
          f"{cst['watch_requests']:>12}{0:>7}")
    print(f"{'429s + restarts':<26}{extra['built']:>8}{m.wall:>9.1f}{st['lists']:>7}{st['lists'] / minutes:>11.1f}"
          f"{st['watch_requests']:>12}{st['throttled']:>7}")
    if extra["built"] != n:
        raise SystemExit(f"FAIL: {n - extra['built']} builds did not end BUILT under pressure")


if __name__ == "__main__":
    asyncio.run(main())
