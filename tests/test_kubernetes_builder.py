"""KubernetesBuilder against FakeKubernetes: pods, logs, the shared watch, cancel, restart."""
from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from bot.builders import k8s_objects as objs
from bot.builders.k8s_api import load_configuration
from bot.builders.kubernetes import KubernetesBuilder
from bot.config import Settings
from bot.model import BuildJob, BuildRequest, Phase, ProgressEvent
from bot.store.builds import build_id
from tests.fake_k8s import r2d_line

TOKEN = "ghs_SuperSecretInstallationToken0042"


def make_job(n: int = 0, *, private: bool = False, repo: str = "repo", attempt: int = 1) -> BuildJob:
    sha = f"{n:040x}"
    req = BuildRequest(owner="owner", repo=repo, sha=sha, clone_url=f"http://127.0.0.1:9/owner/{repo}.git",
                       installation_id=7, private=private)
    return BuildJob(build_id=build_id("owner", repo, sha, attempt), request=req,
                    image=f"127.0.0.1:5000/binder-prebuild/owner-2d{repo}-abcdef:{sha}",
                    clone_token=TOKEN if private else None)


class Events:
    def __init__(self) -> None:
        self.items: list[ProgressEvent] = []

    async def __call__(self, event: ProgressEvent) -> None:
        self.items.append(event)

    @property
    def phases(self) -> list[Phase]:
        out: list[Phase] = []
        for e in self.items:
            if not out or out[-1] != e.phase:
                out.append(e.phase)
        return out

    @property
    def messages(self) -> list[str]:
        return [e.message for e in self.items]


R2D_SUCCESS = [
    r2d_line("Picked Git content provider.\n"),
    r2d_line("Cloning into '/tmp/repo2docker'...\n", "fetching"),
    r2d_line("Using PythonBuildPack builder\n", "building"),
    r2d_line("Step 1/5 : FROM buildpack-deps:jammy\n", "building"),
    r2d_line("Pushing image\n", "pushing"),
    r2d_line("Successfully pushed 127.0.0.1:5000/x:y", "pushing"),
]


async def start_run(builder: KubernetesBuilder, fake, job: BuildJob, events: Events | None = None):
    events = events if events is not None else Events()
    task = asyncio.create_task(builder.run(job, events))
    name = objs.pod_name(job.build_id)
    await fake.wait_for(lambda: name in fake.pods)
    return task, name, events


async def test_a_build_runs_to_success_with_phases_and_the_pod_is_deleted(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    job = make_job()
    task, name, events = await start_run(builder, fake_k8s, job)
    pod = fake_k8s.pod(name)
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "build"
    assert pod["spec"]["containers"][0]["args"][-1] == job.request.clone_url
    fake_k8s.set_running(name)
    fake_k8s.log(name, *R2D_SUCCESS[:4])
    await fake_k8s.wait_for(lambda: any(e.phase is Phase.BUILDING for e in events.items))
    fake_k8s.log(name, *R2D_SUCCESS[4:])
    fake_k8s.succeed(name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.BUILT and outcome.reason == ""
    assert events.phases == [Phase.WAITING, Phase.FETCHING, Phase.BUILDING, Phase.PUSHING]
    assert "Step 1/5 : FROM buildpack-deps:jammy" in events.messages
    assert outcome.log_tail[-1] == "Successfully pushed 127.0.0.1:5000/x:y"
    assert len(outcome.log_tail) == len(R2D_SUCCESS)  # every line once
    assert name not in fake_k8s.pods
    assert fake_k8s.invalid == []


async def test_a_failed_build_reports_repo2dockers_reason(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, events = await start_run(builder, fake_k8s, make_job())
    fake_k8s.set_running(name)
    fake_k8s.log(name, r2d_line("Step 1/5", "building"),
                 r2d_line("Error during build: The command '/bin/sh -c pip install nope' returned 1", "failed"))
    fake_k8s.fail(name, exit_code=1)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED
    assert outcome.reason == "Error during build: The command '/bin/sh -c pip install nope' returned 1"
    assert Phase.FAILED not in events.phases  # the scheduler, not a log line, ends a build
    assert name not in fake_k8s.pods


async def test_a_failed_pod_without_a_reason_in_the_log_reports_the_exit(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, _ = await start_run(builder, fake_k8s, make_job())
    fake_k8s.set_running(name)
    fake_k8s.fail(name, exit_code=137, reason="OOMKilled")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED
    assert outcome.reason == "repo2docker exited with code 137 (OOMKilled)"


async def test_deadline_exceeded_is_a_timeout(fake_k8s, k8s_builder):
    builder = await k8s_builder(Settings(builder="kubernetes", build_timeout=120))
    task, name, _ = await start_run(builder, fake_k8s, make_job())
    assert fake_k8s.pod(name)["spec"]["activeDeadlineSeconds"] == 120
    fake_k8s.set_running(name)
    fake_k8s.log(name, r2d_line("Step 1/5", "building"))
    fake_k8s.deadline_exceeded(name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED
    assert outcome.reason == "build timed out after 120 s"


async def test_a_pod_that_never_starts_is_reported_and_cleaned_up_after_the_timeout(fake_k8s, k8s_builder):
    builder = await k8s_builder(Settings(builder="kubernetes", build_timeout=60), cleaner_interval=3600)
    task, name, events = await start_run(builder, fake_k8s, make_job())
    fake_k8s.waiting(name, "ImagePullBackOff", "Back-off pulling image quay.io/jupyterhub/repo2docker")
    await fake_k8s.wait_for(lambda: any("ImagePullBackOff" in m for m in events.messages))
    assert not task.done()
    await fake_k8s.wait_for(lambda: builder.watch.get(name) and builder.watch.get(name).container_state == "waiting")
    from bot.builders.base import build_deadlines

    assert await builder.clean(now=time.time() + build_deadlines(builder.settings).pod - 5) == []
    deleted = await builder.clean(now=time.time() + build_deadlines(builder.settings).pod + 1)
    assert deleted == [name]
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED and outcome.reason == "build timed out after 60 s"
    assert name not in fake_k8s.pods


async def test_restart_reattaches_to_the_running_pod_through_409(fake_k8s, k8s_builder):
    job = make_job()
    first = await k8s_builder()
    task, name, events = await start_run(first, fake_k8s, job)
    fake_k8s.set_running(name)
    fake_k8s.log(name, *R2D_SUCCESS[:3])
    await fake_k8s.wait_for(lambda: any(e.phase is Phase.BUILDING for e in events.items))
    task.cancel()  # the process is going away: the pod must keep running
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()
    assert name in fake_k8s.pods
    uid = fake_k8s.pod(name)["metadata"]["uid"]

    second = await k8s_builder()
    again = Events()
    task2 = asyncio.create_task(second.run(job, again))
    await fake_k8s.wait_for(lambda: second.attached == 1)
    assert second.watch.get(name).uid == uid  # the same pod, not a new one
    fake_k8s.log(name, *R2D_SUCCESS[3:])
    fake_k8s.succeed(name)
    outcome = await asyncio.wait_for(task2, 10)
    assert outcome.phase is Phase.BUILT
    assert second.created == 0 and second.attached == 1
    assert again.messages[0] == f"attached to running build pod {name}"
    assert outcome.log_tail[-1] == "Successfully pushed 127.0.0.1:5000/x:y"
    posts = [p for m, p in fake_k8s.requests if m == "POST" and p.endswith("/pods")]
    assert len(posts) == 2  # the second create got 409 and attached


async def test_reattach_to_a_pod_that_finished_while_we_were_away(fake_k8s, k8s_builder):
    job = make_job()
    first = await k8s_builder()
    task, name, _ = await start_run(first, fake_k8s, job)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()
    fake_k8s.set_running(name)
    fake_k8s.log(name, r2d_line("Step 1", "building"))
    fake_k8s.succeed(name)
    second = await k8s_builder()
    outcome = await asyncio.wait_for(second.run(job, Events()), 10)
    assert outcome.phase is Phase.BUILT and outcome.log_tail == ("Step 1",)
    assert name not in fake_k8s.pods


async def test_a_stale_watch_relists_on_410_and_the_build_still_finishes(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, _ = await start_run(builder, fake_k8s, make_job())
    fake_k8s.set_running(name)
    await fake_k8s.wait_for(lambda: builder.watch.get(name) and builder.watch.get(name).phase == "Running")
    lists = builder.watch.lists
    # The API server restarts and forgets old versions; the pod finishes meanwhile.
    fake_k8s.cut_watches()
    fake_k8s.compact()
    fake_k8s.log(name, r2d_line("Step 1", "building"))
    fake_k8s.succeed(name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.BUILT
    assert fake_k8s.expired_watches >= 1
    assert builder.watch.lists == lists + 1
    await fake_k8s.wait_for(lambda: fake_k8s.open_watches == 1)  # watching again
    assert fake_k8s.max_open_watches == 1  # never two at once


async def test_a_watch_request_answered_410_also_relists(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, _ = await start_run(builder, fake_k8s, make_job())
    await fake_k8s.wait_for(lambda: builder.watch.get(name))
    lists = builder.watch.lists
    fake_k8s.fail_next("GET", r"/pods$", status=410)  # the next watch request itself
    fake_k8s.cut_watches()
    fake_k8s.set_running(name)
    fake_k8s.succeed(name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.BUILT
    assert builder.watch.lists == lists + 1


def tokens(fake_k8s) -> dict:
    return fake_k8s.secrets[objs.CLONE_TOKENS_SECRET].get("data") or {}


async def test_cancel_deletes_the_pod_and_its_token(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    job = make_job(private=True)
    task, name, _ = await start_run(builder, fake_k8s, job)
    key = objs.clone_token_key(job.build_id)
    assert key in tokens(fake_k8s)
    fake_k8s.set_running(name)
    await builder.cancel(job.build_id)
    assert name not in fake_k8s.pods and key not in tokens(fake_k8s)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.CANCELLED


async def test_cancel_of_an_unknown_build_is_quiet(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    await builder.cancel(build_id("x", "y", "0" * 40, 1))  # 404 = already gone
    assert ("DELETE", f"/api/v1/namespaces/binder-prebuild/pods/{objs.pod_name(build_id('x', 'y', '0' * 40, 1))}"
            "?propagationPolicy=Background") in fake_k8s.requests


async def test_a_pod_deleted_by_someone_else_fails_the_build(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, _ = await start_run(builder, fake_k8s, make_job())
    fake_k8s._remove("Pod", "binder-prebuild", name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.FAILED and "deleted" in outcome.reason


async def test_private_repo_token_lives_while_its_pod_does_and_never_leaks(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    job = make_job(private=True)
    task, name, events = await start_run(builder, fake_k8s, job)
    key = objs.clone_token_key(job.build_id)
    assert base64.b64decode(tokens(fake_k8s)[key]).decode() == TOKEN
    pod = fake_k8s.pod(name)
    assert TOKEN not in json.dumps(pod)
    fake_k8s.set_running(name)
    fake_k8s.log(name, r2d_line(f"remote: https://x-access-token:{TOKEN}@127.0.0.1/ denied", "fetching"))
    fake_k8s.succeed(name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.phase is Phase.BUILT
    assert key not in tokens(fake_k8s)  # removed with the build
    assert all(TOKEN not in e.message for e in events.items)
    assert all(TOKEN not in line for line in outcome.log_tail)
    # the token went to the API only inside the Secret's body, never in a pod or a URL
    with_token = [b for b in fake_k8s.bodies if TOKEN in b]
    assert with_token and all('"stringData"' in b for b in with_token)
    assert all(TOKEN not in path for _, path in fake_k8s.requests)


async def test_many_concurrent_builds_share_exactly_one_watch(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    fake_k8s.autopilot = lambda pod: fake_k8s.run_pod(pod["metadata"]["name"], R2D_SUCCESS, delay=0.05)
    jobs = [make_job(i, repo=f"repo{i % 7}") for i in range(40)]
    outcomes = await asyncio.wait_for(asyncio.gather(*(builder.run(j, Events()) for j in jobs)), 30)
    assert [o.phase for o in outcomes] == [Phase.BUILT] * 40
    assert fake_k8s.max_open_watches == 1
    assert fake_k8s.watch_requests == 1
    assert fake_k8s.pods == {}


async def test_a_dropped_log_stream_resumes_without_repeating_lines(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, events = await start_run(builder, fake_k8s, make_job())
    fake_k8s.set_running(name)
    fake_k8s.log(name, r2d_line("one", "building"), r2d_line("two", "building"))
    await fake_k8s.wait_for(lambda: "two" in events.messages)
    fake_k8s.cut_logs()
    await asyncio.sleep(0.3)
    fake_k8s.log(name, r2d_line("three", "building"))
    await fake_k8s.wait_for(lambda: "three" in events.messages)
    fake_k8s.succeed(name)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.log_tail == ("one", "two", "three")


async def test_server_errors_are_retried(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    builder.api.backoff = 0.01
    fake_k8s.fail_next("POST", r"/pods$", status=503, times=2)
    task, name, _ = await start_run(builder, fake_k8s, make_job())
    fake_k8s.set_running(name)
    fake_k8s.succeed(name)
    assert (await asyncio.wait_for(task, 10)).phase is Phase.BUILT
    assert len([1 for m, p in fake_k8s.requests if m == "POST" and p.endswith("/pods")]) == 3


async def test_health_reports_whether_the_api_answers(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    ok, detail = await builder.health()
    assert ok and "v1.30" in detail
    await fake_k8s.stop()
    ok, detail = await builder.health()
    assert not ok and "not answering" in detail


async def test_kubeconfig_is_used_outside_a_cluster(fake_k8s, tmp_path, monkeypatch):
    path = fake_k8s.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", path)
    conf = await load_configuration()
    assert conf.host == fake_k8s.url
    builder = KubernetesBuilder(Settings(builder="kubernetes"), None)
    try:
        await builder.start()  # no configuration given: in-cluster, else KUBECONFIG
        assert (await builder.health())[0]
        assert builder.api.api_client.configuration.host == fake_k8s.url
    finally:
        await builder.close()


async def test_tokens_whose_pod_is_gone_are_cleaned(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    job = make_job(private=True)
    task, name, _ = await start_run(builder, fake_k8s, job)  # a live build keeps its token
    await builder.api.patch_secret(objs.CLONE_TOKENS_SECRET, objs.add_clone_token("orphan", TOKEN))
    builder._placing.add(objs.clone_token_key("placing"))  # a pod being created keeps its token too
    await builder.api.patch_secret(objs.CLONE_TOKENS_SECRET, objs.add_clone_token("placing", TOKEN))
    await builder.watch.synced.wait()
    assert await builder.clean() == [f"{objs.CLONE_TOKENS_SECRET}/build-orphan"]
    assert set(tokens(fake_k8s)) == {objs.clone_token_key(job.build_id), "build-placing"}
    fake_k8s.set_running(name)
    fake_k8s.succeed(name)
    await asyncio.wait_for(task, 10)


async def test_a_pod_finishing_while_an_event_is_being_emitted_is_not_missed(fake_k8s, k8s_builder):
    builder = await k8s_builder(poll_interval=30)
    job = make_job()
    name = objs.pod_name(job.build_id)

    async def slow_emit(event: ProgressEvent) -> None:
        if event.message.startswith(f"build pod {name} running"):
            fake_k8s.succeed(name)
            await asyncio.sleep(0.2)  # the watch sees Succeeded while we are busy here

    task = asyncio.create_task(builder.run(job, slow_emit))
    await fake_k8s.wait_for(lambda: name in fake_k8s.pods)
    fake_k8s.set_running(name)
    outcome = await asyncio.wait_for(task, 5)  # not after the 30 s status poll
    assert outcome.phase is Phase.BUILT


async def test_a_pod_the_api_refuses_leaves_no_secret_behind(fake_k8s, k8s_builder):
    from tests.fake_k8s_routes import rbac_forbidden

    builder = await k8s_builder()
    job = make_job(private=True)
    fake_k8s.fail_next("POST", r"/pods$", status=403, **rbac_forbidden())
    outcome = await builder.run(job, Events())
    assert outcome.phase is Phase.FAILED and "may not create pods" in outcome.reason
    assert tokens(fake_k8s) == {} and fake_k8s.pods == {}


async def test_the_builder_works_under_the_role_and_touches_one_named_secret(fake_k8s, k8s_builder):
    """Issue 11 item 14: k8s/base/role.yaml is enforced by the fake (k8s_builder); a private build,
    a cancel and a clean need nothing else, and the Hub's Secret next to it is out of reach."""
    from bot.builders.k8s_api import KubeError

    fake_k8s.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub"},
                    "stringData": {"hub.services.binder-prebuild.apiToken": "hub-token"}})
    builder = await k8s_builder()
    job = make_job(private=True)
    task, name, _ = await start_run(builder, fake_k8s, job)
    fake_k8s.set_running(name)
    fake_k8s.succeed(name)
    assert (await asyncio.wait_for(task, 10)).phase is Phase.BUILT
    other = make_job(1, private=True)
    await start_run(builder, fake_k8s, other)
    await builder.cancel(other.build_id)
    await builder.clean()
    secret_calls = [(m, p) for m, p in fake_k8s.requests if "/secrets" in p]
    assert secret_calls and all(p.split("?")[0].endswith(f"/secrets/{objs.CLONE_TOKENS_SECRET}")
                                for _, p in secret_calls)
    for call in (builder.api.get_secret("hub"), builder.api.list_secrets(""),
                 builder.api.patch_secret("hub", {"data": {"x": None}}), builder.api.delete_secret("hub")):
        with pytest.raises(KubeError) as e:
            await call
        assert e.value.status == 403
    assert "hub" in fake_k8s.secrets
