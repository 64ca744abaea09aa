"""The build queue's order (issue 14): launches first, installations take turns, and the
order survives a restart. The scheduler runs over the real SQLite store and the real
RegistryClient reading the registry double, with the shared held builder and a driven clock."""
from __future__ import annotations

import asyncio

from bot.model import BuildRequest, BuildState, Phase, Trigger
from bot.queue_order import (Priority, coarse_message, installation_key, queue_order, trigger_priority,
                             waiting_message)
from tests.real_hub import free_port
from tests.test_scheduler import Harness, make_harness

A, B, C, D = 101, 202, 303, 404


def push(inst: int, n: int, *, trigger: Trigger = Trigger.PUSH, pr: int | None = None) -> BuildRequest:
    owner = f"org{inst}"
    sha = f"{inst:04d}{n:04d}".ljust(40, "a")
    return BuildRequest(owner=owner, repo=f"r{n}", sha=sha, clone_url=f"http://127.0.0.1:1/{owner}/r{n}.git",
                        installation_id=inst, branch=None if pr or trigger is Trigger.LAUNCH else "main",
                        pr_number=pr, default_branch="main", trigger=trigger)


def launch(inst: int, n: int) -> BuildRequest:
    return push(inst, n, trigger=Trigger.LAUNCH)


def who(h: Harness, job_id: str) -> str:
    job = next(j for j in h.builder.jobs if j.build_id == job_id)
    return f"{job.request.installation_id}/{job.request.repo}"


async def next_start(h: Harness, done: set[str]) -> str:
    """The build that takes the (one) slot next: wait until it is held, return its job id."""
    async with asyncio.timeout(10):
        while True:
            fresh = [b for b in h.builder.held if b not in done]
            if fresh:
                done.add(fresh[0])
                return fresh[0]
            await asyncio.sleep(0.005)


async def finish(h: Harness, job_id: str) -> None:
    """The running build takes a simulated minute, then ends (built)."""
    await h.clock.advance(60)
    h.builder.release(job_id)


async def started_in_order(h: Harness, n: int, done: set[str], first: str) -> list[str]:
    order, current = [], first
    for _ in range(n):
        await finish(h, current)
        current = await next_start(h, done)
        order.append(who(h, current))
    return order


async def test_a_launch_takes_the_next_slot_then_installations_alternate(tmp_path, registry_double):
    h = await make_harness(tmp_path, registry_double, max_builds=1, hold=True)
    try:
        done: set[str] = set()
        pushes_a = [await h.scheduler.submit(push(A, i)) for i in range(30)]
        first = await next_start(h, done)
        assert who(h, first) == f"{A}/r0"
        pushes_b = [await h.scheduler.submit(push(B, i)) for i in range(5)]
        last_a = pushes_a[-1]
        seen: dict[str, list[str]] = {"launch": [], "last_a": []}
        rec_c = None

        async def watch(image: str, key: str) -> None:
            async with h.services.bus.subscribe(image) as q:
                ready.set()
                while True:
                    event = await q.get()
                    if event.phase is Phase.WAITING and event.message.startswith("waiting:"):
                        seen[key].append(event.message)
                    if event.phase is not Phase.WAITING:
                        return

        watchers = []
        for image, key in ((h.scheduler.image_for(f"org{C}", "r0", launch(C, 0).sha), "launch"),
                           (last_a.image, "last_a")):
            ready = asyncio.Event()
            watchers.append(asyncio.create_task(watch(image, key)))
            await ready.wait()
        rec_c = await h.scheduler.submit(launch(C, 0))
        assert rec_c.state is BuildState.QUEUED  # an unbuilt commit: it waits for the one slot

        order = await started_in_order(h, 35, done, first)
        assert order[0] == f"{C}/r0"  # the person waiting goes first
        assert order[1:11] == [x for i in range(5) for x in (f"{B}/r{i}", f"{A}/r{i + 1}")]  # then turns
        assert order[11:] == [f"{A}/r{i}" for i in range(6, 30)]  # A's remainder once B has none
        h.builder.release()
        await asyncio.gather(*watchers)
        # the launch stream heard where it stood: next in line at once
        assert seen["launch"] == [waiting_message(0)]
        # a build at the back hears its place: one further back when the launch went ahead
        # (28 of A's + 5 of B's + the launch), then one step nearer per started build, to 0
        counts = [int(m.split()[1]) if m != waiting_message(0) else 0 for m in seen["last_a"]]
        assert counts[counts.index(34):] == list(range(34, -1, -1)), counts
        assert counts[:counts.index(34)] in ([], [33]), counts
        for r in [*pushes_a, *pushes_b, rec_c]:
            await h.wait_state(r.id, BuildState.BUILT)
        metrics = h.services.metrics
        assert metrics.queue_wait.labels(priority="interactive")._sum.get() == 60  # one build ahead of it
        assert metrics.queue_wait.labels(priority="push")._sum.get() > 0
    finally:
        await h.close()


async def test_the_queue_order_is_the_same_after_a_restart(tmp_path, registry_double):
    h = await make_harness(tmp_path, registry_double, max_builds=1, hold=True)
    done: set[str] = set()
    for i in range(3):
        await h.scheduler.submit(push(B, i))
    first = await next_start(h, done)
    await finish(h, first)
    second = await next_start(h, done)  # B has the slot now ...
    for i in range(4):
        await h.scheduler.submit(push(A, i))  # ... so A's builds, though newer, go before B's next

    await h.scheduler.submit(push(D, 0, trigger=Trigger.PULL_REQUEST, pr=5))
    queued = [r for r in await h.services.builds.in_state(BuildState.QUEUED)]
    before = [j.job_id for j in queue_order(queued, h.scheduler.queue.last_served)]
    assert [who_req(queued, j) for j in before][:4] == [f"{D}/r0", f"{A}/r0", f"{B}/r2", f"{A}/r1"]
    assert second
    await h.close(db=False)  # the process goes away; the queue stays in the store

    h2 = await make_harness(tmp_path, registry_double, db=h.services.db, max_builds=1, hold=True,
                            clock=h.clock)
    try:
        done2: set[str] = set()
        current = await next_start(h2, done2)  # the running build is re-attached
        assert current == second
        started = []
        for _ in range(len(before)):
            await finish(h2, current)
            current = await next_start(h2, done2)
            started.append(current)
        assert started == before
    finally:
        await h2.close()


def who_req(records, job_id: str) -> str:
    r = next(r for r in records if r.job_id == job_id)
    return f"{r.request.installation_id}/{r.repo}"


async def test_a_launch_following_a_queued_push_moves_it_up(tmp_path, registry_double):
    """A launch of a commit whose push build is queued shares that build, and lifts it."""
    h = await make_harness(tmp_path, registry_double, max_builds=1, hold=True)
    try:
        done: set[str] = set()
        for i in range(3):
            await h.scheduler.submit(push(A, i))
        first = await next_start(h, done)
        wanted = push(B, 0)
        await h.scheduler.submit(wanted)
        follower = await h.scheduler.submit(BuildRequest(
            owner=wanted.owner, repo=wanted.repo, sha=wanted.sha, clone_url=wanted.clone_url,
            installation_id=B, trigger=Trigger.LAUNCH))
        assert follower.state is BuildState.QUEUED
        await finish(h, first)
        assert who(h, await next_start(h, done)) == f"{B}/r0"
    finally:
        h.builder.release()
        await h.close()


def test_trigger_priorities():
    assert trigger_priority(Trigger.LAUNCH) < trigger_priority(Trigger.PULL_REQUEST) < trigger_priority(Trigger.PUSH)
    assert trigger_priority(Trigger.RERUN) is Priority.PULL_REQUEST
    assert trigger_priority("reconcile") is Priority.BACKGROUND  # work nobody waits for, whatever its name
    assert installation_key(None, "Octo") == "owner:octo" != installation_key(7, "octo")


def test_check_run_notes_are_exact_near_the_front_and_ranges_behind():
    assert coarse_message(3) == waiting_message(3) == "waiting: 3 builds ahead of yours"
    assert coarse_message(1) == "waiting: 1 build ahead of yours"
    assert coarse_message(0) == "waiting: yours is the next build to start"
    assert coarse_message(7) == "waiting: 6 to 10 builds ahead of yours"
    assert coarse_message(180) == "waiting: 101 to 250 builds ahead of yours"
    assert coarse_message(5000) == "waiting: more than 1000 builds ahead of yours"
    assert all("slot" not in coarse_message(n) for n in range(0, 2000, 7))  # the check run drops "slot" notes


async def until(check, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


async def test_the_launch_stream_says_where_the_build_stands(launcher):
    """GET /api/events for an unbuilt commit while the one slot is busy and another launch waits:
    the stream says 1 build ahead, then next, then the build runs (the Hub is down: it ends there)."""
    ln = await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api", max_concurrent_builds=1,
                        max_servers=-1, max_servers_per_repo=-1)
    await ln.install("octo/demo")
    installs = {"acme/busy": await ln.install("acme/busy"), "zed/also": await ln.install("zed/also")}
    scheduler, builds = ln.services.scheduler, ln.services.builds
    ln.builder.hold = True

    def other(name: str, trigger: Trigger) -> BuildRequest:
        owner, repo = name.split("/")
        return BuildRequest(owner=owner, repo=repo, sha=ln.fake.repo(name).resolve("main"),
                            clone_url=f"{ln.fake.web_url}/{name}.git", installation_id=installs[name],
                            branch="main" if trigger is Trigger.PUSH else None, trigger=trigger)

    busy = await scheduler.submit(other("acme/busy", Trigger.PUSH))
    await ln.builder.wait_held(1)
    also = await scheduler.submit(other("zed/also", Trigger.LAUNCH))  # another person's launch, first
    stream = asyncio.create_task(ln.events("/api/events/gh/octo/demo/main"))
    sha = ln.fake.repo("octo/demo").resolve("main")

    async def demo_says(text: str) -> bool:
        rec = await builds.latest_for_sha("octo", "demo", sha)
        return rec is not None and scheduler.waiting_message(rec.job_id) == text

    await until(lambda: demo_says(waiting_message(1)))
    ln.builder.release(busy.job_id)
    await until(lambda: asyncio.sleep(0, also.job_id in ln.builder.held))
    await until(lambda: demo_says(waiting_message(0)))
    ln.builder.hold = False
    ln.builder.release(also.job_id)
    status, _, events = await stream
    phases = [e["phase"] for e in events]
    waits = [e["message"] for e in events if e["message"].startswith("waiting:")]
    assert status == 200 and waits == [waiting_message(1), waiting_message(0)], events
    assert phases.index("fetching") > max(i for i, e in enumerate(events) if e["message"] == waiting_message(0))
    assert phases[-1] == "failed"  # no Hub to start the server on


async def test_a_launch_of_a_commit_whose_push_is_queued_lifts_it(launcher):
    """The launch joins the queued push build with its own (launch) record: it starts next."""
    ln = await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api", max_concurrent_builds=1,
                        max_servers=-1, max_servers_per_repo=-1)
    inst = await ln.install("octo/demo", "octo/other", "octo/third")
    scheduler = ln.services.scheduler
    ln.builder.hold = True

    def push_of(repo: str) -> BuildRequest:
        return BuildRequest(owner="octo", repo=repo, sha=ln.fake.repo(f"octo/{repo}").resolve("main"),
                            clone_url=f"{ln.fake.web_url}/octo/{repo}.git", installation_id=inst, branch="main")

    running = await scheduler.submit(push_of("other"))
    await ln.builder.wait_held(1)
    await scheduler.submit(push_of("third"))
    demo = await scheduler.submit(push_of("demo"))  # queued behind "third"
    stream = asyncio.create_task(ln.events("/api/events/gh/octo/demo/main"))
    await until(lambda: asyncio.sleep(0, ln.services.bus.subscribers(demo.image) > 0))
    await until(lambda: asyncio.sleep(0, scheduler.waiting_message(demo.job_id) == waiting_message(0)))
    ln.builder.hold = False
    ln.builder.release(running.job_id)
    status, _, events = await stream
    assert [j.request.repo for j in ln.builder.jobs][:2] == ["other", "demo"], events
    assert any("A build of this commit is queued; following it." in e["message"] for e in events)
