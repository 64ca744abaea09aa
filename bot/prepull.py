"""Pre-pulling images onto the nodes where user servers start (Kubernetes only).

The newest built image of each installed repository's default branch, and every
image launched within the launch window, are kept on the user nodes by one
DaemonSet (bot/builders/k8s_prepull_objects.py), so the first click after a
build does not wait for a multi-gigabyte pull. Which images: ``choose_images``,
a pure function over store records. When: a small loop owned by the app syncs at
start, then after build and launch events (debounced), and every ``resync``
seconds (an expired launch, a DaemonSet deleted by hand). How: one GET, then a
create or an in-place PUT only when the list (or a setting) changed.
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from bot.builders import k8s_prepull_objects as pobjs
from bot.builders.k8s_api import KubeAPI, KubeConflict, KubeError, KubeNotFound, load_configuration
from bot.model import Phase, ProgressEvent
from bot.store.prepull_state import BuiltImage, LaunchedImage, PrepullState

if TYPE_CHECKING:
    from kubernetes_asyncio import client

    from bot.core import Core
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)


class SyncAction(str, enum.Enum):
    CREATE = "create"
    REPLACE = "replace"
    NONE = "none"


def choose_images(defaults: Sequence[BuiltImage], launched: Sequence[LaunchedImage], *,
                  installed: Collection[str], limit: int) -> list[str]:
    """The images to keep on the nodes: most launched first, then newest; at most ``limit``.

    ``defaults``: built default-branch images; only the newest per repository, and
    only for repositories in ``installed`` (lowercase full names), counts.
    ``launched``: images launched in the window, with how often and when last; they
    count whether or not the repository is installed (someone used them today).
    """
    newest: dict[str, BuiltImage] = {}
    for d in defaults:
        key = d.full_name.lower()
        if key in installed and (key not in newest or d.built_at > newest[key].built_at):
            newest[key] = d
    score: dict[str, tuple[int, float]] = {d.image: (0, d.built_at) for d in newest.values()}
    for li in launched:
        if li.launches <= 0:
            continue
        count, when = score.get(li.image, (0, 0.0))
        score[li.image] = (count + li.launches, max(when, li.last_at))
    ranked = sorted(score, key=lambda image: (-score[image][0], -score[image][1], image))
    return ranked[:max(0, limit)]


def plan_sync(current: dict[str, Any] | None, desired: dict[str, Any]) -> SyncAction:
    """Create when missing, replace when what we submitted last differs from what we want now."""
    if current is None:
        return SyncAction.CREATE
    have = ((current.get("metadata") or {}).get("annotations") or {}).get(pobjs.ANN_SPEC_HASH)
    want = desired["metadata"]["annotations"][pobjs.ANN_SPEC_HASH]
    return SyncAction.NONE if have == want else SyncAction.REPLACE


def is_default_branch_build(record: "BuildRecord") -> bool:
    req = record.request
    return req.pr_number is None and bool(req.branch) and req.branch == req.default_branch


class Prepuller:
    """Keeps the puller DaemonSet in PREPULL_NAMESPACE following builds and launches."""

    def __init__(
        self, services: "Core", *, configuration: "client.Configuration | None" = None,
        debounce: float = 5.0, resync: float = 600.0, retry: float = 30.0,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        settings = services.settings
        if not settings.prepull_namespace:
            raise ValueError("PREPULL_NAMESPACE is not set")
        self.services = services
        self.settings = settings
        self.namespace = settings.prepull_namespace
        self.state = PrepullState(services.db)
        self.debounce = debounce
        self.resync = resync
        self.retry = retry
        self.clock = clock
        self.sleep = sleep
        self.api: KubeAPI | None = None
        self._configuration = configuration
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0  # completed syncs (whatever they did)
        self.writes = 0  # creates and replaces sent
        self.images: list[str] = []  # the list of the last successful sync
        self.last_error: str | None = None
        self._synced = asyncio.Condition()
        self._gauge = _images_gauge(services)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        conf = self._configuration or await load_configuration()
        self.api = KubeAPI(conf, self.namespace, pool_size=4)
        self.services.bus.add_listener(self.on_build_event)
        self.services.bus.add_launch_listener(self.on_launch)
        self._task = asyncio.create_task(self._loop(), name="k8s-prepull")
        log.info("image puller: DaemonSet %s in namespace %s, up to %d images", pobjs.PREPULL_NAME,
                 self.namespace, self.settings.prepull_max_images)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.api is not None:
            await self.api.close()
            self.api = None

    async def health(self) -> tuple[bool, str]:
        if self.last_error is not None:
            return False, f"the image puller could not update its DaemonSet: {self.last_error}"
        return True, f"{len(self.images)} images kept on the user nodes (namespace {self.namespace})"

    # -- events -----------------------------------------------------------------
    def poke(self) -> None:
        """Something that may change the list happened: sync after the debounce."""
        self._wake.set()

    async def on_build_event(self, record: "BuildRecord", event: ProgressEvent) -> None:
        if event.phase is Phase.BUILT and is_default_branch_build(record):
            log.debug("build %s: default branch built, image list may change", record.id)
            self.poke()

    async def on_launch(self, owner: str, repo: str, image: str) -> None:
        await self.state.add_launch(owner, repo, image, self.clock())
        self.poke()

    # -- the loop ---------------------------------------------------------------
    async def _loop(self) -> None:
        wait = 0.0  # at start: sync at once
        while True:
            if wait:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                if self._wake.is_set() and self.debounce:
                    await self.sleep(self.debounce)  # a burst of builds and launches: one update
            self._wake.clear()
            try:
                await self.sync_once()
                wait = self.resync
            except KubeError as e:
                self.last_error = e.explain()
                log.warning("image puller: %s; trying again in %.0f s", self.last_error, self.retry)
                wait = self.retry
            except Exception:  # a bug must not end the loop for good
                self.last_error = "internal error (see the service's log)"
                log.exception("image puller: sync failed")
                wait = self.retry

    async def desired_images(self) -> list[str]:
        now = self.clock()
        window = self.settings.prepull_launch_window
        await self.state.prune_launches(now - window)
        return choose_images(
            await self.state.default_branch_images(), await self.state.launched_since(now - window),
            installed=await self.state.installed_repos(), limit=self.settings.prepull_max_images)

    async def sync_once(self) -> SyncAction:
        """Bring the DaemonSet to the current list; what it did."""
        if self.api is None:
            raise RuntimeError("the image puller is not started")
        images = await self.desired_images()
        desired = pobjs.prepull_daemonset_for(self.settings, images)
        try:
            current: dict[str, Any] | None = await self.api.get_daemonset(pobjs.PREPULL_NAME)
        except KubeNotFound:
            current = None
        action = plan_sync(current, desired)
        try:
            if action is SyncAction.CREATE:
                await self.api.create_daemonset(desired)
            elif action is SyncAction.REPLACE:
                assert current is not None
                desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await self.api.replace_daemonset(pobjs.PREPULL_NAME, desired)
        except KubeConflict:  # someone changed it between our GET and our write: read again, soon
            log.info("image puller: DaemonSet changed under us; syncing again")
            self.poke()
            action = SyncAction.NONE
        else:
            if action is not SyncAction.NONE:
                self.writes += 1
                log.info("image puller: %s DaemonSet with %d images", action.value + "d", len(images))
            self.images = images
            self._gauge.set(len(images))
        self.last_error = None
        async with self._synced:
            self.syncs += 1
            self._synced.notify_all()
        return action

    async def wait_synced(self, count: int) -> None:
        """Until ``count`` syncs have completed (tests and the CLI follow the loop with this)."""
        async with self._synced:
            await self._synced.wait_for(lambda: self.syncs >= count)


def _images_gauge(services: "Core") -> Any:
    from prometheus_client import Gauge

    metrics = services.metrics
    registry = getattr(metrics, "registry", None)
    if registry is None:
        return Gauge("binder_prebuild_prepull_images", "Images the puller keeps on the user nodes", registry=None)
    existing = getattr(metrics, "prepull_images", None)
    if existing is None:
        existing = Gauge("binder_prebuild_prepull_images", "Images the puller keeps on the user nodes",
                         registry=registry)
        metrics.prepull_images = existing
    return existing
