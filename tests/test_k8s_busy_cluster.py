"""The Kubernetes builder on a busy cluster: relists racing creates, watch back-off, a dead watch.

Each test reproduces a defect a real API server shows under load, with the
shared FakeKubernetes (LIST latency, watches a proxy keeps closing, failing calls).
"""
from __future__ import annotations

import asyncio

from bot.builders import k8s_objects as objs
from bot.builders.k8s_watch import Backoff, PodStatus, merge_list
from bot.model import Phase
from tests.test_kubernetes_builder import R2D_SUCCESS, Events, make_job


def _st(name: str, uid: str, rv: int | None, phase: str = "Pending") -> PodStatus:
    return PodStatus(name=name, uid=uid, phase=phase, resource_version=rv)


def test_a_list_snapshot_never_drops_a_pod_newer_than_itself():
    cached = {"old": _st("old", "u1", 5), "created": _st("created", "u2", 12)}
    merged, dropped = merge_list(cached, [], list_rv=10, newer_names=set(), gone=set())
    assert list(merged) == ["created"]  # rv 12 > snapshot 10: created after it
    assert [d.name for d in dropped] == ["old"]  # rv 5 <= 10 and missing: deleted


def test_a_list_snapshot_does_not_roll_back_a_newer_status_or_revive_a_deleted_pod():
    cached = {"p": _st("p", "u1", 20, "Running")}
    merged, _ = merge_list(cached, [_st("p", "u1", 15, "Pending"), _st("q", "u9", 14)], list_rv=16,
                           newer_names=set(), gone={"u9"})
    assert merged["p"].phase == "Running" and "q" not in merged


def test_without_integer_versions_what_was_learnt_during_the_list_wins():
    cached = {"a": _st("a", "u1", None), "b": _st("b", "u2", None)}
    merged, dropped = merge_list(cached, [], list_rv=None, newer_names={"a"}, gone=set())
    assert list(merged) == ["a"] and [d.name for d in dropped] == ["b"]


def test_backoff_grows_like_client_go_and_resets_after_quiet_minutes():
    b = Backoff(jitter=0.0)
    delays = [b.next(t) for t in (0, 1, 2, 3, 4, 5, 6, 7)]
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    assert b.next(7 + 121) == 0.8


async def test_a_relist_racing_a_create_keeps_the_pod_and_the_build_finishes(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    await asyncio.wait_for(builder.watch.synced.wait(), 5)
    fake_k8s.list_delay = 0.5  # the LIST's snapshot is taken on arrival, answered late
    lists = fake_k8s.lists_received
    fake_k8s.compact()
    fake_k8s.cut_watches()  # the resumed watch gets 410: relist
    await fake_k8s.wait_for(lambda: fake_k8s.lists_received > lists, timeout=10)
    job = make_job(1)
    events = Events()
    task = asyncio.create_task(builder.run(job, events))  # created while the LIST is in flight
    name = objs.pod_name(job.build_id)
    await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
    fake_k8s.list_delay = 0.0
    await fake_k8s.wait_for(lambda: builder.watch.lists >= 2, timeout=10)
    assert builder.watch.get(name) is not None, "the relist dropped the pod created after its snapshot"
    fake_k8s.set_running(name)
    fake_k8s.log(name, *R2D_SUCCESS)
    fake_k8s.succeed(name)
    outcome = await asyncio.wait_for(task, 15)
    assert outcome.phase is Phase.BUILT, outcome.reason


async def test_watches_that_close_at_once_back_off_instead_of_hammering(fake_k8s, k8s_builder):
    slept: list[float] = []
    gate = asyncio.Event()

    async def sleep(delay: float) -> None:  # records the back-off; lets six rounds through
        slept.append(delay)
        if len(slept) >= 6:
            await gate.wait()

    fake_k8s.watch_close_after = 0.0
    builder = await k8s_builder()
    builder.watch.sleep = sleep
    builder.watch.backoff = Backoff(jitter=0.0)
    await fake_k8s.wait_for(lambda: len(slept) >= 6, timeout=10)
    watches = fake_k8s.watch_requests
    await asyncio.sleep(0.3)
    assert fake_k8s.watch_requests == watches  # parked in its back-off, not reconnecting
    assert slept[:6] == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6]
    assert builder.watch.lists == 1  # an empty watch is retried from its version, not relisted
    gate.set()


async def test_health_says_the_watch_is_down_once_it_has_failed_for_a_while(fake_k8s, k8s_builder):
    now = [1000.0]
    builder = await k8s_builder()
    await asyncio.wait_for(builder.watch.synced.wait(), 5)
    watch = builder.watch
    watch.clock = lambda: now[0]
    watch.sleep = lambda delay: asyncio.sleep(0.01)
    builder.api.sleep = lambda delay: asyncio.sleep(0)
    ok, detail = await builder.health()
    assert ok
    fake_k8s.fail_next("GET", r"/pods$", 503, times=10_000)
    fake_k8s.cut_watches()
    await fake_k8s.wait_for(lambda: "503" in (watch.last_error or "") and not watch.connected)
    ok, detail = await builder.health()
    assert ok and "reconnecting" in detail  # a short outage is not an alarm
    now[0] += 61
    ok, detail = await builder.health()
    assert not ok and "failed for 61 s" in detail and "503" in detail
    fake_k8s._faults.clear()
    await fake_k8s.wait_for(lambda: watch.connected, timeout=10)
    ok, _ = await builder.health()
    assert ok


# -- API back-pressure ------------------------------------------------------------------

def test_which_api_errors_are_worth_waiting_for():
    from bot.builders.k8s_api import forbidden_hint, is_transient
    from tests.fake_k8s_routes import quota_forbidden, rbac_forbidden

    assert is_transient(429, "") and is_transient(503, "") and is_transient(0, "timeout")
    assert is_transient(403, quota_forbidden()["message"])
    assert not is_transient(403, rbac_forbidden()["message"]) and not is_transient(422, "invalid")
    hint = forbidden_hint(rbac_forbidden("create", "pods", "binder")["message"])
    assert hint.startswith("the service account system:serviceaccount:binder:binder-prebuild may not create pods")
    assert 'in namespace "binder"' in hint


async def test_429_waits_as_long_as_retry_after_says(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    builder.api.sleep = sleep
    fake_k8s.fail_next("POST", r"/pods$", 429, times=2, retry_after=7)
    job = make_job(2)
    task = asyncio.create_task(builder.run(job, Events()))
    name = objs.pod_name(job.build_id)
    await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
    assert slept == [7, 7]
    fake_k8s.set_running(name)
    fake_k8s.log(name, *R2D_SUCCESS)
    fake_k8s.succeed(name)
    assert (await asyncio.wait_for(task, 10)).phase is Phase.BUILT


async def test_a_used_up_quota_defers_the_build_and_rbac_fails_it_with_the_missing_permission(
        fake_k8s, k8s_builder):
    from bot.builders.base import BuildDeferred
    from tests.fake_k8s_routes import quota_forbidden, rbac_forbidden

    builder = await k8s_builder()

    async def sleep(delay: float) -> None:
        pass

    builder.api.sleep = sleep
    fake_k8s.fail_next("POST", r"/pods$", 403, times=100, **quota_forbidden())
    try:
        await builder.run(make_job(3), Events())
    except BuildDeferred as e:
        assert "quota" in e.message
    else:
        raise AssertionError("a used-up quota failed the build instead of deferring it")
    fake_k8s._faults.clear()
    fake_k8s.fail_next("POST", r"/pods$", 403, times=1, **rbac_forbidden())
    outcome = await builder.run(make_job(4), Events())
    assert outcome.phase is Phase.FAILED
    assert "may not create pods" in outcome.reason and "role.yaml" in outcome.reason


# -- watch events a real API server sends ------------------------------------------------

async def test_bookmarks_keep_a_quiet_watch_resumable_in_a_busy_namespace(fake_k8s, k8s_builder):
    fake_k8s.history_size = 20  # the API server keeps a short window of history
    builder = await k8s_builder()
    await asyncio.wait_for(builder.watch.synced.wait(), 5)
    await fake_k8s.wait_for(lambda: fake_k8s.open_watches == 1)
    fake_k8s.pad_history(50)  # other objects change: our version falls out of the window
    fake_k8s.bookmark()
    await fake_k8s.wait_for(lambda: builder.watch.resource_version == str(fake_k8s._rv))
    fake_k8s.cut_watches()
    await fake_k8s.wait_for(lambda: fake_k8s.watch_requests >= 2 and fake_k8s.open_watches == 1)
    assert builder.watch.lists == 1 and fake_k8s.expired_watches == 0  # resumed, not relisted
    fake_k8s.pad_history(50)  # no bookmark this time: the resume is too old, a relist follows
    builder.watch.sleep = lambda delay: asyncio.sleep(0)
    fake_k8s.cut_watches()
    await fake_k8s.wait_for(lambda: builder.watch.lists == 2, timeout=10)
    assert fake_k8s.expired_watches == 1


async def test_an_error_event_is_a_failed_watch_resumed_after_back_off(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    await asyncio.wait_for(builder.watch.synced.wait(), 5)
    await fake_k8s.wait_for(lambda: fake_k8s.open_watches == 1)
    slept: list[tuple[float, str | None]] = []

    async def sleep(delay: float) -> None:
        slept.append((delay, builder.watch.last_error))

    builder.watch.sleep = sleep
    fake_k8s.watch_error(500, "InternalError", "etcdserver: request timed out")
    await fake_k8s.wait_for(lambda: fake_k8s.watch_requests >= 2 and fake_k8s.open_watches == 1)
    assert len(slept) == 1 and "etcdserver: request timed out" in slept[0][1]  # a failure, backed off
    assert builder.watch.lists == 1  # resumed from its version, not relisted


async def test_watches_ending_at_their_timeout_resume_without_back_off_or_relist(fake_k8s, k8s_builder):
    builder = await k8s_builder(watch_timeout=1)
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    builder.watch.sleep = sleep
    await fake_k8s.wait_for(lambda: fake_k8s.watch_requests >= 3, timeout=10)
    assert slept == [] and builder.watch.lists == 1


async def test_the_kubelet_ends_a_build_at_its_active_deadline(fake_k8s, k8s_builder):
    from bot.config import Settings

    fake_k8s.enforce_deadlines = True
    fake_k8s.kubelet_seconds = 0.005  # 100 kubelet seconds pass in half a second
    builder = await k8s_builder(Settings(builder="kubernetes", build_timeout=100))
    job = make_job(31)
    task = asyncio.create_task(builder.run(job, Events()))
    name = objs.pod_name(job.build_id)
    await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
    fake_k8s.set_running(name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED and outcome.reason == "build timed out after 100 s"
