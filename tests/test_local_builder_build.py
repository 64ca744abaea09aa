"""LocalBuilder running builds against real Podman, a real registry, real repo2docker and real git
(over HTTP): success with phases and --cache-from, failures and their reasons, private repositories
(the token never in arguments or logs), local storage without a registry, health.

Repositories are tiny Dockerfile repos FROM the offline base image (tests/local_builder_helpers.py).
"""
from __future__ import annotations

import asyncio
import logging
import secrets

import aiohttp

from bot.builders.local import LocalBuilder
from bot.builders.local_images import LocalImages
from bot.model import Phase
from bot.registry import RegistryClient
from tests.git_server import Commit
from tests.local_builder_helpers import SHA, Recorder, descendants, dockerfile, image_name, make_job


async def test_build_pushes_to_registry_with_phases(local_engine, test_base, git_server, lb_settings, lb_images):
    commit = git_server.create(f"ok-{secrets.token_hex(3)}", {"Dockerfile": dockerfile(test_base),
                                                                "index.ipynb": "{}\n"})
    image = image_name(local_engine, commit.sha)
    lb_images.append(image)
    builder = LocalBuilder(lb_settings(), env=local_engine.env)
    emit = Recorder()
    outcome = await builder.run(make_job(commit, image), emit)
    assert outcome.phase == Phase.BUILT, (outcome.reason, outcome.log_tail[-20:])
    assert emit.phases() == [Phase.FETCHING, Phase.BUILDING, Phase.PUSHING]
    assert "Picked Git content provider." in emit.messages  # the generated config is in force
    assert any(m.startswith("Pushing image ") for m in emit.messages)
    assert outcome.log_tail and outcome.log_tail[-1] == emit.messages[-1]
    assert builder.running() == []
    async with aiohttp.ClientSession() as session:
        registry = RegistryClient(session, local_engine.registry_url, docker_config=local_engine.docker_config)
        assert await registry.exists(image) is True
        assert await registry.exists(image.rsplit(":", 1)[0] + ":" + "f" * 40) is False

        # a notebook-only change, built --cache-from the first image (as the scheduler asks)
        second = git_server.commit(commit.clone_url.rsplit("/", 1)[-1].removesuffix(".git"),
                                   {"index.ipynb": '{"cells": []}\n'})
        image2 = image.rsplit(":", 1)[0] + ":" + second.sha
        lb_images.append(image2)
        emit2 = Recorder()
        outcome2 = await builder.run(make_job(second, image2, cache_from=image), emit2)
        assert outcome2.phase == Phase.BUILT, (outcome2.reason, outcome2.log_tail[-20:])
        building_with = next(m for m in emit2.messages if m.startswith("Building with: "))
        assert f"--cache-from {image.rsplit(':', 1)[0]}" in building_with
        assert await registry.exists(image2) is True


async def test_failing_dockerfile_gives_the_reason(local_engine, test_base, git_server, lb_settings, lb_images):
    commit = git_server.create(f"bad-{secrets.token_hex(3)}",
                               {"Dockerfile": dockerfile(test_base, "echo nope; exit 3")})
    image = image_name(local_engine, commit.sha)
    builder = LocalBuilder(lb_settings(), env=local_engine.env)
    emit = Recorder()
    outcome = await builder.run(make_job(commit, image), emit)
    assert outcome.phase == Phase.FAILED
    assert "exit status 3" in outcome.reason and "\n" not in outcome.reason
    assert "nope" in outcome.log_tail
    assert Phase.PUSHING not in emit.phases()
    async with aiohttp.ClientSession() as session:
        assert await RegistryClient(session, local_engine.registry_url,
                                    docker_config=local_engine.docker_config).exists(image) is False


async def test_unreachable_repository_fails_at_fetch(local_engine, lb_settings):
    builder = LocalBuilder(lb_settings(), env=local_engine.env)
    emit = Recorder()
    gone = Commit("http://127.0.0.1:9/nothing.git", SHA)
    outcome = await builder.run(make_job(gone, image_name(local_engine, SHA)), emit)
    assert outcome.phase == Phase.FAILED
    assert "Failed to clone repository" in outcome.reason or "127.0.0.1" in outcome.reason, outcome.reason
    assert emit.phases() == [Phase.FETCHING]


async def test_private_repo_token_never_in_args_or_logs(local_engine, test_base, git_server, lb_settings, lb_images,
                                                        caplog):
    caplog.set_level(logging.DEBUG)
    name = f"private/secret-{secrets.token_hex(3)}"
    commit = git_server.create(name, {"Dockerfile": dockerfile(test_base), "data.txt": "x"}, private=True)
    token = git_server.token
    image = image_name(local_engine, commit.sha)
    lb_images.append(image)
    builder = LocalBuilder(lb_settings(), env=local_engine.env)

    # without the token the clone is refused (and git does not wait for a password)
    no_token = await builder.run(make_job(commit, image), Recorder())
    assert no_token.phase == Phase.FAILED and "clone" in no_token.reason.lower(), no_token.reason
    assert name in git_server.denied

    emit = Recorder()
    job = make_job(commit, image, token=token)
    seen: dict[int, bytes] = {}
    task = asyncio.create_task(builder.run(job, emit))
    while not task.done():  # sample the command lines of repo2docker and everything under it
        pid = builder.pid_of(job.build_id)
        if pid is not None:
            for p in [pid, *descendants(pid)]:
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        seen[p] = f.read()
                except OSError:
                    pass
        await asyncio.sleep(0.02)
    outcome = task.result()
    assert outcome.phase == Phase.BUILT, (outcome.reason, outcome.log_tail[-20:])
    assert (name, token) in git_server.auth_seen  # the clone did authenticate with it
    assert any(b"repo2docker" in c for c in seen.values())
    assert not [c for c in seen.values() if token.encode() in c]
    assert not [m for m in emit.messages if token in m]
    assert not [line for line in outcome.log_tail if token in line]
    assert token not in caplog.text
    inspect = local_engine.podman("image", "inspect", image, check=True).stdout
    assert token not in inspect


async def test_without_registry_the_image_is_in_local_storage(local_engine, test_base, git_server, lb_settings,
                                                              lb_images):
    commit = git_server.create(f"local-{secrets.token_hex(3)}", {
        "binder/Dockerfile": dockerfile(test_base), "binder/index.ipynb": "{}\n", "README.md": "hi\n"})
    image = image_name(local_engine, commit.sha, registry=False)
    lb_images.append(image)
    builder = LocalBuilder(lb_settings(registry_url=None), env=local_engine.env)
    emit = Recorder()
    outcome = await builder.run(make_job(commit, image, subdir="binder"), emit)
    assert outcome.phase == Phase.BUILT, (outcome.reason, outcome.log_tail[-20:])
    assert Phase.PUSHING not in emit.phases()
    lookup = LocalImages("podman", env=local_engine.env)
    assert await lookup.exists(image) is True
    assert await lookup.exists(image.rsplit(":", 1)[0] + ":" + "f" * 40) is False


async def test_health(local_engine, lb_settings):
    ok, detail = await LocalBuilder(lb_settings(), env=local_engine.env).health()
    assert ok and detail.startswith("podman "), detail
    broken = LocalBuilder(lb_settings(container_engine="podman --remote --url unix:///nonexistent/podman.sock"),
                          env=local_engine.env)
    ok, detail = await broken.health()
    assert not ok and "does not answer" in detail
