"""LocalBuilder against real Podman, a real registry, real repo2docker and real git (over HTTP).

Repositories are tiny Dockerfile repos FROM the offline base image; each test
that stops a build puts a nonce in its RUN step so the stopped step's processes
and its buildah containers can be told apart from anything else on the machine.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time

import aiohttp
import pytest
from traitlets.config.loader import PyFileConfigLoader

from bot.builders.local import LocalBuilder
from bot.builders.local_images import LocalImages
from bot.builders.local_r2d import BadJob, child_env, failure_reason, r2d_args, r2d_config
from bot.builders.podman_leftovers import BUILD_ID_ARG, build_id_in, builder_args
from bot.config import Settings
from bot.model import BuildJob, BuildRequest, Phase, ProgressEvent
from bot.registry import RegistryClient
from tests.git_server import Commit

SHA = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------- helpers
def make_job(commit, image: str, *, build_id: str | None = None, token: str | None = None,
             subdir: str | None = None, cache_from: str | None = None) -> BuildJob:
    req = BuildRequest("octo", "repo", commit.sha, commit.clone_url, private=token is not None, subdir=subdir)
    return BuildJob(build_id or f"lb-{secrets.token_hex(4)}", req, image, cache_from=cache_from, clone_token=token)


class Recorder:
    """An ``emit`` that keeps every event; ``wait_for(text)`` until a message contains it."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)
        self._changed.set()

    @property
    def messages(self) -> list[str]:
        return [e.message for e in self.events]

    def phases(self) -> list[Phase]:
        out: list[Phase] = []
        for e in self.events:
            if not out or out[-1] != e.phase:
                out.append(e.phase)
        return out

    async def wait_for(self, text: str, timeout: float = 60) -> None:
        async def _wait() -> None:
            while not any(text in m for m in self.messages):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(_wait(), timeout)


def processes_with(text: str) -> list[int]:
    """Pids whose command line contains ``text``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


async def wait_process(text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not processes_with(text):
        assert time.monotonic() < deadline, f"no process running {text!r}"
        await asyncio.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def step_ids(messages: list[str]) -> set[str]:
    return {m.split()[-1][:11] for m in messages if m.startswith("--> ")}


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def test_base(local_engine, base_image):
    """The base image under a name of this module's own, so its working containers are ours alone."""
    alias = f"localhost/lbtest-{secrets.token_hex(4)}:base"
    local_engine.podman("tag", base_image, alias, check=True)
    yield alias
    local_engine.podman("untag", alias, alias)  # that name only (`untag IMAGE` alone drops every name)


@pytest.fixture
def images(local_engine):
    """Image names a test builds; removed from local storage afterwards."""
    made: list[str] = []
    yield made
    if made:
        local_engine.podman("rmi", "--force", *made)


@pytest.fixture
def settings(local_engine):
    def make(**kw) -> Settings:
        kw.setdefault("container_engine", "podman")
        kw.setdefault("registry_url", local_engine.registry_url)
        kw.setdefault("build_timeout", 300)
        return Settings(**kw)
    return make


def dockerfile(base: str, run: str = "true") -> str:
    return f"FROM {base}\nCOPY --chown=1000:1000 . /home/jovyan\nRUN {run}\n"


def sleeper_repo(git_server, base: str, kind: str) -> tuple[Commit, str]:
    """A repo whose RUN step sleeps 300 s; the nonce is in that step only (not in the repository's URL)."""
    nonce = f"lb{kind}{secrets.token_hex(4)}"
    commit = git_server.create(f"{kind}-{secrets.token_hex(3)}", {
        "Dockerfile": dockerfile(base, f'sh -c "sleep 300; : {nonce}"'),
        "unique.txt": secrets.token_hex(8)})  # a COPY layer (step images) of this build alone
    return commit, nonce


def image_name(local_engine, tag: str, *, registry: bool = True) -> str:
    repo = f"lbtest/octo-repo-{secrets.token_hex(3)}"
    return f"{local_engine.registry_host}/{repo}:{tag}" if registry else f"{repo}:{tag}"


def containers_with_arg(local_engine, name: str, value: str) -> list[str]:
    """Working containers whose buildah.json carries build arg ``name=value`` (a build's own mark)."""
    info = local_engine.podman("info", "--format", "{{.Store.GraphRoot}} {{.Store.GraphDriverName}}", check=True)
    root, driver = info.stdout.split()
    out = local_engine.podman("ps", "--all", "--external", "--format", "json", check=True).stdout
    return sorted(c["Id"] for c in json.loads(out or "null") or []
                  if (builder_args(root, driver, c["Id"]) or {}).get(name) == value)


def engine_build_id(messages: list[str]) -> str:
    """The id PodmanEngine gave the build (its ``Building with:`` line)."""
    found = next((build_id_in(m) for m in messages if m.startswith("Building with: ")), None)
    assert found, messages[:20]
    return found


def buildah_leftovers(local_engine, base_alias: str, ids: set[str], since: float) -> list[dict]:
    """Working containers of a stopped build: made from our base alias or one of its step images."""
    out = local_engine.podman("ps", "--all", "--external", "--format", "json", check=True).stdout
    name = base_alias.split("/")[-1].split(":")[0] + "-working-container"
    return [c for c in json.loads(out or "null") or []
            if c.get("Created", 0) >= since - 2
            and (any(n.startswith(name) for n in c.get("Names") or []) or (c.get("ImageID") or "")[:11] in ids)]


# ---------------------------------------------------------------- pure parts
def test_command_line_and_config(tmp_path):
    job = make_job(Commit("https://git.example/o/r.git", SHA),
                   "reg:5000/p/o-r:" + SHA, subdir="/binder/", cache_from="reg:5000/p/o-r:old", token="ghs_secret")
    args = r2d_args(job, container_engine="podman", push=True, config_path="/c.py", python="/py")
    assert args[:3] == ["/py", "-m", "repo2docker"]
    joined = shlex.join(args)
    for flag in ("--config /c.py", "--engine podman", "--json-logs", "--no-run", "--user-id 1000",
                 "--user-name jovyan", f"--ref {SHA}", f"--image-name reg:5000/p/o-r:{SHA}", "--push",
                 "--cache-from reg:5000/p/o-r:old", "--subdir binder"):
        assert flag in joined
    assert args[-1] == "https://git.example/o/r.git"
    assert "ghs_secret" not in joined
    no_push = r2d_args(job, container_engine="docker", push=False, config_path="/c.py", python="/py")
    assert "--push" not in no_push and "--engine" in no_push and no_push[no_push.index("--engine") + 1] == "docker"

    for bad in ("/srv/some/dir", "file:///srv/repo", "--upload-pack=evil", "https://x/ y"):
        with pytest.raises(BadJob):
            r2d_args(make_job(Commit(bad, SHA), "i:t"),
                     container_engine="podman", push=False, config_path="/c", python="/py")

    # the config file restricts repo2docker to the Git content provider
    from repo2docker.app import Repo2Docker
    from repo2docker.contentproviders import Git
    (tmp_path / "r2d_config.py").write_text(r2d_config("podman --root /x"))
    loader = PyFileConfigLoader("r2d_config.py", str(tmp_path)).load_config()
    r2d = Repo2Docker(config=loader)
    assert r2d.content_providers == [Git]
    assert loader.PodmanEngine.podman_command == ["podman", "--root", "/x"]


def test_child_env_is_an_allowlist_and_carries_the_token_only_for_git():
    job = make_job(Commit("https://git.example:8443/o/r.git", SHA), "i:t",
                   token="ghs_tok")
    base = {"PATH": "/usr/bin", "DOCKER_HOST": "unix:///p.sock", "CONTAINERS_CONF": "/c.conf",
            "GITHUB_WEBHOOK_SECRET": "whsec", "GITHUB_PRIVATE_KEY": "pem", "JUPYTERHUB_API_TOKEN": "hub",
            "LC_ALL": "C.UTF-8"}
    env = child_env(base, job=job, container_engine="podman")
    assert {"DOCKER_HOST", "CONTAINERS_CONF", "LC_ALL", "PATH"} <= set(env)
    assert not {"GITHUB_WEBHOOK_SECRET", "GITHUB_PRIVATE_KEY", "JUPYTERHUB_API_TOKEN"} & set(env)
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_KEY_0"] == "credential.https://git.example:8443.helper"
    assert [k for k, v in env.items() if "ghs_tok" in v] == ["BINDER_PREBUILD_GIT_TOKEN"]
    public = child_env(base, job=make_job(Commit("https://g/o/r", SHA), "i:t"),
                       container_engine="podman")
    assert "GIT_CONFIG_COUNT" not in public and "BINDER_PREBUILD_GIT_TOKEN" not in public


def test_failure_reason_is_one_line():
    tail = ["STEP 3/6: RUN exit 3", 'Error: building at STEP "RUN exit 3": while running runtime: exit status 3']
    assert failure_reason(None, tail, 1) == 'Error: building at STEP "RUN exit 3": while running runtime: exit status 3'
    multi = "Error during build: podman push exited with 125:\nGetting image source signatures\nError: pinging: refused"
    assert failure_reason(multi, [], 1) == "Error during build: podman push exited with 125: Error: pinging: refused"
    assert failure_reason(None, ["all fine"], 2) == "repo2docker exited with code 2"
    assert failure_reason(None, [], -9) == "repo2docker was stopped by signal 9"


# ---------------------------------------------------------------- real builds
async def test_build_pushes_to_registry_with_phases(local_engine, test_base, git_server, settings, images):
    commit = git_server.create(f"ok-{secrets.token_hex(3)}", {"Dockerfile": dockerfile(test_base),
                                                                "index.ipynb": "{}\n"})
    image = image_name(local_engine, commit.sha)
    images.append(image)
    builder = LocalBuilder(settings(), env=local_engine.env)
    emit = Recorder()
    outcome = await builder.run(make_job(commit, image), emit)
    assert outcome.phase == Phase.BUILT, (outcome.reason, outcome.log_tail[-20:])
    assert emit.phases() == [Phase.FETCHING, Phase.BUILDING, Phase.PUSHING]
    assert "Picked Git content provider." in emit.messages  # the generated config is in force
    assert any(m.startswith("Pushing image ") for m in emit.messages)
    assert outcome.log_tail and outcome.log_tail[-1] == emit.messages[-1]
    assert builder.running() == []
    async with aiohttp.ClientSession() as session:
        registry = RegistryClient(session, local_engine.registry_url)
        assert await registry.exists(image) is True
        assert await registry.exists(image.rsplit(":", 1)[0] + ":" + "f" * 40) is False

        # a notebook-only change, built --cache-from the first image (as the scheduler asks)
        second = git_server.commit(commit.clone_url.rsplit("/", 1)[-1].removesuffix(".git"),
                                   {"index.ipynb": '{"cells": []}\n'})
        image2 = image.rsplit(":", 1)[0] + ":" + second.sha
        images.append(image2)
        emit2 = Recorder()
        outcome2 = await builder.run(make_job(second, image2, cache_from=image), emit2)
        assert outcome2.phase == Phase.BUILT, (outcome2.reason, outcome2.log_tail[-20:])
        building_with = next(m for m in emit2.messages if m.startswith("Building with: "))
        assert f"--cache-from {image.rsplit(':', 1)[0]}" in building_with
        assert await registry.exists(image2) is True


async def test_failing_dockerfile_gives_the_reason(local_engine, test_base, git_server, settings, images):
    commit = git_server.create(f"bad-{secrets.token_hex(3)}",
                               {"Dockerfile": dockerfile(test_base, "echo nope; exit 3")})
    image = image_name(local_engine, commit.sha)
    builder = LocalBuilder(settings(), env=local_engine.env)
    emit = Recorder()
    outcome = await builder.run(make_job(commit, image), emit)
    assert outcome.phase == Phase.FAILED
    assert "exit status 3" in outcome.reason and "\n" not in outcome.reason
    assert "nope" in outcome.log_tail
    assert Phase.PUSHING not in emit.phases()
    async with aiohttp.ClientSession() as session:
        assert await RegistryClient(session, local_engine.registry_url).exists(image) is False


async def test_unreachable_repository_fails_at_fetch(local_engine, settings):
    builder = LocalBuilder(settings(), env=local_engine.env)
    emit = Recorder()
    gone = Commit("http://127.0.0.1:9/nothing.git", SHA)
    outcome = await builder.run(make_job(gone, image_name(local_engine, SHA)), emit)
    assert outcome.phase == Phase.FAILED
    assert "Failed to clone repository" in outcome.reason or "127.0.0.1" in outcome.reason, outcome.reason
    assert emit.phases() == [Phase.FETCHING]


async def test_cancel_mid_run_stops_it_and_leaves_no_buildah_containers(
        local_engine, test_base, git_server, settings, images):
    commit, nonce = sleeper_repo(git_server, test_base, "cancel")
    image = image_name(local_engine, commit.sha)
    builder = LocalBuilder(settings(), env=local_engine.env)
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
        local_engine, test_base, git_server, settings, images, tmp_path, caplog):
    """Another build FROM the same image, started during ours (another test run, another service on
    this storage, a plain ``podman build``): stopping ours removes none of its working containers."""
    caplog.set_level(logging.INFO, logger="bot.builders.local")
    commit, nonce = sleeper_repo(git_server, test_base, "conc")
    builder = LocalBuilder(settings(), env=local_engine.env)
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
        images.append(other_tag)
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


def delete_runc_containers_running(nonce: str) -> None:
    """The stopped RUN-step container a SIGKILLed podman build leaves in runc (ours: the nonce says so)."""
    runc = subprocess.run(["runc", "--root", "/run/runc", "list", "--format", "json"], capture_output=True, text=True)
    for c in json.loads(runc.stdout or "null") or []:
        bundle = c.get("bundle") or ""
        try:
            with open(os.path.join(bundle, "config.json")) as f:
                command = " ".join(json.load(f)["process"]["args"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if bundle.startswith("/var/tmp/buildah") and f": {nonce}" in command:
            subprocess.run(["runc", "--root", "/run/runc", "delete", "--force", c["id"]], capture_output=True)
            shutil.rmtree(bundle, ignore_errors=True)


async def test_leftover_check_removes_that_podman_builds_containers_only(
        local_engine, test_base, settings, tmp_path, images):
    """An engine killed before its cleanup leaves its working containers; the check after a stop
    removes exactly those (by the build id), not those of another build running FROM the same image."""
    gate_a, gate_b = tmp_path / "gate-a", tmp_path / "gate-b"
    gate_a.mkdir()
    gate_b.mkdir()
    podman_build = secrets.token_hex(8)
    nonce_a, nonce_b = f"lbkilled{secrets.token_hex(4)}", f"lbalive{secrets.token_hex(4)}"
    tag_a, tag_b = (f"localhost/lbtest-{n}:latest" for n in (nonce_a, nonce_b))
    images.append(tag_b)
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

        builder = LocalBuilder(settings(), env=local_engine.env)
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
        delete_runc_containers_running(nonce_a)
        for arg, value in ((BUILD_ID_ARG, podman_build), ("LBTEST_MARK", nonce_b)):
            mine = containers_with_arg(local_engine, arg, value)
            if mine:
                local_engine.podman("rm", "--force", *mine)
    assert b.returncode == 0  # the other build finished unharmed
    assert local_engine.podman("image", "exists", tag_b).returncode == 0


async def test_timeout_stops_the_build(local_engine, test_base, git_server, settings, images):
    commit, nonce = sleeper_repo(git_server, test_base, "timeout")
    builder = LocalBuilder(settings(build_timeout=6), env=local_engine.env)
    emit = Recorder()
    since = time.time()
    outcome = await builder.run(make_job(commit, image_name(local_engine, commit.sha)), emit)
    assert outcome.phase == Phase.FAILED
    assert outcome.reason == "build timed out after 6 s"
    assert any(m.endswith(f": {nonce}\"") for m in emit.messages)  # it was in the RUN step
    assert processes_with(nonce) == []
    assert buildah_leftovers(local_engine, test_base, step_ids(emit.messages), since) == []
    assert containers_with_arg(local_engine, BUILD_ID_ARG, engine_build_id(emit.messages)) == []


async def test_task_cancellation_stops_the_child(local_engine, test_base, git_server, settings, images):
    """The bot going away (its task cancelled, no cancel()) must not leave repo2docker building."""
    commit, nonce = sleeper_repo(git_server, test_base, "task")
    builder = LocalBuilder(settings(), env=local_engine.env)
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


async def test_bot_killed_the_build_stops(local_engine, test_base, git_server, images):
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


async def test_private_repo_token_never_in_args_or_logs(local_engine, test_base, git_server, settings, images,
                                                        caplog):
    caplog.set_level(logging.DEBUG)
    name = f"private/secret-{secrets.token_hex(3)}"
    commit = git_server.create(name, {"Dockerfile": dockerfile(test_base), "data.txt": "x"}, private=True)
    token = git_server.token
    image = image_name(local_engine, commit.sha)
    images.append(image)
    builder = LocalBuilder(settings(), env=local_engine.env)

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


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


async def test_without_registry_the_image_is_in_local_storage(local_engine, test_base, git_server, settings,
                                                              images):
    commit = git_server.create(f"local-{secrets.token_hex(3)}", {
        "binder/Dockerfile": dockerfile(test_base), "binder/index.ipynb": "{}\n", "README.md": "hi\n"})
    image = image_name(local_engine, commit.sha, registry=False)
    images.append(image)
    builder = LocalBuilder(settings(registry_url=None), env=local_engine.env)
    emit = Recorder()
    outcome = await builder.run(make_job(commit, image, subdir="binder"), emit)
    assert outcome.phase == Phase.BUILT, (outcome.reason, outcome.log_tail[-20:])
    assert Phase.PUSHING not in emit.phases()
    lookup = LocalImages("podman", env=local_engine.env)
    assert await lookup.exists(image) is True
    assert await lookup.exists(image.rsplit(":", 1)[0] + ":" + "f" * 40) is False


async def test_health(local_engine, settings):
    ok, detail = await LocalBuilder(settings(), env=local_engine.env).health()
    assert ok and detail.startswith("podman "), detail
    broken = LocalBuilder(settings(container_engine="podman --remote --url unix:///nonexistent/podman.sock"),
                          env=local_engine.env)
    ok, detail = await broken.health()
    assert not ok and "does not answer" in detail


async def test_through_the_scheduler_supersede_stops_the_process(
        local_engine, test_base, git_server, make_services, images):
    """The scheduler drives LocalBuilder: a newer sha on the branch stops the running build's process."""
    from bot.model import BuildState
    from bot.scheduler import Scheduler

    repo = f"lbsched-{secrets.token_hex(3)}"
    nonce = f"lbsched{secrets.token_hex(4)}"
    first = git_server.create(repo, {"Dockerfile": dockerfile(test_base, f'sh -c "sleep 300; : {nonce}"'),
                                     "unique.txt": secrets.token_hex(8)})
    second = git_server.commit(repo, {"Dockerfile": dockerfile(test_base)})
    services = await make_services(container_engine="podman", registry_url=local_engine.registry_url,
                                   image_prefix="lbtest/", build_timeout=300)
    services.images = RegistryClient(services.session, local_engine.registry_url)
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
        images.append(a.image)
        await wait_process(f": {nonce}")
        pid = builder.pid_of(a.job_id)
        assert pid is not None

        b = await services.scheduler.submit(request(second))
        images.append(b.image)
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
