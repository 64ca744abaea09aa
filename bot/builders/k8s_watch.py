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
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.builders.k8s_api import KubeAPI, KubeError
from bot.builders.k8s_status import PodStatus, _rv, parse_time, pod_status

__all__ = ["Backoff", "PodStatus", "PodWatch", "merge_list", "parse_time", "pod_status"]

log = logging.getLogger(__name__)

def merge_list(
    cached: dict[str, PodStatus], listed: list[PodStatus], list_rv: int | None, newer_names: set[str],
    gone: Any,
) -> tuple[dict[str, PodStatus], list[PodStatus]]:
    """Pure: merge a LIST snapshot into the cache -> (new cache, pods dropped as deleted).

    A LIST is a snapshot at its resourceVersion. What we learnt after it was taken
    (a create's response, a watch event, a GET) is newer and wins: a cached pod that
    is missing from the snapshot is only dropped when nothing says it is newer than
    the snapshot (a higher resourceVersion where versions are integers; otherwise
    ``newer_names``, the pods seeded while the LIST was in flight); a listed pod never replaces a newer cached version of itself,
    and a pod we already saw deleted is not brought back.
    """
    listed_by_name = {st.name: st for st in listed}
    merged: dict[str, PodStatus] = {}
    dropped: list[PodStatus] = []
    for name, cur in cached.items():
        if name in listed_by_name:
            continue
        if list_rv is not None and cur.resource_version is not None:
            newer = cur.resource_version > list_rv  # exact where versions are integers (etcd)
        else:
            newer = name in newer_names
        if newer:
            merged[name] = cur
        else:
            dropped.append(cur)
    for name, st in listed_by_name.items():
        cur = cached.get(name)
        if st.uid in gone:
            if cur is not None and cur.uid != st.uid:
                merged[name] = cur
            continue
        if (cur is not None and cur.uid == st.uid and cur.resource_version is not None
                and st.resource_version is not None and cur.resource_version > st.resource_version):
            merged[name] = cur  # the snapshot is older than what we know
        elif cur is not None and cur.uid != st.uid and name in newer_names:
            merged[name] = cur  # re-created after the snapshot
        else:
            merged[name] = st
    return merged, dropped


@dataclasses.dataclass
class Backoff:
    """client-go's reflector backoff: 0.8 s doubling to 30 s, with jitter, reset after 2 quiet minutes.

    Every list-and-watch round that fails (an error, a 410 relist, a watch that
    ends in under a second without an event) waits ``next()`` before the next one,
    so a server or proxy that keeps closing watches cannot make us hammer it.
    """

    initial: float = 0.8
    cap: float = 30.0
    reset_after: float = 120.0
    jitter: float = 1.0
    rand: Callable[[], float] = random.random
    _current: float = 0.0
    _last: float | None = None

    def next(self, now: float) -> float:
        if self._last is None or now - self._last > self.reset_after:
            self._current = self.initial
        else:
            self._current = min(self.cap, self._current * 2)
        self._last = now
        return min(self.cap, self._current * (1 + self.jitter * self.rand()))


SHORT_WATCH = 1.0  # a watch that ends sooner than this without an event counts as a failure
UNHEALTHY_AFTER = 60.0  # list and watch failing this long: /health says the watch is down


class PodWatch:
    """A cache of build pods kept current by one watch; waiters are woken on changes."""

    def __init__(self, api: KubeAPI, label_selector: str, *, timeout_seconds: int = 300,
                 backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 unhealthy_after: float = UNHEALTHY_AFTER) -> None:
        self.api = api
        self.selector = label_selector
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.sleep = sleep
        self.unhealthy_after = unhealthy_after
        self.failing_since: float | None = None  # first failure of the current run of failures
        self.pods: dict[str, PodStatus] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.connected = False
        self.lists = 0
        self.watches = 0
        self.last_error: str | None = None
        self._waiters: dict[str, set[asyncio.Event]] = collections.defaultdict(set)
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()  # deleted uids
        self._seq = 0  # counts what we learn about pods, to tell what came after a LIST was sent
        self._learnt: dict[str, int] = {}  # pod name -> _seq when we last learnt of it
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
        self._seq += 1
        self._learnt[st.name] = self._seq
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
        mark = self._seq
        data = await self.api.list_pods(self.selector)
        self.lists += 1
        listed = [pod_status(obj) for obj in data.get("items") or []]
        list_rv = (data.get("metadata") or {}).get("resourceVersion") or "0"
        newer = {name for name, seq in self._learnt.items() if seq > mark}
        merged, dropped = merge_list(self.pods, listed, _rv(list_rv), newer, self._gone)
        for st in dropped:
            self._mark_gone(st.uid)
        before, self.pods = self.pods, merged
        self._learnt = {name: seq for name, seq in self._learnt.items() if name in merged}
        for name in set(before) | set(merged):
            if before.get(name) != merged.get(name):
                self._notify(name)
        self.resource_version = list_rv
        self.synced.set()

    def health(self) -> tuple[bool, str]:
        """Not ok once list and watch have failed for ``unhealthy_after`` seconds, with the last error."""
        if self.connected or self.failing_since is None:
            return True, "watching" if self.connected else "watch reconnecting"
        down = self.clock() - self.failing_since
        if down < self.unhealthy_after:
            return True, f"watch reconnecting ({self.last_error})"
        return False, f"the pod watch has failed for {down:.0f} s: {self.last_error}"

    def _failed(self, error: str) -> None:
        self.connected = False
        self.last_error = error
        if self.failing_since is None:
            self.failing_since = self.clock()

    def _worked(self) -> None:
        self.failing_since = None
        self.last_error = None

    async def _pause(self) -> None:
        delay = self.backoff.next(self.clock())
        log.info("pod watch: next list-and-watch round in %.1fs", delay)
        await self.sleep(delay)

    async def _run(self) -> None:
        listed_once = False
        while True:
            try:
                if self.resource_version is None:
                    if listed_once:  # every relist waits its turn: 410s must not become a LIST storm
                        await self._pause()
                    listed_once = True
                    await self._list()
                    self._worked()
                started = self.clock()
                events = await self._watch_once()
                if events == 0 and self.clock() - started < SHORT_WATCH:
                    self._failed("the watch closed at once without an event")
                    log.warning("pod watch: %s", self.last_error)
                    await self._pause()
                else:
                    self._worked()
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
                self._failed(str(e))
                log.warning("pod watch failed (%s)", e)
                await self._pause()
            except Exception as e:  # whatever broke, keep watching
                self._failed(f"{type(e).__name__}: {e}")
                log.warning("pod watch failed (%s)", self.last_error)
                await self._pause()

    async def _watch_once(self) -> int:
        """Follow one watch until it ends; returns how many events it carried (bookmarks count)."""
        assert self.resource_version is not None
        resp = await self.api.watch_pods(self.selector, self.resource_version, self.timeout_seconds)
        self.watches += 1
        self.connected = True
        events = 0
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
                events += 1
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind != "BOOKMARK":
                    self._apply(kind, obj)
                if rv:
                    self.resource_version = rv
        finally:
            resp.release()
            self.connected = False
        return events


class _Expired(Exception):
    """410 Gone: our resourceVersion is older than the API keeps."""
