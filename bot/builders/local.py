"""LocalBuilder: repo2docker as a child process against the local Docker or Podman.

Each build is ``python -m repo2docker ... --json-logs`` in its own session, so it
can be stopped as a whole and its output streamed: JSON log lines become
progress events (``r2d_logs``, shared with the Kubernetes builder) and a bounded
tail. With Podman, repo2docker uses our ``podman`` engine (``podman build`` +
``podman push``), which removes an interrupted build's buildah leftovers when
repo2docker gets SIGINT.

Stopping: ``cancel(build_id)`` (superseded, PR closed) and a build timeout send
SIGINT to the process group, then SIGTERM and SIGKILL after grace periods, and
then check that no buildah working container of that build remains (removing
any that do). A build's containers are found by the id the engine gives its
``podman build`` (its ``Building with:`` line, ``podman_leftovers``), never by
image or time: other builds FROM the same image, in this process or any other
using the same storage, keep theirs. Cancelling the task running ``run`` (the bot is going away) stops
the child the same way: a local build cannot outlive the bot (the child also
gets SIGINT if the bot dies, through PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bot.builders.base import Builder, Emit
from bot.builders.engine_cli import run_engine_cli
from bot.builders.local_r2d import (
    BadJob, LineSplitter, child_env, engine_command, engine_name, failure_reason, r2d_args, r2d_config,
)
from bot.builders.podman_leftovers import STORE_FORMAT, build_id_in, builder_args, containers_of_build, parse_store
from bot.builders.r2d_logs import LogReader
from bot.config import Settings
from bot.model import BuildJob, BuildOutcome, Phase, ProgressEvent

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
_BUILDING_WITH = "Building with: "  # PodmanEngine's first line: the podman build command, with its id


def _pdeathsig_setter():
    """A preexec_fn giving the child SIGINT when the bot dies (PR_SET_PDEATHSIG).

    prctl is looked up here, in the parent: the child, forked from a process that
    may have threads, only makes the call (no dlopen between fork and exec).
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(1, int(signal.SIGINT), 0, 0, 0)

    return preexec


@dataclasses.dataclass(eq=False)
class _Run:
    """One running repo2docker process."""

    build_id: str
    proc: asyncio.subprocess.Process
    podman_build: str | None = None  # the engine's id of its podman build (R2D_PODMAN_BUILD_ID)
    cancelled: bool = False
    pumping: bool = False  # someone reads its output (else a stop drains it: a full pipe blocks the child)
    stopper: asyncio.Task[None] | None = None


class LocalBuilder(Builder):
    name = "local"

    def __init__(
        self, settings: Settings, *, env: Mapping[str, str] | None = None, python: str = sys.executable,
        cancel_grace: float = 30.0, term_grace: float = 10.0, tail_lines: int = LOG_TAIL_LINES,
    ) -> None:
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.python = python
        self.cancel_grace = cancel_grace  # SIGINT -> SIGTERM: the engine's own cleanup takes a few seconds
        self.term_grace = term_grace  # SIGTERM -> SIGKILL
        self.tail_lines = tail_lines
        self.engine = engine_name(settings.container_engine)
        self.command = engine_command(settings.container_engine)
        self._runs: dict[str, _Run] = {}
        self._preexec = _pdeathsig_setter()
        self._storage: tuple[str, str] | None = None  # podman's graph root and driver

    # -- lifecycle ------------------------------------------------------------
    async def close(self) -> None:
        """Stop every build still running (the bot is shutting down)."""
        runs = list(self._runs.values())
        await asyncio.gather(*(self._stop(r) for r in runs), return_exceptions=True)

    async def health(self) -> tuple[bool, str]:
        if importlib.util.find_spec("repo2docker") is None:
            return False, "repo2docker is not installed (pip install jupyter-repo2docker)"
        if self.engine == "podman":
            args = ("info", "--format", "{{.Version.Version}}")
        else:
            args = ("version", "--format", "{{.Server.Version}}")
        rc, out, err = await self._engine_cli(*args, timeout=10.0)
        if rc == 0:
            return True, f"{self.engine} {out.strip()}, {len(self._runs)} build(s) running"
        detail = err.strip().splitlines()[-1][:300] if err.strip() else f"exit {rc}"
        return False, f"{self.engine} does not answer: {detail}"

    def running(self) -> list[str]:
        """Build ids with a live repo2docker process."""
        return list(self._runs)

    def pid_of(self, build_id: str) -> int | None:
        run = self._runs.get(build_id)
        return run.proc.pid if run else None

    # -- run --------------------------------------------------------------------
    async def run(self, job: BuildJob, emit: Emit) -> BuildOutcome:
        bid = job.build_id
        if bid in self._runs:
            return BuildOutcome(Phase.FAILED, "this build is already running in this process")
        reader = LogReader(self.tail_lines, secrets=[job.clone_token])
        workdir = Path(tempfile.mkdtemp(prefix=f"binder-prebuild-{bid[:32]}-"))
        try:
            config = workdir / "repo2docker_config.py"
            config.write_text(r2d_config(self.settings.container_engine))
            try:
                argv = r2d_args(job, container_engine=self.settings.container_engine,
                                push=bool(self.settings.registry_url), config_path=str(config), python=self.python)
            except BadJob as e:
                log.warning("build %s: refused: %s", bid, e)
                return BuildOutcome(Phase.FAILED, str(e))
            env = child_env(self.env, job=job, container_engine=self.settings.container_engine,
                            auth_file=self._auth_file())
            await emit(ProgressEvent(Phase.FETCHING, f"repo2docker: fetching {job.request.clone_url} "
                                                     f"at {job.request.sha[:12]}"))
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT, cwd=str(workdir), env=env, start_new_session=True,
                    preexec_fn=self._preexec)
            except OSError as e:
                log.error("build %s: cannot start repo2docker: %s", bid, e)
                return BuildOutcome(Phase.FAILED, f"cannot start repo2docker: {e.strerror or e}")
            run = _Run(bid, proc)
            self._runs[bid] = run
            log.info("build %s: repo2docker pid %d (%s engine) building %s", bid, proc.pid, self.engine, job.image)
            return await self._follow(job, run, reader, emit)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _follow(self, job: BuildJob, run: _Run, reader: LogReader, emit: Emit) -> BuildOutcome:
        bid = job.build_id
        timeout = self.settings.build_timeout
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout):
                    await self._pump(run, reader, emit)
                    await run.proc.wait()
            except TimeoutError:
                timed_out = True
                log.warning("build %s: timed out after %s s; stopping repo2docker", bid, timeout)
                await self._stop(run)
        except BaseException:  # the task was cancelled (the bot is going away) or emit failed
            if run.proc.returncode is None or run.stopper is not None:
                log.info("build %s: stopping repo2docker (pid %d)", bid, run.proc.pid)
                await self._stop(run)
            raise
        finally:
            if self._runs.get(bid) is run:
                del self._runs[bid]
        if run.stopper is not None:  # cancel() or the timeout: let its cleanup check finish
            await asyncio.shield(run.stopper)
        rc = run.proc.returncode
        tail = reader.tail.lines()
        if run.cancelled:
            log.info("build %s: cancelled", bid)
            return BuildOutcome(Phase.CANCELLED, "cancelled", tail)
        if timed_out:
            return BuildOutcome(Phase.FAILED, f"build timed out after {timeout} s", tail)
        if rc == 0:
            log.info("build %s: repo2docker finished", bid)
            return BuildOutcome(Phase.BUILT, "", tail)
        reason = failure_reason(reader.failure, tail, rc)
        log.info("build %s: repo2docker failed (exit %s): %s", bid, rc, reason)
        return BuildOutcome(Phase.FAILED, reason, tail)

    async def _pump(self, run: _Run, reader: LogReader, emit: Emit) -> None:
        """Output lines -> reader (phase, tail, failure) -> progress events, until EOF."""
        assert run.proc.stdout is not None
        splitter = LineSplitter()
        run.pumping = True
        try:
            while True:
                data = await run.proc.stdout.read(65536)
                for raw in splitter.feed(data) if data else splitter.flush():
                    item = reader.feed(raw)
                    if item is None:
                        continue
                    phase, message = item
                    if run.podman_build is None and phase is Phase.BUILDING and message.startswith(_BUILDING_WITH):
                        # the first such line only: a RUN step's output comes later and could imitate it
                        run.podman_build = build_id_in(message) or ""
                    await emit(ProgressEvent(phase, message))
                if not data:
                    return
        finally:
            run.pumping = False

    # -- cancel -----------------------------------------------------------------
    async def cancel(self, build_id: str) -> None:
        run = self._runs.get(build_id)
        if run is None:
            return
        run.cancelled = True
        log.info("build %s: cancelling repo2docker (pid %d)", build_id, run.proc.pid)
        await self._stop(run)

    async def _stop(self, run: _Run) -> None:
        """Stop one process (once, whoever asks first) and check what it left behind."""
        if run.stopper is None:
            run.stopper = asyncio.create_task(self._terminate(run), name=f"stop-{run.build_id}")
        await asyncio.shield(run.stopper)

    async def _terminate(self, run: _Run) -> None:
        proc = run.proc
        drain = None if run.pumping else asyncio.create_task(self._drain(run))
        for sig, grace in ((signal.SIGINT, self.cancel_grace), (signal.SIGTERM, self.term_grace),
                           (signal.SIGKILL, None)):
            if proc.returncode is not None:
                break
            if sig is not signal.SIGINT:
                log.warning("build %s: repo2docker still running; sending %s", run.build_id, sig.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # its own session: repo2docker and git; podman has its own
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except asyncio.TimeoutError:
                continue
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        if self.engine == "podman":
            try:
                if run.podman_build:  # else podman build never started (or the engine gave no id)
                    await self.remove_leftovers(run.build_id, run.podman_build)
            except Exception:  # never let the check mask the stop
                log.exception("build %s: could not check for buildah leftovers", run.build_id)

    @staticmethod
    async def _drain(run: _Run) -> None:
        assert run.proc.stdout is not None
        with contextlib.suppress(Exception):
            while await run.proc.stdout.read(65536):
                pass

    async def remove_leftovers(self, build_id: str, podman_build: str) -> list[str]:
        """No buildah working container of one podman build may remain (the engine removes them; check).

        Only the containers whose buildah state carries that build's id are
        touched (see ``podman_leftovers``): others on the machine are not ours.
        Returns the ids removed.
        """
        removed: list[str] = []
        for attempt in range(2):
            doomed = await self._build_containers(build_id, podman_build)
            if not doomed:
                if doomed is not None and not attempt:
                    log.info("build %s: podman build %s left no working container", build_id, podman_build)
                return removed
            if attempt:
                log.warning("build %s: %d working container(s) of podman build %s could not be removed: %s",
                            build_id, len(doomed), podman_build, ", ".join(d[:12] for d in doomed))
                return [d for d in removed if d not in doomed]
            log.info("build %s: removing %d working container(s) podman build %s left behind",
                     build_id, len(doomed), podman_build)
            await self._engine_cli("rm", "--force", *doomed)
            removed = doomed
        return removed

    async def _build_containers(self, build_id: str, podman_build: str) -> list[str] | None:
        """Ids of the working containers of one podman build (None: podman could not tell)."""
        if self._storage is None:
            rc, out, err = await self._engine_cli("info", "--format", STORE_FORMAT)
            self._storage = parse_store(out) if rc == 0 else None
            if self._storage is None:
                log.warning("build %s: podman info failed: %s", build_id, err.strip()[-300:])
                return None
        rc, out, err = await self._engine_cli("ps", "--all", "--external", "--format", "json")
        if rc != 0:
            log.warning("build %s: podman ps failed: %s", build_id, err.strip()[-300:])
            return None
        root, driver = self._storage
        return containers_of_build(json.loads(out or "null") or [], podman_build,
                                   lambda cid: builder_args(root, driver, cid))

    # -- helpers ----------------------------------------------------------------
    def _auth_file(self) -> Path | None:
        if not self.settings.docker_config:
            return None
        from bot.registry import docker_config_path

        path = docker_config_path(self.settings.docker_config)
        return path if path.is_file() else None

    async def _engine_cli(self, *args: str, timeout: float = 60.0) -> tuple[int | None, str, str]:
        """Run the engine CLI (None, "", reason when it cannot run or does not finish)."""
        env = {k: v for k, v in self.env.items() if not k.startswith(("GITHUB_", "JUPYTERHUB_"))}
        return await run_engine_cli(self.command, args, env=env, timeout=timeout)
