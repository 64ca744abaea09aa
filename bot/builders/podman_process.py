"""The podman processes ``PodmanEngine`` runs: output streaming, stopping from any thread, cleanup.

A build or push runs in its own session (a Ctrl-C meant for repo2docker
reaches Python, whose cleanup then stops podman) and is registered under its
tag, so ``cancel(tag)`` can stop it from another thread. A build that does not
finish normally (cancelled, the consumer closed the generator, an exception)
gets its RUN-step runc container and bundle removed, then its buildah working
containers, found by its ``R2D_PODMAN_BUILD_ID`` (``podman_leftovers``).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping

from repo2docker.engine import BuildError

from bot.builders.podman_leftovers import (
    STORE_FORMAT, SignalGuard, builder_args, containers_of_build, parse_store, remove_runc_containers,
    runc_containers_under, without_build_id_warning,
)

log = logging.getLogger(__name__)

_LINE_END = re.compile(rb"\r\n|\n|\r(?=.)", re.DOTALL)


class BuildCancelled(BuildError):
    """The build was stopped by ``PodmanEngine.cancel_build``."""


class LineSplitter:
    """Split a byte stream into text lines on ``\\n`` or a bare ``\\r``, ends kept (like repo2docker)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines = []
        while True:
            m = _LINE_END.search(self._buf)
            if not m:
                break
            lines.append(self._buf[: m.end()].decode("utf-8", "replace"))
            self._buf = self._buf[m.end():]
        return lines

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, b""
        return [rest.decode("utf-8", "replace")] if rest else []


class _Running:
    """One podman build/push process and what its cleanup needs."""

    def __init__(self, podman: Podman, proc: subprocess.Popen, build_id: str | None) -> None:
        self.podman = podman
        self.proc = proc
        self.build_id = build_id  # None: a push (nothing but the process to stop)
        self.cancelled = False
        self.terminated = False
        self.lock = threading.Lock()


_active: dict[str, list[_Running]] = {}
_active_lock = threading.Lock()


def cancel(key: str) -> bool:
    """Stop the running podman processes registered under ``key`` (a tag); False if there were none."""
    with _active_lock:
        runs = list(_active.get(key, []))
    for run in runs:
        run.cancelled = True
        run.podman.terminate(run)
    return bool(runs)


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class Podman:
    """The podman CLI (command prefix, environment) and the processes one engine runs with it."""

    def __init__(self, command: list[str], env: Mapping[str, str], *, terminate_timeout: float = 10.0,
                 logger: logging.Logger = log) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.terminate_timeout = terminate_timeout
        self.log = logger
        self._storage: tuple[str, str] | None = None

    def cmd(self, *args: str) -> list[str]:
        return [*self.command, *args]

    def run_quiet(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, env=self.env, **kw)

    def build_containers(self, build_id: str) -> list[str]:
        """Ids of the buildah working containers that exist for one build (its ``R2D_PODMAN_BUILD_ID``)."""
        if self._storage is None:
            info = self.run_quiet(self.cmd("info", "--format", STORE_FORMAT))
            store = parse_store(info.stdout.decode()) if info.returncode == 0 else None
            if store is None:
                raise BuildError(f"podman info failed: {info.stderr.decode(errors='replace').strip()[-300:]}")
            self._storage = store
        root, driver = self._storage
        proc = self.run_quiet(self.cmd("ps", "--all", "--external", "--format", "json"))
        if proc.returncode != 0:
            raise BuildError(f"podman ps failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
        containers = json.loads(proc.stdout.decode() or "null") or []
        return containers_of_build(containers, build_id, lambda cid: builder_args(root, driver, cid))

    def stream(self, args: list[str], error_cls: type[Exception], *, key: str, guard: SignalGuard,
               build_id: str | None = None, pdeathsig: bool = False) -> Iterator[str]:
        """Run ``args``, yield its merged output line by line, raise error_cls on failure.

        With a ``build_id`` (a build, not a push) an interrupted run's leftovers are removed.
        ``pdeathsig``: podman gets SIGTERM when this process dies (single-threaded callers only).
        """
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            # own session: a Ctrl-C / SIGINT meant for repo2docker reaches Python
            # (KeyboardInterrupt -> cleanup below), not podman directly
            start_new_session=True,
            bufsize=0,
            preexec_fn=_set_pdeathsig if pdeathsig else None,
        )
        run = _Running(self, proc, build_id)
        with _active_lock:
            _active.setdefault(key, []).append(run)
        splitter = LineSplitter()
        tail: list[str] = []
        done = False
        try:
            fd = proc.stdout.fileno()
            while True:
                data = os.read(fd, 65536)
                lines = splitter.feed(data) if data else splitter.flush()
                for line in lines:
                    if build_id:
                        line = without_build_id_warning(line)
                        if line is None:
                            continue
                    tail = (tail + [line.rstrip()])[-20:]
                    yield line
                    guard.resumed()
                if not data:
                    break
            rc = proc.wait()
            done = not run.cancelled
            if run.cancelled:
                raise BuildCancelled(f"{' '.join(args[:2])} cancelled")
            if rc != 0:
                detail = "\n".join(t for t in tail if t)[-2000:]
                raise error_cls(f"{' '.join(args[:2])} exited with {rc}:\n{detail}")
        finally:
            guard.holding += 1  # first thing: SIGINT/SIGTERM wait until this cleanup is done
            try:
                if not done:  # cancelled, consumer went away (generator closed), or an exception
                    self.terminate(run)
                    self._cleanup_after(run)
                if proc.stdout:
                    proc.stdout.close()
                with _active_lock:
                    runs = _active.get(key, [])
                    if run in runs:
                        runs.remove(run)
                    if not runs:
                        _active.pop(key, None)
            finally:
                guard.release()

    def terminate(self, run: _Running) -> None:
        """Stop a podman process and the RUN-step container it leaves running."""
        with run.lock:
            if run.terminated:
                return
            run.terminated = True
            proc = run.proc
            runc_ids, bundles = runc_containers_under(proc.pid) if run.build_id else ([], set())
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(self.terminate_timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
            try:
                remove_runc_containers(runc_ids, self.log)
                for bundle in bundles:  # a RUN step podman was just setting up or tearing down
                    shutil.rmtree(bundle, ignore_errors=True)
            except Exception as e:  # best effort: never mask the cancellation
                self.log.warning("podman build cleanup incomplete: %s\n", e)

    def _cleanup_after(self, run: _Running) -> None:
        """Remove the working containers of this build (and only this build: see BUILD_ID_ARG)."""
        if not run.build_id:
            return
        try:
            doomed = self.build_containers(run.build_id)
            if doomed:
                self.run_quiet(self.cmd("rm", "--force", *doomed))
                self.log.info("removed %d buildah working container(s)\n", len(doomed))
        except Exception as e:
            self.log.warning("podman build cleanup incomplete: %s\n", e)
