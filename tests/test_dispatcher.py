"""The dispatcher: routing, exactly-once completion, retries with backoff, crash recovery, bounds."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid

import pytest
from gidgethub.routing import Router

from bot.logs import setup_logging
from bot.store.deliveries import NewDelivery
from bot.webhooks.dispatcher import Dispatcher, GitHubUnavailable, UnavailableGitHub, retry_at
from tests import payloads
from tests.fake_clock import ManualClock


def new(name: str, *, repo: str | None = None, form: bool = False, delivery_id: str | None = None) -> NewDelivery:
    body = payloads.load(name)
    if repo:
        body = payloads.rewrite(body, repo=repo)
    headers, raw = payloads.signed(payloads.event_of(name), body, "s", delivery_id=delivery_id, form=form)
    return NewDelivery(id=headers["X-GitHub-Delivery"], event=payloads.event_of(name),
                       headers={k.lower(): v for k, v in headers.items()}, body=raw, action=body.get("action"),
                       installation_id=(body.get("installation") or {}).get("id"),
                       repo=(body.get("repository") or {}).get("full_name"))


async def until(cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


async def state(services, delivery_id: str) -> str:
    return (await services.deliveries.get(delivery_id))["state"]


def outcomes(rows) -> list[str]:
    return [r["outcome"] for r in rows]


@pytest.fixture
async def services(make_services):
    return await make_services()


@pytest.fixture
async def run(services):
    """run(router, **kw) -> a started Dispatcher, stopped at teardown."""
    started = []

    async def start(router, **kw):
        d = Dispatcher(services, router, **kw)
        await d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop(grace=1)


# ------------------------------------------------------------------ pure


def test_retry_backoff_doubles_is_capped_and_gives_up():
    kw = dict(max_attempts=5, base=2.0, cap=10.0, jitter=0.0)
    assert [retry_at(a, 100.0, **kw) for a in range(1, 6)] == [102.0, 104.0, 108.0, 110.0, None]


def test_retry_jitter_only_delays():
    assert 104.0 <= retry_at(2, 100.0, max_attempts=5, base=2.0, cap=60, jitter=0.5, rand=lambda: 0.999) <= 106.0


async def test_unavailable_github_client_fails_clearly_on_use():
    gh = UnavailableGitHub("no GitHub App credentials configured")
    with pytest.raises(GitHubUnavailable, match="no GitHub App credentials"):
        await gh.getitem("/repos/a/b")


# ------------------------------------------------------------------ routing


async def test_handler_gets_the_event_a_client_and_services_then_delivery_is_done(services, run):
    router = Router()
    seen = []

    @router.register("pull_request", action="opened")
    async def opened(event, gh, *, services):
        seen.append((event, gh, services))

    d = new("pull_request.opened")
    await services.deliveries.add_many([d])
    await run(router)
    await until(lambda: _is(services, d.id, "done"))
    [(event, gh, got_services)] = seen
    assert event.event == "pull_request" and event.delivery_id == d.id
    assert event.data["pull_request"]["head"]["sha"] == payloads.load("pull_request.opened")["pull_request"]["head"]["sha"]
    assert isinstance(gh, UnavailableGitHub) and "credentials" in gh.reason
    assert got_services is services
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["done"]


async def test_form_encoded_delivery_reaches_handlers_decoded(services, run):
    router = Router()
    seen = []

    @router.register("push")
    async def on_push(event, gh, *, services):
        seen.append(event.data["ref"])

    d = new("push.branch", form=True)
    assert d.body.startswith(b"payload=")
    await services.deliveries.add_many([d])
    await run(router)
    await until(lambda: _is(services, d.id, "done"))
    assert seen == ["refs/heads/main"]


async def test_an_event_no_handler_wants_is_still_completed(services, run):
    d = new("ping")
    await services.deliveries.add_many([d])
    await run(Router())
    await until(lambda: _is(services, d.id, "done"))


async def test_installation_client_is_used_when_the_app_is_configured(services, run):
    class FakeApp:
        def __init__(self):
            self.asked = []

        def installation_client(self, installation_id):
            self.asked.append(installation_id)
            return f"client-for-{installation_id}"

    services.github = FakeApp()
    router = Router()
    got = []

    @router.register("push")
    @router.register("ping")
    async def handler(event, gh, *, services):
        got.append((event.event, gh))

    with_inst, without = new("push.branch"), new("ping")
    await services.deliveries.add_many([with_inst, without])
    await run(router)
    await until(lambda: _all(services, [with_inst.id, without.id], "done"))
    gh = dict(got)
    assert gh["push"] == "client-for-52198374" and services.github.asked == [52198374]
    assert isinstance(gh["ping"], UnavailableGitHub) and "installation" in gh["ping"].reason


# ------------------------------------------------------------------ failures and retries


async def test_failing_handler_is_recorded_retried_with_backoff_then_dead(services, run):
    router = Router()
    calls = []

    @router.register("push")
    async def boom(event, gh, *, services):
        calls.append(time.monotonic())
        raise RuntimeError("registry said no")

    d = new("push.branch")
    await services.deliveries.add_many([d])
    await run(router, max_attempts=3, backoff_base=0.2, backoff_cap=1.0)
    await until(lambda: _is(services, d.id, "dead"))
    row = await services.deliveries.get(d.id)
    assert row["attempts"] == 3 and "RuntimeError: registry said no" in row["error"]
    attempts = await services.deliveries.attempts_of(d.id)
    assert outcomes(attempts) == ["failed", "failed", "dead"]
    assert all("registry said no" in a["error"] for a in attempts)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # exponential backoff between attempts
    m = services.metrics
    assert m.registry.get_sample_value("binder_prebuild_handler_failures_total", {"event": "push"}) == 3


async def test_a_retry_that_succeeds_completes_once(services, run):
    router = Router()
    calls = []

    @router.register("push")
    async def flaky(event, gh, *, services):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("GitHub hiccup")

    d = new("push.branch")
    await services.deliveries.add_many([d])
    await run(router, backoff_base=0.05)
    await until(lambda: _is(services, d.id, "done"))
    # a connection error is a dependency outage: it delays the delivery, it is not its failure
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["delayed", "done"]
    assert len(calls) == 2


async def test_a_failing_delivery_does_not_block_the_others(services, run):
    router = Router()

    @router.register("push")
    async def handler(event, gh, *, services):
        if event.data["ref"] == "refs/heads/main":
            raise RuntimeError("bad one")

    bad = new("push.branch", repo="a/one")
    good = [new("push.tag", repo="a/one"), new("push.forced", repo="b/two"), new("push.deleted", repo="c/three")]
    await services.deliveries.add_many([bad, *good])
    await run(router, backoff_base=60)
    await until(lambda: _all(services, [g.id for g in good], "done"))
    assert await state(services, bad.id) == "failed"


async def test_a_handler_that_hangs_times_out_and_is_retried(services, run):
    router = Router()

    @router.register("push")
    async def hang(event, gh, *, services):
        await asyncio.sleep(3600)

    d = new("push.branch")
    await services.deliveries.add_many([d])
    await run(router, handler_timeout=0.2, backoff_base=60)
    await until(lambda: _is(services, d.id, "failed"))
    assert "timed out" in (await services.deliveries.get(d.id))["error"]


async def test_an_undecodable_stored_body_is_dead_at_once(services, run):
    d = NewDelivery(id="broken-1", event="push", headers={"content-type": "application/json"}, body=b"{oops")
    await services.deliveries.add_many([d])
    await run(Router())
    await until(lambda: _is(services, d.id, "dead"))
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["dead"]


# ------------------------------------------------------------------ exactly once


async def test_interrupted_deliveries_are_rerun_once_after_restart(services, run):
    d = new("push.branch")
    await services.deliveries.add_many([d])
    [claimed] = await services.deliveries.claim(limit=1, lease_seconds=3600)  # then the process "dies"
    assert claimed.id == d.id and await state(services, d.id) == "processing"

    router = Router()
    runs = []

    @router.register("push")
    async def handler(event, gh, *, services):
        runs.append(event.delivery_id)

    await run(router)  # a new process: start() re-queues what was in flight
    await until(lambda: _is(services, d.id, "done"))
    assert runs == [d.id]
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["interrupted", "done"]
    assert (await services.deliveries.get(d.id))["attempts"] == 2


async def test_a_repositorys_deliveries_keep_arrival_order_across_a_restart(services, run):
    """Claimed-then-killed deliveries arrived first, so they run first after the restart."""
    first = [new("push.branch", repo="org/same") for _ in range(2)]
    await services.deliveries.add_many(first)
    await services.deliveries.add_many([new("push.branch", repo="org/other")])
    later = [new("push.branch", repo="org/same") for _ in range(3)]
    await services.deliveries.add_many(later)
    claimed = await services.deliveries.claim(limit=2, lease_seconds=3600)  # then the process "dies"
    assert [c.id for c in claimed] == [d.id for d in first]

    router = Router()
    order = []

    @router.register("push")
    async def handler(event, gh, *, services):
        if event.data["repository"]["full_name"] == "org/same":
            order.append(event.delivery_id)

    await asyncio.sleep(0.01)  # the restart happens later than every arrival
    await run(router, concurrency=4)
    await until(lambda: _all(services, [d.id for d in first + later], "done"))
    assert order == [d.id for d in first + later]


async def test_completion_is_fenced_by_the_claim(services):
    d = new("push.branch")
    await services.deliveries.add_many([d])
    [first] = await services.deliveries.claim(limit=1, lease_seconds=0)  # lease already over
    [second] = await services.deliveries.claim(limit=1, lease_seconds=3600)  # re-claimed by someone else
    assert (first.attempts, second.attempts) == (1, 2)
    assert await services.deliveries.finish(d.id, first.attempts) is False  # the stale claim completes nothing
    assert await services.deliveries.fail(d.id, "late", retry_at=None, attempt=first.attempts) is False
    assert await services.deliveries.finish(d.id, second.attempts) is True
    assert await services.deliveries.finish(d.id, second.attempts) is False  # and only once
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["done"]


async def test_many_deliveries_each_complete_exactly_once(services, run):
    router = Router()
    runs: dict[str, int] = {}

    @router.register("push")
    @router.register("pull_request")
    async def count(event, gh, *, services):
        runs[event.delivery_id] = runs.get(event.delivery_id, 0) + 1
        await asyncio.sleep(0.001)

    items = [new(n, repo=f"org/r{i % 7}") for i in range(40) for n in ("push.branch", "pull_request.synchronize")]
    await services.deliveries.add_many(items)
    await run(router, concurrency=5)
    await until(lambda: _all(services, [i.id for i in items], "done"), timeout=30)
    assert runs == {i.id: 1 for i in items}
    rows = await services.db.fetchall(
        "SELECT delivery_id, COUNT(*) AS n FROM delivery_attempts WHERE outcome='done' GROUP BY delivery_id")
    assert {r["delivery_id"]: r["n"] for r in rows} == {i.id: 1 for i in items}


# ------------------------------------------------------------------ scheduling


async def test_concurrency_is_bounded(services, run):
    router = Router()
    running, peak, release = 0, 0, asyncio.Event()

    @router.register("push")
    async def slow(event, gh, *, services):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    items = [new("push.branch", repo=f"org/repo{i}") for i in range(10)]
    await services.deliveries.add_many(items)
    await run(router, concurrency=3)
    await until(lambda: _true(running == 3))
    await asyncio.sleep(0.1)
    assert peak == 3
    release.set()
    await until(lambda: _all(services, [i.id for i in items], "done"))
    assert peak == 3


async def test_deliveries_of_one_repository_run_in_arrival_order_one_at_a_time(services, run):
    router = Router()
    order, running, overlap = [], set(), []

    @router.register("push")
    async def handler(event, gh, *, services):
        repo = event.data["repository"]["full_name"]
        if repo in running:
            overlap.append(repo)
        running.add(repo)
        await asyncio.sleep(0.01)
        order.append(event.delivery_id)
        running.discard(repo)

    same = [new("push.branch", repo="org/same") for _ in range(6)]
    await services.deliveries.add_many(same)
    await run(router, concurrency=6)
    await until(lambda: _all(services, [i.id for i in same], "done"))
    assert order == [i.id for i in same] and overlap == []


async def test_a_stuck_repository_does_not_hold_up_other_repositories(services, run):
    router = Router()
    release = asyncio.Event()

    @router.register("push")
    async def handler(event, gh, *, services):
        if event.data["repository"]["full_name"] == "org/stuck":
            await release.wait()

    stuck = new("push.branch", repo="org/stuck")
    others = [new("push.branch", repo=f"org/free{i}") for i in range(5)]
    await services.deliveries.add_many([stuck, *others])
    await run(router, concurrency=3)
    await until(lambda: _all(services, [o.id for o in others], "done"))
    assert await state(services, stuck.id) == "processing"
    release.set()
    await until(lambda: _is(services, stuck.id, "done"))


async def test_a_stored_delivery_wakes_an_idle_dispatcher(services, run, webhook_client, webhook_secret):
    router = Router()
    got = asyncio.Event()

    @router.register("push")
    async def handler(event, gh, *, services):
        got.set()

    await run(router, idle_poll=3600)  # it would never poll again on its own
    await asyncio.sleep(0.05)  # let it go idle
    client = await webhook_client(services)
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    assert (await client.post("/webhooks/github", data=raw, headers=headers)).status == 202
    await asyncio.wait_for(got.wait(), 10)


async def test_stop_lets_a_running_handler_finish(services):
    router = Router()
    started = asyncio.Event()

    @router.register("push")
    async def handler(event, gh, *, services):
        started.set()
        await asyncio.sleep(0.2)

    d = new("push.branch")
    await services.deliveries.add_many([d])
    disp = Dispatcher(services, router)
    await disp.start()
    await started.wait()
    await disp.stop(grace=5)
    assert await state(services, d.id) == "done"


async def test_stop_cancels_a_handler_past_the_grace_and_it_reruns_next_start(services):
    router = Router()
    started = asyncio.Event()
    runs = []

    @router.register("push")
    async def handler(event, gh, *, services):
        runs.append(1)
        started.set()
        if len(runs) == 1:
            await asyncio.sleep(3600)

    d = new("push.branch")
    await services.deliveries.add_many([d])
    disp = Dispatcher(services, router)
    await disp.start()
    await started.wait()
    await disp.stop(grace=0.1)
    assert await state(services, d.id) == "processing"
    disp = Dispatcher(services, router)
    await disp.start()
    try:
        await until(lambda: _is(services, d.id, "done"))
    finally:
        await disp.stop()
    assert len(runs) == 2


# ------------------------------------------------------------------ logs


async def test_handler_log_lines_carry_the_delivery_id(services, run):
    out = io.StringIO()
    handler_ = setup_logging("INFO", stream=out)
    router = Router()
    hlog = logging.getLogger("tests.handler")

    @router.register("push")
    async def handler(event, gh, *, services):
        hlog.info("building %s", event.data["after"][:7])

    d = new("push.branch", delivery_id=str(uuid.uuid4()))
    try:
        await services.deliveries.add_many([d])
        await run(router)
        await until(lambda: _is(services, d.id, "done"))
    finally:
        logging.getLogger().removeHandler(handler_)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    mine = [r for r in lines if r["logger"] == "tests.handler"]
    assert mine and mine[0]["delivery_id"] == d.id
    processed = [r for r in lines if r["logger"] == "bot.webhooks.dispatcher" and "processed" in r["msg"]]
    assert processed and processed[0]["delivery_id"] == d.id


# ------------------------------------------------------------------ helpers


async def _is(services, delivery_id, want):
    return await state(services, delivery_id) == want


async def _all(services, ids, want):
    for i in ids:
        if await state(services, i) != want:
            return False
    return True


async def _true(value):
    return value


async def test_while_the_receiver_is_busy_deliveries_run_one_at_a_time_after_a_pause(services, run):
    """Busy receiver: one pause of ``max_defer`` (on the dispatcher's clock, driven here), then
    deliveries one at a time without pausing again; quiet again: full concurrency."""
    router = Router()
    running, peak, started_at = 0, 0, []
    gate = asyncio.Event()
    gate.set()

    @router.register("push")
    async def handler(event, gh, *, services):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started_at.append(clock.time())
        for _ in range(5):
            await asyncio.sleep(0)  # give a second handler every chance to overlap
        await gate.wait()
        running -= 1

    clock = ManualClock()
    gauge = services.ingest
    gauge.enter()  # a request is in hand for the whole busy phase
    items = [new("push.branch", repo=f"org/busy{i}") for i in range(5)]
    await services.deliveries.add_many(items)
    t0 = clock.time()
    await run(router, concurrency=4, max_defer=0.3, clock=clock)
    await clock.wait_for_reads(5)  # the dispatcher is in its pause, polling the clock
    assert started_at == []
    await clock.advance(0.3)  # the pause is over; nothing else moves the clock from here on
    await until(lambda: _all(services, [i.id for i in items], "done"))
    assert peak == 1  # acknowledgements first: no parallel handlers while busy
    assert started_at == [t0 + 0.3] * 5  # one pause for the busy spell, not one per delivery

    gauge.leave()
    peak = 0
    gate.clear()  # hold the handlers: as many run at once as the dispatcher allows
    more = [new("push.branch", repo=f"org/quiet{i}") for i in range(8)]
    await services.deliveries.add_many(more)
    services.delivery_wakeup.set()
    await until(lambda: _true(running == 4))
    gate.set()
    await until(lambda: _all(services, [i.id for i in more], "done"))
    assert peak == 4  # quiet again: full concurrency
