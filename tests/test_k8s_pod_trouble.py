"""Build pods in trouble on a busy cluster: they cannot start, they are evicted, their node is lost.

Each case ends the build within a bounded time with the real reason, says that
reason while it waits, and leaves no pod behind (force-deleting where a dead
kubelet will never confirm a deletion).
"""
from __future__ import annotations

import asyncio
import time

import pytest

from bot.builders.base import BuildDeferred, build_deadlines
from bot.builders.k8s_status import PodStatus, pod_status, start_problem
from bot.config import Settings
from bot.model import Phase
from tests.test_kubernetes_builder import R2D_SUCCESS, start_run, make_job


def _event(reason: str, message: str, ts: str = "2026-01-01T00:00:00Z") -> dict:
    return {"type": "Warning", "reason": reason, "message": message, "lastTimestamp": ts}


PENDING = PodStatus(name="p", uid="u", phase="Pending", container_state="waiting",
                    container_reason="ContainerCreating")


@pytest.mark.parametrize("status, events, expected", [
    (PodStatus(name="p", uid="u", phase="Pending", unschedulable="0/3 nodes are available: 3 Insufficient memory."),
     [], "no node can run the build pod: 0/3 nodes are available: 3 Insufficient memory."),
    (PENDING, [_event("FailedMount", 'MountVolume.SetUp failed for volume "engine-socket" : hostPath type check '
                                     "failed: /var/run/docker.sock is not a socket file")],
     "the build socket /var/run/docker.sock does not exist on the node"),
    (PENDING, [_event("FailedMount", 'MountVolume.SetUp failed for volume "push" : secret "registry-push" not found')],
     'the secret "registry-push" the build pod mounts does not exist'),
    (PodStatus(name="p", uid="u", phase="Pending", container_state="waiting", container_reason="ImagePullBackOff",
               container_message='Back-off pulling image "quay.io/x/r2d:bad"'), [],
     'the node cannot pull the builder image (ImagePullBackOff): Back-off pulling image "quay.io/x/r2d:bad"'),
    (PodStatus(name="p", uid="u", phase="Pending", container_state="waiting",
               container_reason="CreateContainerConfigError", container_message='secret "gh" not found'), [],
     'the build container cannot be set up (CreateContainerConfigError): secret "gh" not found'),
    (PENDING, [], None),
])
def test_why_a_pod_has_not_started_in_words(status, events, expected):
    problem = start_problem(status, events)
    assert (problem is None) if expected is None else problem.startswith(expected), problem


def test_the_newest_event_wins_and_started_pods_have_no_problem():
    events = [_event("FailedScheduling", "0/3 nodes: old", "2026-01-01T00:00:00Z"),
              _event("FailedMount", "MountVolume.SetUp failed: timeout", "2026-01-01T00:05:00Z")]
    assert start_problem(PENDING, events).startswith("the build pod cannot mount a volume")
    assert start_problem(PodStatus(name="p", uid="u", phase="Running", container_state="running"), events) is None


def test_conditions_are_read_off_the_pod():
    st = pod_status({"metadata": {"name": "p", "uid": "u", "deletionTimestamp": "2026-01-01T00:00:30Z"},
                     "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z", "conditions": [
                         {"type": "PodScheduled", "status": "True"},
                         {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                          "message": "preempted by a higher priority pod"}]}})
    assert st.disruption == "PreemptionByScheduler: preempted by a higher priority pod"
    assert st.unschedulable is None and st.start_time is not None and st.deleting and st.deletion_at


def test_one_deadline_orders_every_timer():
    d = build_deadlines(Settings(build_timeout=3600, build_start_timeout=600))
    assert (d.start, d.run) == (600, 3600)
    assert d.start + d.run < d.pod < d.backstop  # the scheduler never kills a pod before its own deadline


async def test_an_unschedulable_pod_ends_in_bounded_time_with_the_schedulers_reason(fake_k8s, k8s_builder):
    builder = await k8s_builder(Settings(builder="kubernetes", build_start_timeout=1), pending_poll=0.05)
    task, name, events = await start_run(builder, fake_k8s, make_job(11))
    fake_k8s.unschedulable(name, "0/3 nodes are available: 3 Insufficient memory.")
    await fake_k8s.wait_for(lambda: any("Insufficient memory" in m for m in events.messages))
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED
    assert outcome.reason == ("the build pod did not start within 1 s: no node can run the build pod: "
                              "0/3 nodes are available: 3 Insufficient memory.")
    await fake_k8s.wait_for(lambda: name not in fake_k8s.pods)


async def test_a_missing_build_socket_is_named_from_the_pods_events(fake_k8s, k8s_builder):
    now = [0.0]
    builder = await k8s_builder(Settings(builder="kubernetes", build_start_timeout=600), pending_poll=0.05,
                                clock=lambda: now[0])
    task, name, events = await start_run(builder, fake_k8s, make_job(12))
    await fake_k8s.wait_for(lambda: events.messages)  # following the pod (its clock started)
    fake_k8s.scheduled(name)
    fake_k8s.event(name, "FailedMount", 'MountVolume.SetUp failed for volume "engine-socket" : hostPath type '
                                        "check failed: /var/run/docker.sock is not a socket file")
    now[0] = 10.0  # pending past EVENTS_AFTER: the builder reads the Events
    await fake_k8s.wait_for(lambda: any("/var/run/docker.sock does not exist" in m for m in events.messages))
    assert not task.done()  # waiting, and saying why
    now[0] = 601.0
    outcome = await asyncio.wait_for(task, 10)
    assert "did not start within 600 s: the build socket /var/run/docker.sock does not exist" in outcome.reason
    assert any("involvedObject.name" in p for _, p in fake_k8s.requests if "/events" in p)


async def test_an_evicted_build_is_built_again_once(fake_k8s, k8s_builder):
    fake_k8s.graceful_deletes = True
    builder = await k8s_builder()
    job = make_job(13)
    task, name, events = await start_run(builder, fake_k8s, job)
    fake_k8s.set_running(name)
    fake_k8s.disrupt(name, "EvictionByEvictionAPI", "Eviction API: evicting")
    with pytest.raises(BuildDeferred) as e:
        await asyncio.wait_for(task, 10)
    assert "evicted (EvictionByEvictionAPI: Eviction API: evicting)" in e.value.message
    await fake_k8s.wait_for(lambda: name not in fake_k8s.pods)
    task, name, events = await start_run(builder, fake_k8s, job)  # the scheduler runs it again
    fake_k8s.set_running(name)
    fake_k8s.disrupt(name, "PreemptionByScheduler", "preempted")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED and "again; not retrying" in outcome.reason


async def test_a_lost_node_ends_the_build_and_force_deletes_its_pod(fake_k8s, k8s_builder):
    now = [0.0]
    builder = await k8s_builder(pending_poll=0.05, node_lost_timeout=300, clock=lambda: now[0])
    task, name, events = await start_run(builder, fake_k8s, make_job(14))
    await fake_k8s.wait_for(lambda: events.messages)
    fake_k8s.set_running(name)
    fake_k8s.log(name, *R2D_SUCCESS[:2])
    fake_k8s.node_lost(name)
    await fake_k8s.wait_for(lambda: builder.watch.get(name).phase == "Unknown")
    await asyncio.sleep(0.2)
    assert not task.done()  # a node can come back: not yet
    now[0] = 301.0
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED and "stopped answering" in outcome.reason
    await fake_k8s.wait_for(lambda: name not in fake_k8s.pods)  # only a grace-0 delete removes it
    assert any(m == "DELETE" and "gracePeriodSeconds=0" in p for m, p in fake_k8s.requests)


async def test_the_cleaner_force_deletes_pods_stuck_terminating(fake_k8s, k8s_builder):
    builder = await k8s_builder(cleaner_interval=3600)
    task, name, events = await start_run(builder, fake_k8s, make_job(15))
    fake_k8s.set_running(name)
    fake_k8s.node_lost(name)
    fake_k8s.delete_gracefully(name, 30)  # someone deleted it; its kubelet will never confirm
    await fake_k8s.wait_for(lambda: builder.watch.get(name) and builder.watch.get(name).deleting)
    assert await builder.clean(now=time.time() + 10) == []  # within its grace period
    assert name in fake_k8s.pods
    assert await builder.clean(now=time.time() + 30 + 31) == [name]
    await fake_k8s.wait_for(lambda: name not in fake_k8s.pods)
    task.cancel()
