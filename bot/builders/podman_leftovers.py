"""What an interrupted ``podman build`` leaves behind, found precisely, and signals held while it is removed.

Used by ``PodmanEngine`` and by LocalBuilder's check after it stopped a build.

* The RUN step's runc container (which runs on when podman is killed) and its
  ``/var/tmp/buildahNNN`` bundle: found through the process tree of that podman.
* The build's buildah working containers: each build gets a unique
  ``--build-arg R2D_PODMAN_BUILD_ID=<id>``. buildah keeps a build's args in every
  working container's ``buildah.json`` (``Args``), including the containers it
  makes from a cached step image, while an arg no ``ARG`` line declares is in no
  RUN environment, image config, history or layer-cache key. So the id names a
  build's containers exactly, even when concurrent builds start FROM the same
  image at the same moment (container names and image ids cannot tell them apart).
* ``SignalGuard``: once a build is being stopped, or while the engine cleans up,
  further SIGINT/SIGTERM are held, so a second Ctrl-C or a repeated parent-death
  signal cannot interrupt the cleanup half-way.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping

log = logging.getLogger(__name__)

RUNC_ROOT = "/run/runc"
BUILD_ID_ARG = "R2D_PODMAN_BUILD_ID"
STORE_FORMAT = "{{.Store.GraphRoot}}\t{{.Store.GraphDriverName}}"  # podman info --format: where buildah.json is

_BUILD_ID_RE = re.compile(rf"--build-arg[= ]{BUILD_ID_ARG}=([0-9a-f]+)\b")
_UNCONSUMED_RE = re.compile(r"^(\[Warning\] one or more build args were not consumed: \[)([^\]]*)(\].*)$", re.DOTALL)
_CONTAINER_ID_RE = re.compile(r"[0-9a-f]{64}")
BUNDLE_RE = re.compile(r"/(?:[^/]+/)*buildah\d+")


# ---------------------------------------------------------------- pure parts
def build_id_in(line: str) -> str | None:
    """The build id in a ``podman build`` command line (PodmanEngine logs it as ``Building with: ...``)."""
    m = _BUILD_ID_RE.search(line)
    return m.group(1) if m else None


def parse_store(info: str) -> tuple[str, str] | None:
    """(graph root, graph driver) from ``podman info --format STORE_FORMAT`` (None if it is not that)."""
    root, _, driver = info.strip().partition("\t")
    return (root, driver) if root.startswith("/") and driver and "\t" not in driver else None


def without_build_id_warning(line: str) -> str | None:
    """buildah's "build args were not consumed" warning without our id arg (None: nothing left to say)."""
    m = _UNCONSUMED_RE.match(line)
    if not m or BUILD_ID_ARG not in m.group(2).split():
        return line
    rest = [a for a in m.group(2).split() if a != BUILD_ID_ARG]
    return f"{m.group(1)}{' '.join(rest)}{m.group(3)}" if rest else None


def containers_of_build(
    containers: Iterable[Mapping], build_id: str, builder_args: Callable[[str], Mapping | None],
) -> list[str]:
    """Ids of the working containers (``podman ps --all --external --format json``) one build made.

    ``builder_args(id)`` gives the build args buildah recorded for a container
    (None when it has no buildah state, e.g. podman's own containers).
    """
    found = []
    for c in containers:
        if c.get("Command") != ["buildah"] and str(c.get("State") or "").lower() != "storage":
            continue
        cid = str(c.get("Id") or "")
        args = builder_args(cid) if cid else None
        if args and args.get(BUILD_ID_ARG) == build_id:
            found.append(cid)
    return found


# ---------------------------------------------------------------- reading the host
def builder_args(graph_root: str, driver: str, container_id: str) -> dict | None:
    """``Args`` of a buildah working container (its ``buildah.json`` in containers/storage)."""
    if not _CONTAINER_ID_RE.fullmatch(container_id):
        return None
    path = os.path.join(graph_root, f"{driver}-containers", container_id, "userdata", "buildah.json")
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    args = state.get("Args") if isinstance(state, dict) else None
    return args if isinstance(args, dict) else None


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    seen, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def runc_list() -> list[dict]:
    if not shutil.which("runc"):
        return []
    proc = subprocess.run(["runc", "--root", RUNC_ROOT, "list", "--format", "json"], capture_output=True)
    if proc.returncode != 0:
        return []
    return json.loads(proc.stdout.decode() or "null") or []


def runc_containers_under(pid: int) -> tuple[list[dict], set[str]]:
    """runc containers run by podman ``pid``'s RUN steps, and their bundle dirs.

    buildah runs a step as podman -> buildah-oci-runtime (cwd = bundle dir)
    -> the container's process; runc knows the container by that pid.
    """
    try:
        desc = descendants(pid) | {pid}
        bundles = set()
        for p in desc:
            try:
                cwd = os.readlink(f"/proc/{p}/cwd")
            except OSError:
                continue
            if BUNDLE_RE.fullmatch(cwd):
                bundles.add(cwd)
        runc = [c for c in runc_list() if c.get("pid") in desc or c.get("bundle") in bundles]
        return runc, bundles
    except Exception:
        return [], set()


def remove_runc_containers(containers: list[dict], logger: logging.Logger = log) -> None:
    for c in containers:
        cid = c["id"]
        subprocess.run(["runc", "--root", RUNC_ROOT, "kill", cid, "KILL"], capture_output=True)
        for _ in range(20):
            state = subprocess.run(["runc", "--root", RUNC_ROOT, "state", cid], capture_output=True)
            if state.returncode != 0 or b'"stopped"' in state.stdout:
                break
            time.sleep(0.25)
        subprocess.run(["runc", "--root", RUNC_ROOT, "delete", "--force", cid], capture_output=True)
        bundle = c.get("bundle") or ""
        if BUNDLE_RE.fullmatch(bundle):
            shutil.rmtree(bundle, ignore_errors=True)
        logger.info("removed interrupted build step container %s\n", cid)


# ---------------------------------------------------------------- signals
class SignalGuard:
    """SIGINT/SIGTERM while one build runs in the main thread: the first stops it, the rest wait.

    The first signal does what the handler it replaced would (KeyboardInterrupt
    for SIGINT; for a SIGTERM without handler, ``on_sigterm()`` -- the engine's
    BuildCancelled -- when ``sigterm_stops``). From then on, and whenever
    ``hold()`` is in force (the engine cleaning up), further SIGINT/SIGTERM are
    held: a parent's death signal comes once per exiting thread, and people press
    Ctrl-C twice. When the last hold ends, held signals are dropped if a signal
    is already stopping the build (they ask for what is happening), else the
    first one is acted on then (it was only postponed). ``uninstall()`` puts the
    previous handlers back.

    ``holding`` is a plain counter so that ``holding += 1`` as the first statement
    of a ``finally`` takes effect before Python runs any signal handler.
    """

    def __init__(self, on_sigterm: Callable[[], BaseException], *, sigterm_stops: bool,
                 logger: logging.Logger = log) -> None:
        self.on_sigterm = on_sigterm
        self.sigterm_stops = sigterm_stops
        self.log = logger
        self.previous: dict[int, object] = {}
        self.stopping = False
        self.holding = 0
        self.held: list[int] = []

    def install(self) -> SignalGuard:
        """Take over SIGINT/SIGTERM (call in the main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            if callable(prev) or (sig == signal.SIGTERM and prev == signal.SIG_DFL and self.sigterm_stops):
                self.previous[sig] = prev
                signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev)
        self.previous.clear()
        if self.held:
            self.log.info("ignored %d repeated stop signal(s) while the build stopped\n", len(self.held))
            self.held.clear()

    def resumed(self) -> None:
        """The consumer asked for more: whatever a first signal raised did not stop the build."""
        if self.stopping and not self.holding:
            self.stopping = False

    def release(self) -> None:
        """End one ``holding += 1``."""
        self.holding -= 1
        if self.holding or not self.held:
            return
        held, self.held = self.held, []
        if self.stopping:
            self.log.info("ignored %d repeated stop signal(s) during build cleanup\n", len(held))
            return
        self._stop(held[0], None)  # postponed, not lost

    def _on_signal(self, signum: int, frame) -> None:
        if self.stopping or self.holding:
            self.held.append(signum)
            return
        self._stop(signum, frame)

    def _stop(self, signum: int, frame) -> None:
        self.stopping = True  # first: a signal arriving from here on is held
        prev = self.previous.get(signum)
        if callable(prev):
            prev(signum, frame)  # default_int_handler raises KeyboardInterrupt
            self.stopping = False  # it returned: that handler does not stop builds
            return
        raise self.on_sigterm()


class NoSignalGuard(SignalGuard):
    """Builds outside the main thread (signals cannot reach them) or with signal handling off."""

    def __init__(self) -> None:
        super().__init__(lambda: BaseException(), sigterm_stops=False)

    def install(self) -> SignalGuard:
        return self
