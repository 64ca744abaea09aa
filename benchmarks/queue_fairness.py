"""Build queue benchmark (issue 14): a launch's wait behind a burst, and who gets the slots.

The real scheduler over the real SQLite store and the real RegistryClient reading the
registry double, with the shared held builder (tests/fake_builders.InstantBuilder) and
a driven clock (tests/fake_clock.ManualClock): every build takes exactly ``--build``
simulated seconds, and the driver moves the clock from one build's end to the next,
so nothing sleeps in real time and the figures do not depend on the machine.

Each scenario runs twice, side by side: with the arrival-order queue the scheduler had
before (FIFO: the baseline) and with the new queue (``bot/queue_order.py``).

- ``launch``: one installation queues ``--burst`` pushes at once; 30 s later a person
  launches an unbuilt commit of another installation. Figure: the launch's wait for a slot.
- ``mixed``: four installations push at once (120, 40, 20 and 5 builds); figure: each
  one's share of the first ``--window`` slot starts, and its first build's wait.

    .venv/bin/python benchmarks/queue_fairness.py [--burst 200] [--slots 4] [--build 120]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestServer  # noqa: E402

from bot.build_queue import BuildQueue  # noqa: E402
from bot.model import BuildRequest, BuildState, Trigger  # noqa: E402
from bot.queue_order import QueuedJob, group_jobs  # noqa: E402
from bot.store.builds import BuildRecord  # noqa: E402
from tests.fake_clock import ManualClock  # noqa: E402
from tests.fake_registry import FakeRegistry  # noqa: E402
from tests.test_scheduler import Harness, make_harness  # noqa: E402


class FifoQueue(BuildQueue):
    """The baseline: arrival order, as the scheduler had it before (positions still published)."""

    def order(self, queued: Iterable[BuildRecord]) -> list[QueuedJob]:
        records = list(queued)
        super().order(records)
        return group_jobs(records)


def request(tag: str, inst: int, n: int, trigger: Trigger = Trigger.PUSH) -> BuildRequest:
    """Build ``n`` of installation ``inst``; ``tag`` keeps each run's images apart in the one registry."""
    owner = f"{tag}-org{inst}"
    return BuildRequest(owner=owner, repo=f"r{n}", sha=f"{inst:04d}{n:06d}".ljust(40, "b"),
                        clone_url=f"http://127.0.0.1:1/{owner}/r{n}.git", installation_id=inst,
                        branch="main" if trigger is Trigger.PUSH else None, trigger=trigger)


class Run:
    """One scheduler with its driver: builds end ``build`` simulated seconds after they start."""

    def __init__(self, h: Harness, slots: int, build: float) -> None:
        self.h, self.slots, self.build = h, slots, build
        self.started: dict[str, float] = {}  # job_id -> simulated start
        self.order: list[str] = []
        self.released: set[str] = set()

    async def settle(self) -> None:
        """Until every free slot that can be filled is filled (the scheduler took its turn)."""
        builds = self.h.services.builds
        for _ in range(20000):
            active = {r.job_id for r in await builds.in_state(BuildState.QUEUED, BuildState.RUNNING)}
            for job in self.h.builder.held:
                if job not in self.started:
                    self.started[job] = self.h.clock.time()
                    self.order.append(job)
            if not active & self.released and len(self.h.builder.held) >= min(self.slots, len(active)):
                return
            await asyncio.sleep(0.001)
        raise RuntimeError("the scheduler did not fill its slots")

    async def advance(self, seconds: float) -> None:
        """Move simulated time, ending every build that is due, and refill the slots."""
        target = self.h.clock.time() + seconds
        while True:
            await self.settle()
            due = sorted(self.started[j] + self.build for j in self.h.builder.held)
            if not due or due[0] > target:
                break
            await self.h.clock.advance(due[0] - self.h.clock.time())
            for j in list(self.h.builder.held):
                if self.started[j] + self.build <= self.h.clock.time():
                    self.h.builder.release(j)
                    self.released.add(j)
            await asyncio.sleep(0)
        await self.h.clock.advance(target - self.h.clock.time())
        await self.settle()

    async def drain(self) -> None:
        while self.h.builder.held:
            await self.advance(self.build)


async def harness(tmp: Path, registry: tuple[FakeRegistry, str], slots: int, fifo: bool) -> Harness:
    h = await make_harness(tmp, registry, max_builds=slots, hold=True, clock=ManualClock())
    if fifo:
        h.scheduler.queue = FifoQueue(h.services)
    return h


async def launch_scenario(tmp: Path, registry: tuple[FakeRegistry, str], fifo: bool, burst: int, slots: int,
                          build: float) -> float:
    tag = f"launch-{'fifo' if fifo else 'queue'}"
    h = await harness(tmp, registry, slots, fifo)
    try:
        run = Run(h, slots, build)
        for i in range(burst):
            await h.scheduler.submit(request(tag, 1, i))
        await run.advance(30)
        launch = await h.scheduler.submit(request(tag, 9, 0, Trigger.LAUNCH))
        created = launch.created_at
        while launch.job_id not in run.started:
            await run.advance(build)
        return run.started[launch.job_id] - created
    finally:
        h.builder.release()
        await h.close()


async def mixed_scenario(tmp: Path, registry: tuple[FakeRegistry, str], fifo: bool, sizes: dict[int, int],
                         slots: int, build: float, window: int) -> tuple[dict[int, float], dict[int, float]]:
    tag = f"mixed-{'fifo' if fifo else 'queue'}"
    h = await harness(tmp, registry, slots, fifo)
    try:
        run = Run(h, slots, build)
        jobs: dict[str, int] = {}
        t0 = h.clock.time()
        # each installation's burst arrives whole, the biggest first
        for inst, n in sizes.items():
            for i in range(n):
                rec = await h.scheduler.submit(request(tag, inst, i))
                jobs[rec.job_id] = inst
        await run.drain()
        first = run.order[:window]
        share = {inst: sum(1 for j in first if jobs[j] == inst) / len(first) for inst in sizes}
        first_wait = {inst: min(run.started[j] for j, i in jobs.items() if i == inst) - t0 for inst in sizes}
        return share, first_wait
    finally:
        h.builder.release()
        await h.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--build", type=float, default=120.0, help="simulated seconds per build")
    ap.add_argument("--window", type=int, default=40, help="slot starts counted for the shares")
    args = ap.parse_args()
    fake = FakeRegistry()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    registry = (fake, str(server.make_url("")).rstrip("/"))
    try:
        with tempfile.TemporaryDirectory() as d:
            waits = {}
            for name, fifo in (("fifo", True), ("queue", False)):
                waits[name] = await launch_scenario(Path(d) / f"l-{name}", registry, fifo, args.burst, args.slots,
                                                    args.build)
            sizes = {1: 120, 2: 40, 3: 20, 4: 5}
            mixed = {}
            for name, fifo in (("fifo", True), ("queue", False)):
                mixed[name] = await mixed_scenario(Path(d) / f"m-{name}", registry, fifo, sizes, args.slots,
                                                   args.build, args.window)
    finally:
        await server.close()

    print(f"build slots {args.slots}, every build {args.build:g} simulated s\n")
    print(f"launch behind {args.burst} queued pushes of one installation (simulated s until its build starts)")
    print(f"  {'':28}{'FIFO (before)':>16}{'new queue':>14}")
    print(f"  {'launch wait':28}{waits['fifo']:>16.0f}{waits['queue']:>14.0f}")
    print(f"\nmixed burst {dict(sizes)} builds per installation: share of the first {args.window} slot starts,"
          " and when each installation's first build started (simulated s)")
    print(f"  {'installation':14}{'builds':>8}{'share FIFO':>12}{'share new':>11}{'first FIFO':>12}{'first new':>11}")
    for inst, n in sizes.items():
        print(f"  {inst:<14}{n:>8}{mixed['fifo'][0][inst]:>12.0%}{mixed['queue'][0][inst]:>11.0%}"
              f"{mixed['fifo'][1][inst]:>12.0f}{mixed['queue'][1][inst]:>11.0f}")
    spread = {k: statistics.pstdev(v[0].values()) for k, v in mixed.items()}
    print(f"  {'spread (pstdev of shares)':38}{spread['fifo']:>8.2f}{spread['queue']:>11.2f}")


if __name__ == "__main__":
    asyncio.run(main())
