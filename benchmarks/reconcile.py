"""Benchmark: what recovery costs. GitHub is tests/fake_github.FakeGitHub on loopback.

1. One reconcile round over N installed repositories (default 100; each with its
   default branch and one open pull request), GitHub requests and wall time:
   - cold: nothing known yet (every head is submitted; builds are instant);
   - unchanged: nothing changed since the last round: every list answers 304;
   - changed: the same after new commits on K repositories (default 10);
   - baseline, measured in the same run: the unchanged round again without ETags
     (plain GETs, every answer a 200 counted against the rate limit).
   "counted" is what GitHub would charge against the installation's quota
   (a 304 to a conditional request is free).
2. Restart to the last missed commit's check run (test (a) of issue 13): two pushes
   and a pull request sent while the service is down fail at GitHub; the service
   starts, asks for them again and reports them. Baseline, same run: the same three
   deliveries sent while the service is up, until their check runs are complete.

    .venv/bin/python benchmarks/reconcile.py [--repos 100] [--changed 10]
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

import bot.app  # noqa: E402
from bot.appkeys import SERVICES  # noqa: E402
from bot.logs import setup_logging  # noqa: E402
from bot.recovery.service import Timing  # noqa: E402
from bot.registry import RegistryClient  # noqa: E402
from tests.fake_builders import InstantBuilder  # noqa: E402
from tests.fake_registry import FakeRegistry  # noqa: E402
from tests.fake_github import FakeGitHub, settings_for  # noqa: E402
from tests.feedback_harness import FAST_RETRIES, FORK, REPO, Bot  # noqa: E402

IDLE = Timing(start_delay=1e6, prune_every=1e6)
QUICK = Timing(start_delay=0.05, reconcile_delay=1e6, recheck=0.2, redeliver_pace=0.0, prune_every=1e6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoCache(dict):
    """An ETag cache that keeps nothing: every GET is unconditional (the baseline)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


async def start_service(fake: FakeGitHub, data: Path, timing: Timing) -> tuple[web.AppRunner, Any, str]:
    """The service (real create_app), its builds pushing to a FakeRegistry read by the real RegistryClient."""
    registry = FakeRegistry()
    registry_runner = web.AppRunner(registry.app())
    await registry_runner.setup()
    registry_port = free_port()
    await web.TCPSite(registry_runner, "127.0.0.1", registry_port).start()
    registry_url = f"http://127.0.0.1:{registry_port}"
    settings = settings_for(fake, data, public_url="http://binder.test", registry_url=registry_url)
    app = bot.app.create_app(settings, builder=lambda s: InstantBuilder(registry),
                             images=lambda s: RegistryClient(s.session, registry_url), recovery=timing)
    app.on_cleanup.append(lambda _app: registry_runner.cleanup())
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    services = app[SERVICES]
    services.github.policy = FAST_RETRIES
    return runner, services, f"http://127.0.0.1:{port}/webhooks/github"


async def settle(services: Any, timeout: float = 120.0) -> None:
    from bot.model import BuildState

    deadline = time.monotonic() + timeout
    stable = 0
    while stable < 3:
        busy = await services.deliveries.depth() or await services.builds.in_state(BuildState.QUEUED,
                                                                                   BuildState.RUNNING)
        if not busy:
            await services.feedback.drain()
            stable += 1
        else:
            stable = 0
        if time.monotonic() > deadline:
            raise RuntimeError("did not settle")
        await asyncio.sleep(0.02)


def costs(fake: FakeGitHub, since: int) -> dict[str, int]:
    recs = fake.requests[since:]
    return {"requests": len(recs), "304": sum(r.status == 304 for r in recs),
            "counted": sum(r.status != 304 for r in recs)}


async def reconcile_rounds(n: int, changed: int) -> list[tuple[str, dict[str, int], float]]:
    fake = FakeGitHub()
    await fake.start()
    names = [f"bench-org/repo{i:03d}" for i in range(n)]
    for i, name in enumerate(names):
        fake.add_repo(name)
        head = fake.add_commit(name, {"requirements.txt": f"numpy # {i}\n"}, branch="pr-branch", message="PR")
        fake.add_pull(name, 1, head_sha=head, head_ref="pr-branch")
    fake.add_installation(names, account="bench-org")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runner, services, _ = await start_service(fake, Path(tmp), IDLE)
        reconciler = services.recovery.reconciler
        try:
            for label in ("cold", "unchanged"):
                before, started = len(fake.requests), time.perf_counter()
                await reconciler.round()
                await settle(services)
                rows.append((label, costs(fake, before), time.perf_counter() - started))
            for name in names[:changed]:
                fake.add_commit(name, {"requirements.txt": "numpy==2\n"}, branch="main", message="Bump")
            before, started = len(fake.requests), time.perf_counter()
            await reconciler.round()
            await settle(services)
            rows.append((f"{changed} changed", costs(fake, before), time.perf_counter() - started))
            kept = reconciler.etags
            reconciler.etags = NoCache()
            before, started = len(fake.requests), time.perf_counter()
            await reconciler.round()
            await settle(services)
            rows.append(("baseline: unchanged, no ETags", costs(fake, before), time.perf_counter() - started))
            reconciler.etags = kept
        finally:
            await runner.cleanup()
            await fake.close()
    return rows


def runs_done(fake: FakeGitHub, shas: list[str]) -> bool:
    return all(any(r["name"] == "Binder" and r["status"] == "completed" for r in fake.check_runs_for(REPO, s))
               for s in shas)


async def missed_then_restart(down: bool) -> float:
    """Seconds from (re)start (down) or from the first send (up) to the last of three check runs."""
    fake = FakeGitHub()
    await fake.start()
    inst = fake.add_installation([REPO])
    fake.add_repo(FORK)
    offline = Bot(fake, None, None, None, None, inst, None)  # payload helpers only
    shas = [offline.commit("one", branch="main"), offline.commit("two", branch="add-altair"),
            offline.commit("three", branch="try-seaborn")]
    sends = [("push", offline.push(shas[0], branch="main")), ("push", offline.push(shas[1], branch="add-altair")),
             ("pull_request", offline.pr("opened", shas[2]))]
    with tempfile.TemporaryDirectory() as tmp:
        if down:
            fake.hook_url = None  # nothing listens: every delivery fails at GitHub
            for event, body in sends:
                await fake.send_webhook(event, body)
            started = time.perf_counter()
            runner, services, url = await start_service(fake, Path(tmp), QUICK)
            fake.hook_url = url
        else:
            runner, services, url = await start_service(fake, Path(tmp), IDLE)
            fake.hook_url = url
            started = time.perf_counter()
            for event, body in sends:
                await fake.send_webhook(event, body)
        try:
            while not runs_done(fake, shas):
                if time.perf_counter() - started > 120:
                    raise RuntimeError("the check runs never completed")
                await asyncio.sleep(0.01)
            return time.perf_counter() - started
        finally:
            await runner.cleanup()
            await fake.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--changed", type=int, default=10)
    args = parser.parse_args()
    setup_logging("ERROR")
    print(f"reconcile round over {args.repos} installed repositories (each: default branch + one open PR)")
    print(f"{'round':32} {'requests':>9} {'304':>6} {'counted':>8} {'wall s':>8}")
    for label, c, wall in await reconcile_rounds(args.repos, args.changed):
        print(f"{label:32} {c['requests']:>9} {c['304']:>6} {c['counted']:>8} {wall:>8.2f}")
    print()
    up = await missed_then_restart(down=False)
    down = await missed_then_restart(down=True)
    print("three deliveries (two pushes, one PR opened) until their last check run completes")
    print(f"  baseline, sent while the service is up:          {up:6.2f} s")
    print(f"  sent while down, from the restart (redelivered): {down:6.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
