"""The scheduler driving KubernetesBuilder against the fake API server (real wire format).

Scenarios of issue 3: dedupe, the concurrency cap, supersede (pod deleted), a
push that never reached the registry, a timeout, a restart while builds run,
and a stale watch — each through Scheduler.submit, as the service does it.
"""
from __future__ import annotations

import asyncio
import dataclasses

from bot.builders import k8s_objects as objs
from bot.builders.kubernetes import KubernetesBuilder
from bot.config import Settings
from bot.model import BuildRequest, BuildState
from tests.fake_k8s import r2d_line
from tests.fake_registry import FakeRegistry
from tests.test_scheduler import make_harness

OK_LOG = [
    r2d_line("Cloning into '/tmp/repo2docker'...\n", "fetching"),
    r2d_line("Step 1/3 : FROM base\n", "building"),
    r2d_line("Pushing image\n", "pushing"),
]


def req(n: int, *, pr: int | None = None, branch: str | None = "main", repo: str = "repo") -> BuildRequest:
    return BuildRequest(owner="octo", repo=repo, sha=f"{n:040x}", clone_url=f"http://127.0.0.1:9/octo/{repo}.git",
                        branch=None if pr else branch, pr_number=pr, installation_id=1)


async def harness(tmp_path, fake, registry, *, max_builds=8, db=None, **kw):
    settings = Settings(builder="kubernetes", data_dir=tmp_path, image_prefix="test/",
                        max_concurrent_builds=max_builds, **kw)
    builder = KubernetesBuilder(settings, None, configuration=fake.configuration())
    await builder.start()
    h = await make_harness(tmp_path, registry, max_builds=max_builds, db=db, builder=builder, **kw)
    return h


async def close(h, *, db=True):
    """Each step bounded, so a teardown that hangs names itself."""
    await asyncio.wait_for(h.scheduler.stop(), 15)
    await asyncio.wait_for(h.builder.close(), 15)
    await h.close(db=db)


def finish(fake, name, images: FakeRegistry, image: str | None, *, push: bool = True) -> None:
    fake.set_running(name)
    fake.log(name, *OK_LOG)
    if push and image:
        images.push(image)
    fake.succeed(name)


async def test_same_sha_from_branch_and_pr_makes_one_pod(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double)
    try:
        a = await h.scheduler.submit(req(1))
        b = await h.scheduler.submit(req(1, pr=4))
        name = objs.pod_name(a.job_id)
        await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
        finish(fake_k8s, name, h.registry, a.image)
        await h.wait_state(a.id, BuildState.BUILT)
        await h.wait_state(b.id, BuildState.BUILT)
        posts = [p for m, p in fake_k8s.requests if m == "POST" and p.endswith("/pods")]
        assert len(posts) == 1
        assert fake_k8s.invalid == []
    finally:
        await close(h)


async def test_cap_holds_extra_builds_in_the_queue(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double, max_builds=2)
    try:
        recs = [await h.scheduler.submit(req(i, repo=f"r{i}")) for i in range(1, 5)]
        await fake_k8s.wait_for(lambda: len(fake_k8s.pods) == 2)
        await asyncio.sleep(0.3)
        assert len(fake_k8s.pods) == 2
        assert {objs.pod_name(r.job_id) for r in recs[:2]} == set(fake_k8s.pods)
        for r in recs:
            name = objs.pod_name(r.job_id)
            await fake_k8s.wait_for(lambda: name in fake_k8s.pods, timeout=10)
            assert len(fake_k8s.pods) <= 2
            finish(fake_k8s, name, h.registry, r.image)
            await h.wait_state(r.id, BuildState.BUILT)
    finally:
        await close(h)


async def test_newer_sha_deletes_the_older_pod(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double)
    try:
        old = await h.scheduler.submit(req(1, pr=8))
        old_pod = objs.pod_name(old.job_id)
        await fake_k8s.wait_for(lambda: old_pod in fake_k8s.pods)
        fake_k8s.set_running(old_pod)
        new = await h.scheduler.submit(req(2, pr=8))
        await fake_k8s.wait_for(lambda: old_pod not in fake_k8s.pods)
        assert (await h.services.builds.get(old.id)).state == BuildState.CANCELLED
        new_pod = objs.pod_name(new.job_id)
        await fake_k8s.wait_for(lambda: new_pod in fake_k8s.pods)
        finish(fake_k8s, new_pod, h.registry, new.image)
        await h.wait_state(new.id, BuildState.BUILT)
    finally:
        await close(h)


async def test_succeeded_pod_whose_push_never_arrived_is_a_failure(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double)
    try:
        rec = await h.scheduler.submit(req(1))
        name = objs.pod_name(rec.job_id)
        await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
        finish(fake_k8s, name, h.registry, rec.image, push=False)
        await h.wait_state(rec.id, BuildState.FAILED)
        assert "not in the registry" in (await h.services.builds.get(rec.id)).reason
    finally:
        await close(h)


async def test_timeout_is_a_failure_that_says_so(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double, build_timeout=120)
    try:
        rec = await h.scheduler.submit(req(1))
        name = objs.pod_name(rec.job_id)
        await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
        assert fake_k8s.pod(name)["spec"]["activeDeadlineSeconds"] == 120
        fake_k8s.set_running(name)
        fake_k8s.deadline_exceeded(name)
        await h.wait_state(rec.id, BuildState.FAILED)
        assert "timed out" in (await h.services.builds.get(rec.id)).reason
    finally:
        await close(h)


async def test_restart_while_builds_run_reattaches_without_new_pods(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double)
    recs = [await h.scheduler.submit(req(i, repo=f"r{i}")) for i in (1, 2)]
    names = [objs.pod_name(r.job_id) for r in recs]
    await fake_k8s.wait_for(lambda: all(n in fake_k8s.pods for n in names))
    for n in names:
        fake_k8s.set_running(n)
    db, images = h.services.db, h.registry
    await close(h, db=False)  # the service goes away; pods keep running
    assert all(n in fake_k8s.pods for n in names)
    uids = {n: fake_k8s.pod(n)["metadata"]["uid"] for n in names}
    h2 = await harness(tmp_path, fake_k8s, registry_double, db=db)
    try:
        await fake_k8s.wait_for(lambda: h2.builder.attached == 2)
        assert {n: fake_k8s.pod(n)["metadata"]["uid"] for n in names} == uids
        for r, n in zip(recs, names):
            finish(fake_k8s, n, images, r.image)
        for r in recs:
            await h2.wait_state(r.id, BuildState.BUILT)
        assert h2.builder.created == 0
    finally:
        await close(h2)


async def test_stale_watch_is_relisted_and_builds_still_finish(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double)
    try:
        rec = await h.scheduler.submit(req(1))
        name = objs.pod_name(rec.job_id)
        await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
        fake_k8s.compact()
        fake_k8s.cut_watches()
        finish(fake_k8s, name, h.registry, rec.image)
        await h.wait_state(rec.id, BuildState.BUILT)
        assert fake_k8s.stats()["max_open_watches"] == 1
        assert fake_k8s.stats()["expired_watches"] >= 1
    finally:
        await close(h)


async def test_api_back_pressure_keeps_the_build_queued_with_an_honest_message(tmp_path, fake_k8s, registry_double):
    from tests.fake_k8s_routes import quota_forbidden

    h = await harness(tmp_path, fake_k8s, registry_double)
    try:
        async def no_wait(delay: float) -> None:
            pass

        h.builder.api.sleep = no_wait
        fake_k8s.fail_next("POST", r"/pods$", 403, times=1000, **quota_forbidden())
        rec = await h.scheduler.submit(req(1))
        await fake_k8s.wait_for(lambda: any("quota" in e.message for r, e in h.events if r.id == rec.id))
        stored = await h.services.builds.get(rec.id)
        assert stored.state is BuildState.QUEUED  # waiting for room, not failed
        assert h.phases(rec.id)[-1] == "waiting"
        assert not fake_k8s.pods
    finally:
        await close(h)


async def test_a_supersede_during_a_slow_create_leaves_no_pod_behind(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double)
    try:
        fake_k8s.create_delay = 0.5  # admission webhooks: the create lands after the client gave up on it
        old = await h.scheduler.submit(req(1, pr=8))
        old_pod = objs.pod_name(old.job_id)
        await fake_k8s.wait_for(lambda: any(m == "POST" and p.endswith("/pods") for m, p in fake_k8s.requests))
        assert old_pod not in fake_k8s.pods  # still in admission
        new = await h.scheduler.submit(req(2, pr=8))
        fake_k8s.create_delay = 0.0
        new_pod = objs.pod_name(new.job_id)
        await fake_k8s.wait_for(lambda: new_pod in fake_k8s.pods)
        await asyncio.sleep(0.7)  # past the old create's admission
        assert old_pod not in fake_k8s.pods, "the superseded build's pod runs on, unwatched"
        assert (await h.services.builds.get(old.id)).state == BuildState.CANCELLED
        finish(fake_k8s, new_pod, h.registry, new.image)
        await h.wait_state(new.id, BuildState.BUILT)
    finally:
        await close(h)


async def test_a_pod_no_record_wants_is_reaped(tmp_path, fake_k8s, registry_double):
    from bot.store.builds import build_id

    h = await harness(tmp_path, fake_k8s, registry_double)
    try:
        live = await h.scheduler.submit(req(1))
        live_pod = objs.pod_name(live.job_id)
        await fake_k8s.wait_for(lambda: live_pod in fake_k8s.pods)
        # a pod left by an earlier crash: labelled as a build, but no record of ours wants it
        stray = build_id("octo", "repo", "9" * 40, 1)
        job = dataclasses.replace(
            (await h.services.builds.get(live.id)).request, sha="9" * 40)
        from bot.model import BuildJob
        body = objs.build_pod_for_job(BuildJob(build_id=stray, request=job, image="test/x:y"), h.builder.settings)
        await h.builder.api.create_pod(body)
        await fake_k8s.wait_for(lambda: stray in h.builder.known_builds())
        reaped = await h.scheduler.reap_orphans()
        assert reaped == [stray]
        await fake_k8s.wait_for(lambda: objs.pod_name(stray) not in fake_k8s.pods)
        assert live_pod in fake_k8s.pods  # the wanted build is left alone
    finally:
        await close(h)


async def test_a_restart_after_the_pod_pushed_and_was_deleted_does_not_rebuild(tmp_path, fake_k8s, registry_double):
    h = await harness(tmp_path, fake_k8s, registry_double)
    rec = await h.scheduler.submit(req(1))
    name = objs.pod_name(rec.job_id)
    await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
    fake_k8s.set_running(name)
    db = h.services.db
    await close(h, db=False)  # the service goes away while the build runs
    h.registry.push(rec.image)  # ... the build pushes, and its pod is deleted meanwhile
    fake_k8s.succeed(name)
    fake_k8s.delete_gracefully(name, 0)
    h2 = await harness(tmp_path, fake_k8s, registry_double, db=db)
    try:
        await h2.wait_state(rec.id, BuildState.BUILT)
        assert h2.builder.created == 0 and not fake_k8s.pods  # nothing rebuilt from scratch
    finally:
        await close(h2)
