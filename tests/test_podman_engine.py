"""PodmanEngine (repo2docker's ``podman`` engine) against real Podman.

Every build here is a tiny Dockerfile FROM the offline base image, with a nonce
in its RUN step so that step's processes are ours alone; the working containers
of a build are told apart by the build id the engine gives each build (a
``--build-arg`` buildah keeps in the working container's ``buildah.json``).
Nothing here removes an image or container it did not make: other tests build
from the same base image in the same storage at the same time.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.builders.podman_args import (
    BuildSpec, build_command, build_tls_verify, cache_plan, cache_repository_of, dockerfile_base_images,
    is_loopback_registry, login_command, push_command,
)
from bot.builders.podman_engine import BuildCancelled, PodmanEngine
from bot.builders.podman_leftovers import (
    BUILD_ID_ARG, build_id_in, builder_args, containers_of_build, parse_store, without_build_id_warning,
)
from tests.local_builder_helpers import delete_runc_leftovers, ps_external

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers
def processes_with(text: str) -> list[int]:
    """Live (not zombie) pids whose command line contains ``text``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() not in f.read():
                    continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        pids.append(int(entry))
    return pids


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def context(tmp_path: Path, name: str, dockerfile: str) -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def storage(local_engine) -> tuple[str, str]:
    out = local_engine.podman("info", "--format", "{{.Store.GraphRoot}} {{.Store.GraphDriverName}}", check=True)
    root, driver = out.stdout.split()
    return root, driver


def working_containers(local_engine, build_id: str) -> list[str]:
    """buildah working containers whose buildah.json carries this build id."""
    root, driver = storage(local_engine)
    return [c["Id"] for c in ps_external(local_engine)
            if (builder_args(root, driver, c["Id"]) or {}).get(BUILD_ID_ARG) == build_id]


def build_id_of(lines: list[str]) -> str:
    for line in lines:
        found = build_id_in(line)
        if found:
            return found
    raise AssertionError(f"no build id in {lines[:3]}")


def make_engine(env: dict[str, str], **traits) -> PodmanEngine:
    return PodmanEngine(podman_env=env, **traits)


def engine_env(local_engine) -> dict[str, str]:
    return {k: v for k, v in local_engine.env.items() if k.startswith("CONTAINERS_")}


@pytest.fixture
def tags(local_engine):
    """Tags a test builds; removed afterwards with their images (a nonce in each Dockerfile makes them ours)."""
    made: list[str] = []
    yield made
    for tag in made:
        if local_engine.podman("image", "exists", tag).returncode == 0:
            local_engine.podman("rmi", tag)  # no --force: an image someone else uses stays


@pytest.fixture
def ours(local_engine):
    """Nonces and build ids of this test: whatever a failing engine left of them is removed afterwards."""
    made: dict[str, list[str]] = {"nonces": [], "build_ids": []}
    yield made
    delete_runc_leftovers(made["nonces"])
    for build_id in made["build_ids"]:
        leftovers = working_containers(local_engine, build_id)
        if leftovers:
            local_engine.podman("rm", "--force", *leftovers)


def new_tag(tags: list[str], what: str) -> str:
    tag = f"localhost/pe-test-{what}-{secrets.token_hex(4)}:latest"
    tags.append(tag)
    return tag


# ---------------------------------------------------------------- pure parts
def test_build_id_and_its_warning():
    line = "Building with: podman build --layers --build-arg NB_USER=jovyan --build-arg R2D_PODMAN_BUILD_ID=0a1b2c /ctx"
    assert build_id_in(line) == "0a1b2c"
    assert build_id_in("Building with: podman build /ctx") is None
    warn = "[Warning] one or more build args were not consumed: [%s]\n"
    assert without_build_id_warning(warn % "R2D_PODMAN_BUILD_ID") is None
    assert without_build_id_warning(warn % "NB_UID R2D_PODMAN_BUILD_ID ZZ") == warn % "NB_UID ZZ"
    assert without_build_id_warning(warn % "NB_UID") == warn % "NB_UID"
    assert without_build_id_warning("STEP 1/2: FROM x\n") == "STEP 1/2: FROM x\n"


def test_image_references():
    assert cache_repository_of("127.0.0.1:5000/p/o-r:abc") == "127.0.0.1:5000/p/o-r"
    assert cache_repository_of("quay.io/x/y@sha256:00") == "quay.io/x/y"
    assert cache_repository_of("x/y") == "x/y"
    assert [is_loopback_registry(r) for r in ("localhost:5000/a", "127.0.0.2:5000/a", "[::1]:5000/a",
                                              "quay.io/a", "a/b")] == [True, True, True, False, False]
    text = "FROM python:3 AS base\nFROM --platform=x base\nFROM scratch\nfrom localhost/x:y AS z\n"
    assert dockerfile_base_images(text) == ["python:3", "localhost/x:y"]


def test_cache_plan_and_tls_decisions():
    tag, old = "127.0.0.1:5000/p/r:new", "127.0.0.1:5000/p/r:old"
    assert cache_plan(tag, [old], True, layer_cache=False, cache_repository="") == ("127.0.0.1:5000/p/r", False)
    assert cache_plan(tag, [], True, layer_cache=False, cache_repository="") == (None, False)
    assert cache_plan(tag, [], True, layer_cache=True, cache_repository="") == ("127.0.0.1:5000/p/r", True)
    assert cache_plan(tag, [], False, layer_cache=True, cache_repository="{repository}-cache") == (
        "127.0.0.1:5000/p/r-cache", False)
    assert build_tls_verify(None, "127.0.0.1:5000/p/r", ["localhost/base:1"]) is False
    assert build_tls_verify(None, "127.0.0.1:5000/p/r", ["python:3"]) is None  # docker.io: registries.conf
    assert build_tls_verify(None, "127.0.0.1:5000/p/r", None) is None  # Dockerfile unreadable
    assert build_tls_verify(True, "127.0.0.1:5000/p/r", []) is True


def test_command_lines():
    spec = BuildSpec(build_id="0a1b", context="/ctx", dockerfile="/ctx/Dockerfile", iidfile="/w/iid", tag="r:t",
                     buildargs={"NB_USER": "jovyan"}, labels={"l": "v"}, limits={"memory": 10, "cpushares": 0},
                     ca_bundle="/etc/ca.crt", cache_repo="reg/r", cache_to=True, tls_verify=False)
    args = build_command(["podman", "--root", "/x"], spec)
    line = " ".join(args)
    assert args[:4] == ["podman", "--root", "/x", "build"] and args[-1] == "/ctx"
    assert build_id_in(line) == "0a1b" and line.index(BUILD_ID_ARG) < line.index("--file")
    for part in ("--build-arg NB_USER=jovyan", "--label l=v", "--memory 10", "--cache-from reg/r",
                 "--cache-to reg/r", "--tls-verify=false", "--iidfile /w/iid", "--tag r:t",
                 "--volume /etc/ca.crt:/etc/ssl/certs/ca-certificates.crt:ro"):
        assert part in line
    assert "--cpu-shares" not in line and "--authfile" not in line
    assert push_command(["podman"], "127.0.0.1:5000/r:t", tls_verify=None, authfile=None, digestfile="/d") == [
        "podman", "push", "--tls-verify=false", "--digestfile", "/d", "127.0.0.1:5000/r:t"]
    assert "--tls-verify=false" not in push_command(["podman"], "quay.io/r:t", tls_verify=None, authfile="/a",
                                                   digestfile="/d")
    assert login_command(["podman"], "https://127.0.0.1:5000/", "u", authfile="/a", tls_verify=None)[-2:] == [
        "--tls-verify=false", "127.0.0.1:5000"]


def test_parse_store():
    assert parse_store("/var/lib/containers/storage\toverlay\n") == ("/var/lib/containers/storage", "overlay")
    for bad in ("", "\toverlay", "/root\t", "relative\toverlay", "Error: no"):
        assert parse_store(bad) is None


def test_containers_of_build_only_those_with_its_id():
    args = {"a1": {"R2D_PODMAN_BUILD_ID": "mine", "NB_USER": "jovyan"}, "a2": {"R2D_PODMAN_BUILD_ID": "mine"},
            "b": {"R2D_PODMAN_BUILD_ID": "theirs"}, "c": {"NB_USER": "jovyan"}, "run": {"R2D_PODMAN_BUILD_ID": "mine"}}
    containers = [
        {"Id": "a1", "Command": ["buildah"], "State": "storage"},
        {"Id": "b", "Command": ["buildah"], "State": "storage"},  # same base, same moment: another build
        {"Id": "c", "Command": ["buildah"], "State": "storage"},  # a build by another tool
        {"Id": "nostate", "Command": ["buildah"], "State": "storage"},
        {"Id": "a2", "Command": None, "State": "Storage"},
        {"Id": "run", "Command": ["sleep", "1"], "State": "running"},  # podman's own container
    ]
    assert containers_of_build(containers, "mine", args.get) == ["a1", "a2"]


def test_builder_args_reads_buildah_state(tmp_path):
    cid = "ab" * 32
    state = tmp_path / "overlay-containers" / cid / "userdata"
    state.mkdir(parents=True)
    (state / "buildah.json").write_text(json.dumps({"Type": "buildah 0.0.1", "Args": {"K": "v"}}))
    assert builder_args(str(tmp_path), "overlay", cid) == {"K": "v"}
    assert builder_args(str(tmp_path), "vfs", cid) is None
    assert builder_args(str(tmp_path), "overlay", "../" + cid) is None


_GUARD_SCRIPT = """
import json, os, signal
from bot.builders.podman_leftovers import SignalGuard

class Stop(Exception):
    pass

def kill(sig):
    os.kill(os.getpid(), sig)  # Python runs the handler right after this call

out = []
before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

# a cleanup with another cause (cancel_build, generator closed): signals wait, then the first acts
g = SignalGuard(lambda: Stop(), sigterm_stops=True).install()
try:
    try:
        g.holding += 1
        try:
            kill(signal.SIGINT)
            kill(signal.SIGTERM)
            out.append("cleanup done")
        finally:
            g.release()
        out.append("went on")
    except KeyboardInterrupt:
        out.append("KeyboardInterrupt after the cleanup")
finally:
    g.uninstall()

# a SIGTERM stops the build; repeated signals during its cleanup are dropped
g = SignalGuard(lambda: Stop(), sigterm_stops=True).install()
try:
    try:
        try:
            kill(signal.SIGTERM)
            out.append("not stopped")
        finally:
            g.holding += 1
            try:
                kill(signal.SIGTERM)
                kill(signal.SIGINT)
                out.append("cleanup done")
            finally:
                g.release()
    except Stop:
        out.append("Stop")
    kill(signal.SIGINT)  # after the cleanup, before build() returns: still stopping
    out.append("dropped")
finally:
    g.uninstall()

# a stop the consumer swallowed: once it asks for more lines, the next signal stops again
g = SignalGuard(lambda: Stop(), sigterm_stops=True).install()
try:
    for _ in range(2):
        try:
            kill(signal.SIGINT)
        except KeyboardInterrupt:
            out.append("KeyboardInterrupt")
        g.resumed()
finally:
    g.uninstall()

out.append([signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)] == list(before))
print(json.dumps(out))
"""


def test_signal_guard_holds_signals_during_cleanup():
    proc = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        "cleanup done", "KeyboardInterrupt after the cleanup",
        "cleanup done", "Stop", "dropped",
        "KeyboardInterrupt", "KeyboardInterrupt",
        True,
    ]


# ---------------------------------------------------------------- the build id: cache, image, output
def test_build_id_leaves_cache_image_and_log_alone(local_engine, base_image, tmp_path, tags):
    """Two builds of one Dockerfile get two ids; the second still reuses the first's layers."""
    nonce = f"pecache{secrets.token_hex(4)}"
    ctx = context(tmp_path, "ctx", f'FROM {base_image}\nRUN echo "id=${{{BUILD_ID_ARG}:-unset}} {nonce}"\n')
    env = engine_env(local_engine)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    first = list(make_engine(env).build(path=str(ctx), tag=new_tag(tags, "cache1")))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored
    second = list(make_engine(env).build(path=str(ctx), tag=new_tag(tags, "cache2")))
    assert build_id_of(first) != build_id_of(second)
    assert any(line.startswith(f"id=unset {nonce}") for line in first), first  # not in the RUN environment
    assert not any(line.startswith("--> Using cache") for line in first)
    assert any(line.startswith("--> Using cache") for line in second), second
    assert not any("not consumed" in line for line in first + second)
    ids = {local_engine.podman("image", "inspect", "--format", "{{.Id}}", t, check=True).stdout for t in tags}
    assert len(ids) == 1  # the very same image
    inspect = local_engine.podman("image", "inspect", tags[0], check=True).stdout
    assert build_id_of(first) not in inspect and f"{BUILD_ID_ARG}=" not in inspect  # history, config, labels
    assert working_containers(local_engine, build_id_of(first)) == []


# ---------------------------------------------------------------- 1: cleanup survives repeated signals
_DRIVER = """
import sys
from bot.builders.podman_engine import PodmanEngine
ctx, tag = sys.argv[1:3]
for line in PodmanEngine().build(path=ctx, tag=tag):
    print(line, end="", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_repeated_signals_do_not_interrupt_the_cleanup(local_engine, base_image, tmp_path, tags, ours, sig):
    """A second Ctrl-C (or the parent-death signal, once per exiting thread) during cleanup.

    repo2docker runs the engine single-threaded in its main thread; the first
    signal stops the build, and a storm of further ones until the process is
    gone must not stop the cleanup half-way: the RUN step's container would run on.
    """
    nonce = f"pesig{secrets.token_hex(4)}"
    ours["nonces"].append(nonce)
    ctx = context(tmp_path, "ctx", f'FROM {base_image}\nRUN sh -c "sleep 300; : {nonce}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(ctx), new_tag(tags, "sig")], cwd=ROOT, env=local_engine.env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        build_id = build_id_of([first])
        ours["build_ids"].append(build_id)
        wait_until(lambda: processes_with(f": {nonce}"), 60, "the RUN step")
        assert working_containers(local_engine, build_id)

        proc.send_signal(sig)
        sent = 1
        while proc.poll() is None and sent < 2000:  # the same signal again, every 10 ms, until it exits
            time.sleep(0.01)
            proc.send_signal(sig)
            sent += 1
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = first + proc.stdout.read()
    assert processes_with(f": {nonce}") == [], output[-2000:]  # the RUN step did not run on
    assert processes_with(build_id) == []  # nor did podman build
    assert working_containers(local_engine, build_id) == [], output[-2000:]
    assert rc != 0 and sent >= 2


# ---------------------------------------------------------------- 2: concurrent builds from one base
class BuildThread(threading.Thread):
    def __init__(self, engine: PodmanEngine, ctx: Path, tag: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.ctx, self.tag = engine, ctx, tag
        self.lines: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for line in self.engine.build(path=str(self.ctx), tag=self.tag):
                self.lines.append(line)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_cancelling_one_of_two_concurrent_builds_leaves_the_other(local_engine, base_image, tmp_path, tags, ours):
    """Two builds FROM the same base at the same time; cancelling one must not touch the other's containers."""
    gate = tmp_path / "gate"
    gate.mkdir()
    nonce_a, nonce_b = f"pecca{secrets.token_hex(4)}", f"peccb{secrets.token_hex(4)}"
    ours["nonces"] += [nonce_a, nonce_b]
    ctx_a = context(tmp_path, "a", f'FROM {base_image}\nRUN sh -c "sleep 300; : {nonce_a}"\n')
    # b waits in its RUN step until the test opens the gate (after a's cleanup)
    ctx_b = context(tmp_path, "b", f'FROM {base_image}\n'
                                   f'RUN sh -c "while [ ! -e /gate/open ]; do sleep 0.1; done; : {nonce_b}"\n')
    env = engine_env(local_engine)
    a = BuildThread(make_engine(env), ctx_a, new_tag(tags, "cca"))
    b = BuildThread(make_engine(env, build_volumes=[f"{gate}:/gate:ro"]), ctx_b, new_tag(tags, "ccb"))
    a.start()
    b.start()
    try:
        wait_until(lambda: processes_with(f": {nonce_a}") and processes_with(f": {nonce_b}"), 90,
                   "both RUN steps")
        id_a, id_b = build_id_of(a.lines), build_id_of(b.lines)
        ours["build_ids"] += [id_a, id_b]
        assert id_a != id_b
        assert working_containers(local_engine, id_b)

        assert PodmanEngine.cancel_build(a.tag) is True
        a.join(60)
        assert not a.is_alive()
        assert isinstance(a.error, BuildCancelled), a.error
        assert processes_with(f": {nonce_a}") == []
        assert working_containers(local_engine, id_a) == []
        assert working_containers(local_engine, id_b), "a's cleanup removed b's working container"
    finally:
        (gate / "open").touch()
        PodmanEngine.cancel_build(a.tag)
        a.join(60)
        b.join(120)
    assert b.error is None, "".join(b.lines[-20:])
    assert local_engine.podman("image", "exists", b.tag).returncode == 0
    assert working_containers(local_engine, id_b) == []  # buildah removed it when done
