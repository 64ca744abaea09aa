"""Helpers shared by the LocalBuilder tests (tests/test_local_builder_*.py).

Jobs, an ``emit`` recorder, repositories (tiny Dockerfile repos FROM the offline
base image; a stopped build's RUN step carries a nonce), and looks at what a
build leaves on the machine: processes (/proc), buildah working containers.
The fixtures these tests use (test_base, lb_images, lb_settings) are in tests/fixtures/local_builder.py.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable

from bot.builders.podman_leftovers import build_id_in, builder_args
from bot.model import BuildJob, BuildRequest, Phase, ProgressEvent
from tests.git_server import Commit

SHA = "0123456789abcdef0123456789abcdef01234567"


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


def ps_external(local_engine) -> list[dict]:
    """``podman ps --all --external``, again when it fails with 125: it races containers that other
    builds remove while it lists them ("no such container"), a passing state, not an answer."""
    for attempt in range(5):
        proc = local_engine.podman("ps", "--all", "--external", "--format", "json")
        if proc.returncode == 0:
            return json.loads(proc.stdout or "null") or []
        if proc.returncode != 125 or attempt == 4:
            proc.check_returncode()
        time.sleep(0.2)
    raise AssertionError("unreachable")


def containers_with_arg(local_engine, name: str, value: str) -> list[str]:
    """Working containers whose buildah.json carries build arg ``name=value`` (a build's own mark)."""
    info = local_engine.podman("info", "--format", "{{.Store.GraphRoot}} {{.Store.GraphDriverName}}", check=True)
    root, driver = info.stdout.split()
    return sorted(c["Id"] for c in ps_external(local_engine)
                  if (builder_args(root, driver, c["Id"]) or {}).get(name) == value)


def engine_build_id(messages: list[str]) -> str:
    """The id PodmanEngine gave the build (its ``Building with:`` line)."""
    found = next((build_id_in(m) for m in messages if m.startswith("Building with: ")), None)
    assert found, messages[:20]
    return found


def buildah_leftovers(local_engine, base_alias: str, ids: set[str], since: float) -> list[dict]:
    """Working containers of a stopped build: made from our base alias or one of its step images."""
    name = base_alias.split("/")[-1].split(":")[0] + "-working-container"
    return [c for c in ps_external(local_engine)
            if c.get("Created", 0) >= since - 2
            and (any(n.startswith(name) for n in c.get("Names") or []) or (c.get("ImageID") or "")[:11] in ids)]


def delete_runc_leftovers(nonces: Iterable[str]) -> None:
    """Delete the RUN-step containers a SIGKILLed podman build leaves in runc, and their
    buildah bundles: only ours (a test's nonce is in the command), never anyone else's."""
    nonces = list(nonces)
    if not nonces:
        return
    runc = subprocess.run(["runc", "--root", "/run/runc", "list", "--format", "json"], capture_output=True, text=True)
    for c in json.loads(runc.stdout or "null") or []:
        bundle = c.get("bundle") or ""
        try:
            with open(os.path.join(bundle, "config.json")) as f:
                command = " ".join(json.load(f)["process"]["args"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if re.fullmatch(r"/var/tmp/buildah\d+", bundle) and any(f": {n}" in command for n in nonces):
            subprocess.run(["runc", "--root", "/run/runc", "delete", "--force", c["id"]], capture_output=True)
            shutil.rmtree(bundle, ignore_errors=True)
