"""LocalImages: image lookup in the local engine (no REGISTRY_URL), against real Podman."""
from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from bot.builders.local_images import LocalImages, classify_inspect

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def podman_env(tmp_path):
    """Podman with its own throw-away storage (vfs), so tests never touch the machine's images."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `apt-get install podman runc` (.ci/run installs it)", pytrace=False)
    runroot = tempfile.mkdtemp(prefix="li-run-", dir="/tmp")  # podman wants a runroot under 50 characters
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path / "graph"}"\nrunroot = "{runroot}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("CONTAINER_HOST", "DOCKER_HOST")}
    env["CONTAINERS_STORAGE_CONF"] = str(conf)
    env["TEST_RUNROOT"] = runroot
    yield env
    subprocess.run(["podman", "rmi", "--all", "--force"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(runroot, ignore_errors=True)


def podman_import(env: dict, tmp_path, ref: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    path = tmp_path / "img.tar"
    path.write_bytes(buf.getvalue())
    subprocess.run(["podman", "import", str(path), ref], env=env, check=True, capture_output=True, timeout=60)


def fake_engine(tmp_path, body: str, name: str = "engine") -> str:
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def test_classify_inspect():
    assert classify_inspect(0, "") is True
    assert classify_inspect(125, "Error: inspecting object: x: image not known") is False
    assert classify_inspect(1, "Error response from daemon: No such image: x:latest") is False
    assert classify_inspect(1, "Error: No such object: x") is False
    assert classify_inspect(1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.") is None
    assert classify_inspect(125, "Error: unable to connect to Podman socket") is None


async def test_podman_present_and_missing(podman_env, tmp_path):
    podman_import(podman_env, tmp_path, f"binder-prebuild/binder-2dexamples-2drequirements-55ab5c:{SHA}")
    images = LocalImages("podman", env=podman_env)
    # the name the scheduler uses without a registry: IMAGE_PREFIX + slug, no host
    assert await images.exists(f"binder-prebuild/binder-2dexamples-2drequirements-55ab5c:{SHA}") is True
    assert await images.exists("binder-prebuild/binder-2dexamples-2drequirements-55ab5c:other") is False
    assert await images.exists(f"binder-prebuild/never-built-abc123:{SHA}") is False
    assert await images.health() == (True, "podman ok")


async def test_engine_flags_in_the_setting(podman_env, tmp_path):
    """CONTAINER_ENGINE may carry global flags; here they point podman at the test storage."""
    env = dict(podman_env)
    podman_import(env, tmp_path, "localhost/flagged:1")
    root = tmp_path / "graph"
    env.pop("CONTAINERS_STORAGE_CONF")
    images = LocalImages(f"podman --storage-driver vfs --root {root} --runroot {env['TEST_RUNROOT']}", env=env)
    assert await images.exists("localhost/flagged:1") is True
    assert await images.exists("localhost/flagged:2") is False


async def test_missing_engine_cli_is_unknown(tmp_path):
    images = LocalImages(str(tmp_path / "no-such-engine"))
    assert await images.exists("foo:1") is None
    ok, detail = await images.health()
    assert not ok and "cannot run" in detail


async def test_engine_down_is_unknown(tmp_path):
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is not on PATH (it ships on this machine image)", pytrace=False)
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock")
    images = LocalImages("docker", env=env)
    assert await images.exists("foo:1") is None
    assert (await images.health())[0] is False


async def test_unexpected_error_and_timeout_are_unknown(tmp_path):
    broken = LocalImages(fake_engine(tmp_path, 'echo "Error: database is locked" >&2; exit 125'))
    assert await broken.exists("foo:1") is None
    hung = LocalImages(fake_engine(tmp_path, "exec sleep 30", name="hung"), timeout=0.3)
    assert await hung.exists("foo:1") is None


async def test_concurrent_lookups_share_one_process(tmp_path):
    log = tmp_path / "calls"
    engine = fake_engine(tmp_path, f'echo "$@" >> {log}; sleep 0.2; echo sha256:abc')
    images = LocalImages(engine)
    answers = await asyncio.gather(*(images.exists("foo:1") for _ in range(10)), images.exists("bar:1"))
    assert answers == [True] * 11
    calls = log.read_text().splitlines()
    assert sorted(calls) == ["image inspect --format {{.Id}} bar:1", "image inspect --format {{.Id}} foo:1"]


async def test_option_like_names_are_refused(tmp_path):
    log = tmp_path / "calls"
    images = LocalImages(fake_engine(tmp_path, f'echo "$@" >> {log}'))
    assert await images.exists("--help") is None
    assert not log.exists()
