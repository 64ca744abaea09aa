"""One shared watch over all build pods (a reflector, as KubeSpawner has).

The watch lists the pods once, then watches from the list's resourceVersion,
resumes from the last resourceVersion it saw when a watch ends, and lists
again when the API says that version is too old (410 Gone). Builds do not open
their own watches: they wait on this cache, so N running builds hold one watch
connection, not N.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import logging
from typing import Any

from bot.builders.k8s_api import KubeAPI, KubeError
from bot.builders.k8s_objects import LABEL_BUILD_ID

log = logging.getLogger(__name__)

FINISHED_PHASES = ("Succeeded", "Failed")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class PodStatus:
    """What a build needs to know about its pod (a small view of the Pod object)."""

    name: str
    uid: str
    phase: str
    reason: str | None = None
    message: str | None = None
    build_id: str | None = None
    created: float | None = None
    deleting: bool = False
    deadline: int | None = None
    container_state: str | None = None  # waiting | running | terminated
    container_reason: str | None = None
    container_message: str | None = None
    exit_code: int | None = None
    node: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def started(self) -> bool:
        """The container has run (its log exists)."""
        return self.container_state in ("running", "terminated") or (
            self.phase in ("Running", "Succeeded") and self.container_state is None)


def pod_status(obj: dict[str, Any]) -> PodStatus:
    """Pure: the Pod JSON -> PodStatus."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    state_name = reason = message = None
    exit_code = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        for key in ("terminated", "running", "waiting"):
            if state.get(key) is not None:
                detail = state[key] or {}
                state_name, reason, message = key, detail.get("reason"), detail.get("message")
                exit_code = detail.get("exitCode") if key == "terminated" else None
                break
        break
    return PodStatus(
        name=meta.get("name", ""), uid=meta.get("uid", ""), phase=status.get("phase") or "Pending",
        reason=status.get("reason"), message=status.get("message"),
        build_id=(meta.get("labels") or {}).get(LABEL_BUILD_ID),
        created=parse_time(meta.get("creationTimestamp")), deleting=bool(meta.get("deletionTimestamp")),
        deadline=spec.get("activeDeadlineSeconds"), container_state=state_name, container_reason=reason,
        container_message=message, exit_code=exit_code, node=spec.get("nodeName"),
    )


class PodWatch:
    """A cache of build pods kept current by one watch; waiters are woken on changes."""

    def __init__(self, api: KubeAPI, label_selector: str, *, timeout_seconds: int = 300,
                 backoff: float = 1.0) -> None:
        self.api = api
        self.selector = label_selector
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff
        self.pods: dict[str, PodStatus] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.connected = False
        self.lists = 0
        self.watches = 0
        self.last_error: str | None = None
        self._waiters: dict[str, set[asyncio.Event]] = collections.defaultdict(set)
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()  # deleted uids
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="k8s-pod-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected = False

    # -- what builds use ----------------------------------------------------
    def get(self, name: str) -> PodStatus | None:
        return self.pods.get(name)

    def subscribe(self, name: str) -> asyncio.Event:
        ev = asyncio.Event()
        self._waiters[name].add(ev)
        return ev

    def unsubscribe(self, name: str, ev: asyncio.Event) -> None:
        waiters = self._waiters.get(name)
        if waiters is not None:
            waiters.discard(ev)
            if not waiters:
                del self._waiters[name]

    def seed(self, obj: dict[str, Any], *, fresh: bool = False) -> PodStatus:
        """Add a pod we just created or read, unless the watch already knows it (or it was deleted).

        ``fresh`` (a GET just now) replaces what the cache has: it is at least as new.
        """
        st = pod_status(obj)
        if st.uid in self._gone:
            return st
        if fresh or st.name not in self.pods:
            self._set(st)
        return self.pods.get(st.name, st)

    def forget(self, name: str) -> None:
        """The API says the pod is gone (a GET answered 404)."""
        st = self.pods.pop(name, None)
        if st is not None:
            self._mark_gone(st.uid)
        self._notify(name)

    # -- internals ----------------------------------------------------------
    def _notify(self, name: str) -> None:
        for ev in self._waiters.get(name, ()):
            ev.set()

    def _set(self, st: PodStatus) -> None:
        if self.pods.get(st.name) != st:
            self.pods[st.name] = st
            self._notify(st.name)

    def _mark_gone(self, uid: str) -> None:
        self._gone[uid] = None
        while len(self._gone) > 5000:
            self._gone.popitem(last=False)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        st = pod_status(obj)
        if kind == "DELETED":
            current = self.pods.get(st.name)
            if current is not None and current.uid in (st.uid, ""):
                del self.pods[st.name]
            self._mark_gone(st.uid)
            self._notify(st.name)
        elif st.uid not in self._gone:
            self._set(st)

    async def _list(self) -> None:
        data = await self.api.list_pods(self.selector)
        self.lists += 1
        fresh = {}
        for obj in data.get("items") or []:
            st = pod_status(obj)
            fresh[st.name] = st
        for name in list(self.pods):
            if name not in fresh:
                self._mark_gone(self.pods.pop(name).uid)
                self._notify(name)
        for st in fresh.values():
            self._set(st)
        self.resource_version = (data.get("metadata") or {}).get("resourceVersion") or "0"
        self.synced.set()

    async def _run(self) -> None:
        delay = self.backoff
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch_once()
                delay = self.backoff
            except asyncio.CancelledError:
                raise
            except _Expired as e:
                log.info("pod watch: %s; listing again", e)
                self.resource_version = None
            except KubeError as e:
                if e.status == 410:  # some servers answer the watch request itself with 410
                    log.info("pod watch: %s; listing again", e)
                    self.resource_version = None
                    continue
                self.connected = False
                self.last_error = str(e)
                log.warning("pod watch failed (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as e:  # whatever broke, keep watching
                self.connected = False
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("pod watch failed (%s); retrying in %.1fs", self.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _watch_once(self) -> None:
        assert self.resource_version is not None
        resp = await self.api.watch_pods(self.selector, self.resource_version, self.timeout_seconds)
        self.watches += 1
        self.connected = True
        self.last_error = None
        try:
            async for raw in resp.content:
                if not raw.strip():
                    continue
                event = json.loads(raw)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise _Expired(obj.get("message") or "resource version too old")
                    raise KubeError(code or 0, obj.get("reason") or "Error", obj.get("message") or "")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind != "BOOKMARK":
                    self._apply(kind, obj)
                if rv:
                    self.resource_version = rv
        finally:
            resp.release()
            self.connected = False


class _Expired(Exception):
    """410 Gone: our resourceVersion is older than the API keeps."""
