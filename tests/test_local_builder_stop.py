"""LocalBuilder stopping builds against real Podman: cancel, timeout, the task cancelled, the bot
SIGKILLed, superseded through the scheduler; each leaves no process and no buildah working container
of its own behind, and touches no other build's.

Each test that stops a build puts a nonce in its RUN step so the stopped step's processes and its
buildah containers can be told apart from anything else on the machine.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import time

import pytest

from bot.builders.local import LocalBuilder
from bot.builders.podman_leftovers import BUILD_ID_ARG
from bot.model import BuildRequest, Phase
from bot.registry import RegistryClient
from tests.local_builder_helpers import (
    Recorder, buildah_leftovers, containers_with_arg, delete_runc_leftovers, dockerfile, engine_build_id, image_name,
    make_job, pid_alive,
    processes_with, sleeper_repo, step_ids, wait_process,
)


async def test_cancel_mid_run_stops_it_and_leaves_no_buildah_containers(
        local_engine, test_base, git_server, lb_settings, lb_images):
    commit, nonce = sleeper_repo(git_server, test_base, "cancel")
    image = image_name(local_engine, commit.sha)
    builder = LocalBuilder(lb_settings(), env=local_engine.env)
    emit = Recorder()
    job = make_job(commit, image)
    since = time.time()
    task = asyncio.create_task(builder.run(job, emit))
    await emit.wait_for(f": {nonce}")
    await wait_process(f": {nonce}")  # the RUN step is running
    pid = builder.pid_of(job.build_id)
    assert pid is not None and pid_alive(pid)

    await builder.cancel(job.build_id)
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.phase == Phase.CANCELLED
    assert not pid_alive(pid)
    assert processes_with(nonce) == []  # the RUN step's container did not run on
    assert buildah_leftovers(local_engine, test_base, step_ids(emit.messages), since) == []
    assert containers_with_arg(local_engine, BUILD_ID_ARG, engine_build_id(emit.messages)) == []
    assert builder.running() == []
    assert local_engine.podman("image", "exists", image).returncode != 0


async def test_cancel_leaves_a_concurrent_build_from_the_same_base_alone(
        local_engine, test_base, git_server, lb_settings, lb_images, tmp_path, caplog):
    """Another build FROM the same image, started during ours (another test run, another service on
    this storage, a plain ``podman build``): stopping ours removes none of its working containers."""
    caplog.set_level(logging.INFO, logger="bot.builders.local")
    commit, nonce = sleeper_repo(git_server, test_base, "conc")
    builder = LocalBuilder(lb_settings(), env=local_engine.env)
    emit = Recorder()
    job = make_job(commit, image_name(local_engine, commit.sha))
    task = asyncio.create_task(builder.run(job, emit))
    other = None
    gate = tmp_path / "gate"
    gate.mkdir()
    other_nonce = f"lbother{secrets.token_hex(4)}"
    ctx = tmp_path / "other"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f'FROM {test_base}\nRUN sh -c "while [ ! -e /gate/open ]; do sleep 0.1; done; : {other_nonce}"\n')
    other_tag = f"localhost/lbtest-other-{secrets.token_hex(4)}:latest"
    try:
        await wait_process(f": {nonce}")  # our RUN step runs; the other build starts after ours
        build_id = engine_build_id(emit.messages)
        ours = containers_with_arg(local_engine, BUILD_ID_ARG, build_id)
        assert ours
        other = await asyncio.create_subprocess_exec(
            "podman", "build", "--layers", "--build-arg", f"LBTEST_MARK={other_nonce}",
            "--volume", f"{gate}:/gate:ro", "--tag", other_tag, str(ctx),
            env=local_engine.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        lb_images.append(other_tag)
        await wait_process(f": {other_nonce}")
        theirs = containers_with_arg(local_engine, "LBTEST_MARK", other_nonce)
        assert theirs and not set(theirs) & set(ours)

        await builder.cancel(job.build_id)
        outcome = await asyncio.wait_for(task, 60)
        assert outcome.phase == Phase.CANCELLED
        assert processes_with(f": {nonce}") == []
        assert containers_with_arg(local_engine, BUILD_ID_ARG, build_id) == []
        assert containers_with_arg(local_engine, "LBTEST_MARK", other_nonce) == theirs, "ours took theirs"
        assert processes_with(f": {other_nonce}")  # their RUN step runs on
        assert f"podman build {build_id}" in caplog.text  # the after-stop check looked for ours by its id
    finally:
        (gate / "open").touch()
        if not task.done():
            await builder.cancel(job.build_id)
            await asyncio.wait_for(task, 60)
        if other is not None:
            try:
                output, _ = await asyncio.wait_for(other.communicate(), 120)
            except TimeoutError:
                other.kill()
                output, _ = await other.communicate()
            left = containers_with_arg(local_engine, "LBTEST_MARK", other_nonce)  # only if it failed
            if left:
                local_engine.podman("rm", "--force", *left)
    assert other.returncode == 0, output.decode(errors="replace")[-2000:]  # their build finished unharmed
    assert local_engine.podman("image", "exists", other_tag).returncode == 0


def gated_build(local_engine, ctx, base: str, gate, nonce: str, mark: str, tag: str):
    """A plain ``podman build`` FROM ``base`` whose RUN step waits for ``gate/open``; ``mark`` a build arg."""
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f'FROM {base}\nRUN sh -c "while [ ! -e /gate/open ]; do sleep 0.1; done; : {nonce}"\n')
    return asyncio.create_subprocess_exec(
        "podman", "build", "--layers", "--build-arg", mark, "--volume", f"{gate}:/gate:ro", "--tag", tag,
        str(ctx), env=local_engine.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True)


async def test_leftover_check_removes_that_podman_builds_containers_only(
        local_engine, test_base, lb_settings, tmp_path, lb_images):
    """An engine killed before its cleanup leaves its working containers; the check after a stop
    removes exactly those (by the build id), not those of another build running FROM the same image."""
    gate_a, gate_b = tmp_path / "gate-a", tmp_path / "gate-b"
    gate_a.mkdir()
    gate_b.mkdir()
    podman_build = secrets.token_hex(8)
    nonce_a, nonce_b = f"lbkilled{secrets.token_hex(4)}", f"lbalive{secrets.token_hex(4)}"
    tag_a, tag_b = (f"localhost/lbtest-{n}:latest" for n in (nonce_a, nonce_b))
    lb_images.append(tag_b)
    a = await gated_build(local_engine, tmp_path / "a", test_base, gate_a, nonce_a, f"{BUILD_ID_ARG}={podman_build}",
                          tag_a)
    b = await gated_build(local_engine, tmp_path / "b", test_base, gate_b, nonce_b, f"LBTEST_MARK={nonce_b}", tag_b)
    try:
        await wait_process(f": {nonce_a}")
        await wait_process(f": {nonce_b}")
        os.killpg(a.pid, signal.SIGKILL)  # no cleanup at all: as if the engine were SIGKILLed
        await a.wait()
        (gate_a / "open").touch()  # its RUN step ends by itself
        deadline = time.monotonic() + 30
        while processes_with(f": {nonce_a}"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        left = containers_with_arg(local_engine, BUILD_ID_ARG, podman_build)
        theirs = containers_with_arg(local_engine, "LBTEST_MARK", nonce_b)
        assert left and theirs

        builder = LocalBuilder(lb_settings(), env=local_engine.env)
        assert sorted(await builder.remove_leftovers("lb-check", podman_build)) == left
        assert containers_with_arg(local_engine, BUILD_ID_ARG, podman_build) == []
        assert containers_with_arg(local_engine, "LBTEST_MARK", nonce_b) == theirs
        assert processes_with(f": {nonce_b}")
        assert await builder.remove_leftovers("lb-check", podman_build) == []
    finally:
        (gate_a / "open").touch()
        (gate_b / "open").touch()
        if a.returncode is None:
            os.killpg(a.pid, signal.SIGKILL)
            await a.wait()
        try:
            await asyncio.wait_for(b.wait(), 120)
        except TimeoutError:
            b.kill()
            await b.wait()
        delete_runc_leftovers([nonce_a])
        for arg, value in ((BUILD_ID_ARG, podman_build), ("LBTEST_MARK", nonce_b)):
            mine = containers_with_arg(local_engine, arg, value)
            if mine:
                local_engine.podman("rm", "--force", *mine)
    assert b.returncode == 0  # the other build finished unharmed
    assert local_engine.podman("image", "exists", tag_b).returncode == 0


async def test_timeout_stops_the_build(local_engine, test_base, git_server, lb_settings, lb_images):
    commit, nonce = sleeper_repo(git_server, test_base, "timeout")
    builder = LocalBuilder(lb_settings(build_timeout=6), env=local_engine.env)
    emit = Recorder()
    since = time.time()
    outcome = await builder.run(make_job(commit, image_name(local_engine, commit.sha)), emit)
    assert outcome.phase == Phase.FAILED
    assert outcome.reason == "build timed out after 6 s"
    assert any(m.endswith(f": {nonce}\"") for m in emit.messages)  # it was in the RUN step
    assert processes_with(nonce) == []
    assert buildah_leftovers(local_engine, test_base, step_ids(emit.messages), since) == []
    assert containers_with_arg(local_engine, BUILD_ID_ARG, engine_build_id(emit.messages)) == []


async def test_task_cancellation_stops_the_child(local_engine, test_base, git_server, lb_settings, lb_images):
    """The bot going away (its task cancelled, no cancel()) must not leave repo2docker building."""
    commit, nonce = sleeper_repo(git_server, test_base, "task")
    builder = LocalBuilder(lb_settings(), env=local_engine.env)
    emit = Recorder()
    job = make_job(commit, image_name(local_engine, commit.sha))
    since = time.time()
    task = asyncio.create_task(builder.run(job, emit))
    await wait_process(f": {nonce}")  # mid-RUN
    pid = builder.pid_of(job.build_id)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert pid is not None and not pid_alive(pid)
    assert processes_with(nonce) == []
    assert buildah_leftovers(local_engine, test_base, step_ids(emit.messages), since) == []
    assert containers_with_arg(local_engine, BUILD_ID_ARG, engine_build_id(emit.messages)) == []
    assert builder.running() == []


_ORPHAN_SCRIPT = """
import asyncio, json, sys
from bot.builders.local import LocalBuilder
from bot.config import Settings
from bot.model import BuildJob, BuildRequest

async def main():
    env, url, sha, image, nonce = json.loads(sys.argv[1])
    builder = LocalBuilder(Settings(container_engine="podman", registry_url=None), env=env)
    job = BuildJob("orphan", BuildRequest("octo", "repo", sha, url), image)
    async def emit(event):
        if event.message.endswith(": " + nonce + '"'):
            print(builder.pid_of("orphan"), flush=True)
    await builder.run(job, emit)

asyncio.run(main())
"""


async def test_bot_killed_the_build_stops(local_engine, test_base, git_server, lb_images):
    """SIGKILL of the bot (no cleanup code runs in it) still stops repo2docker and its RUN step."""
    commit, nonce = sleeper_repo(git_server, test_base, "orphan")
    image = image_name(local_engine, commit.sha, registry=False)
    since = time.time()
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHAN_SCRIPT,
        json.dumps([local_engine.env, commit.clone_url, commit.sha, image, nonce]),
        stdout=asyncio.subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        line = await asyncio.wait_for(bot.stdout.readline(), 60)
        r2d_pid = int(line)
        await wait_process(f": {nonce}")
    finally:
        bot.kill()
        await bot.wait()
    deadline = time.monotonic() + 30
    while (pid_alive(r2d_pid) or processes_with(f": {nonce}")) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not pid_alive(r2d_pid)
    assert processes_with(f": {nonce}") == []
    assert buildah_leftovers(local_engine, test_base, set(), since) == []


async def test_through_the_scheduler_supersede_stops_the_process(
        local_engine, test_base, git_server, make_services, lb_images):
    """The scheduler drives LocalBuilder: a newer sha on the branch stops the running build's process."""
    from bot.model import BuildState
    from bot.scheduler import Scheduler

    repo = f"lbsched-{secrets.token_hex(3)}"
    nonce = f"lbsched{secrets.token_hex(4)}"
    first = git_server.create(repo, {"Dockerfile": dockerfile(test_base, f'sh -c "sleep 300; : {nonce}"'),
                                     "unique.txt": secrets.token_hex(8)})
    second = git_server.commit(repo, {"Dockerfile": dockerfile(test_base)})
    services = await make_services(container_engine="podman", registry_url=local_engine.registry_url,
                                   docker_config=local_engine.docker_config, image_prefix="lbtest/", build_timeout=300)
    services.images = RegistryClient(services.session, local_engine.registry_url,
                                     docker_config=local_engine.docker_config)
    builder = LocalBuilder(services.settings, env=local_engine.env)
    services.builder = builder
    services.scheduler = Scheduler(services)
    events: list = []

    async def listener(record, event):
        events.append((record.id, event.phase))

    services.bus.add_listener(listener)
    await services.scheduler.start()
    try:
        def request(commit):
            return BuildRequest("octo", repo, commit.sha, commit.clone_url, branch="main", default_branch="main")

        a = await services.scheduler.submit(request(first))
        lb_images.append(a.image)
        await wait_process(f": {nonce}")
        pid = builder.pid_of(a.job_id)
        assert pid is not None

        b = await services.scheduler.submit(request(second))
        lb_images.append(b.image)
        assert (await services.builds.get(a.id)).state == BuildState.CANCELLED
        assert not pid_alive(pid) and processes_with(f": {nonce}") == []

        deadline = time.monotonic() + 120
        while (await services.builds.get(b.id)).state not in (BuildState.BUILT, BuildState.FAILED):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        done = await services.builds.get(b.id)
        assert done.state == BuildState.BUILT, (done.reason, done.log_tail[-10:])
        assert await services.images.exists(b.image) is True
        phases = [p for rid, p in events if rid == b.id]
        assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == [
            Phase.WAITING, Phase.FETCHING, Phase.BUILDING, Phase.PUSHING, Phase.BUILT]
        assert [p for rid, p in events if rid == a.id][-1] == Phase.CANCELLED
    finally:
        await services.scheduler.stop()
        await builder.close()
