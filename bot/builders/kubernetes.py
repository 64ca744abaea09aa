"""KubernetesBuilder: repo2docker in a build pod, followed through one shared watch.

``run`` creates the pod (named from the build id, so 409 means "already
building": re-attach, which is also how a restart finds its builds), waits on
the shared PodWatch, follows the pod's log once the container runs (repo2docker
JSON lines -> phases, a bounded tail), and turns the pod's end into an outcome.
Finished pods are deleted. A private repository's clone token travels in one
key of the single Secret the service's Role names (``resourceNames``: it can
read or change no other Secret, such as a Hub's in the same namespace): the key
is added before the pod is created and removed when the build ends.

Cancelling the task running ``run`` leaves the pod alone (the process is going
away; a restart re-attaches); ``cancel(build_id)`` deletes the pod and its token,
waiting for a create still in flight so that nothing it makes is left running.

Deadlines (``BuildDeadlines``): ``activeDeadlineSeconds`` (BUILD_TIMEOUT) is
counted by the kubelet from the pod's ``startTime``, when a node acknowledged it
(image pulls included, scheduling not: a pod no node takes never gets a
``startTime``). So ``run`` itself ends a pod that has not started within
BUILD_START_TIMEOUT, saying why (conditions, container state, the pod's Events),
and the periodic cleaner deletes pods past start + run + grace from creation,
force-deletes pods stuck terminating on a lost node, and drops tokens whose pod is gone.
API back-pressure (429, 5xx, a used-up quota) raises ``BuildDeferred``: the
build waits in the queue; an eviction builds it again once.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from kubernetes_asyncio import client

from bot.builders import k8s_objects as objs
from bot.builders.base import BuildDeferred, Builder, Emit, build_deadlines
from bot.builders.k8s_api import KubeAPI, KubeConflict, KubeError, KubeNotFound, load_configuration
from bot.builders.k8s_status import PodStatus, outcome_for, parse_time, start_problem
from bot.builders.k8s_watch import PodWatch
from bot.builders.k8s_logs import LOG_GIVE_UP, LOG_READ_TIMEOUT, LogCursor, cut_lines
from bot.builders.r2d_logs import LogReader
from bot.config import Settings
from bot.model import BuildJob, BuildOutcome, Phase, ProgressEvent

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
EVENTS_AFTER = 5.0  # a pod pending this long: read its Events too (mount and pull failures show there)
NODE_LOST_TIMEOUT = 300.0  # phase Unknown this long: the node is gone; end the build, force-delete the pod
STUCK_TERMINATING = 30.0  # past the end of its grace period, a pod still there is force-deleted


@dataclasses.dataclass
class _Pending:
    """What one run() has seen of its pod not starting (local monotonic clock)."""

    since: float
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events_at: float = float("-inf")
    unknown_since: float | None = None


class KubernetesBuilder(Builder):
    name = "kubernetes"

    def __init__(
        self, settings: Settings, metrics: Any = None, *, configuration: client.Configuration | None = None,
        cleaner_interval: float = 60.0, poll_interval: float = 60.0, delete_grace: float = 60.0,
        watch_timeout: int = 300, pending_poll: float = 10.0, node_lost_timeout: float = NODE_LOST_TIMEOUT,
        clock: Any = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.namespace = settings.kube_namespace
        self.cleaner_interval = cleaner_interval
        self.poll_interval = poll_interval
        self.delete_grace = delete_grace
        self.watch_timeout = watch_timeout
        self.pending_poll = pending_poll
        self.log_read_timeout = LOG_READ_TIMEOUT
        self.node_lost_timeout = node_lost_timeout
        self.clock = clock
        self._evictions: dict[str, int] = {}  # build id -> how often its pod was evicted
        self._configuration = configuration
        self.api: KubeAPI | None = None
        self.watch: PodWatch | None = None
        self._cleaner: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._cancelled: dict[str, float] = {}  # pod name -> when cancel() deleted it
        self._timed_out: dict[str, float] = {}  # pod name -> when the cleaner deleted it
        self._placing: set[str] = set()  # clone-token keys whose pod is being created
        self._creating: dict[str, asyncio.Future[tuple[PodStatus, bool]]] = {}  # pod name -> create in flight
        self.created = 0
        self.attached = 0

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        async with self._start_lock:
            if self.api is not None:
                return
            conf = self._configuration or await load_configuration()
            pool = max(100, self.settings.max_concurrent_builds * 2 + 20)
            self.api = KubeAPI(conf, self.namespace, pool_size=pool)
            self.watch = PodWatch(self.api, objs.BUILD_SELECTOR, timeout_seconds=self.watch_timeout)
            await self.watch.start()
            self._cleaner = asyncio.create_task(self._clean_loop(), name="k8s-build-cleaner")
            log.info("kubernetes builder: namespace %s, builder image %s", self.namespace,
                     self.settings.repo2docker_image)

    async def close(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner
            self._cleaner = None
        if self.watch is not None:
            await self.watch.stop()
            self.watch = None
        if self.api is not None:
            await self.api.close()
            self.api = None

    async def health(self) -> tuple[bool, str]:
        if self.api is None:
            return False, "not started"
        try:
            v = await self.api.version()
        except KubeError as e:
            return False, f"kubernetes API not answering: {e}"
        ok, watch = self.watch.health() if self.watch else (False, "no watch")
        return ok, f"kubernetes {v.get('gitVersion', '?')}, {watch}"

    def known_builds(self) -> dict[str, PodStatus]:
        """Build pods the watch sees now, by build id (for reconciliation)."""
        if self.watch is None:
            return {}
        return {st.build_id: st for st in self.watch.pods.values() if st.build_id}

    # -- run --------------------------------------------------------------------
    async def run(self, job: BuildJob, emit: Emit) -> BuildOutcome:
        await self.start()
        assert self.watch is not None
        name = objs.pod_name(job.build_id)
        waiter = self.watch.subscribe(name)
        try:
            # The create runs apart from this task: cancelling ``run`` (the process going away)
            # must not abandon a create the API may still carry out; ``cancel()`` waits for it.
            creating = asyncio.ensure_future(self._ensure_pod(job, name))
            self._creating[name] = creating
            creating.add_done_callback(lambda f, n=name: self._created(n, f))
            try:
                st, attached = await asyncio.shield(creating)
            except KubeError as e:
                if e.transient:
                    log.warning("build %s: the API cannot take pod %s now: %s", job.build_id, name, e)
                    raise BuildDeferred(e.explain(), e.retry_after) from e
                log.error("build %s: the API refused pod %s: %s", job.build_id, name, e)
                return BuildOutcome(Phase.FAILED, e.explain() if e.status == 403 else f"the Kubernetes API "
                                    f"refused the build pod: {e}")
            if attached:
                await emit(ProgressEvent(Phase.FETCHING if st.started else Phase.WAITING,
                                         f"attached to running build pod {name}"))
            else:
                await emit(ProgressEvent(Phase.WAITING, f"build pod {name} created, waiting for it to start"))
            return await self._follow(job, name, waiter, emit)
        finally:
            if self.watch is not None:
                self.watch.unsubscribe(name, waiter)

    def _created(self, name: str, fut: asyncio.Future[tuple[PodStatus, bool]]) -> None:
        if self._creating.get(name) is fut:
            del self._creating[name]
        if not fut.cancelled():
            fut.exception()  # retrieved: its caller may have gone away

    async def _ensure_pod(self, job: BuildJob, name: str) -> tuple[PodStatus, bool]:
        """Create the pod (and its clone Secret), or find the one already running: (status, attached)."""
        assert self.api is not None and self.watch is not None
        key = objs.clone_token_key(job.build_id) if job.clone_token else None
        if key:
            self._placing.add(key)  # the cleaner leaves it alone until the watch knows the pod
        try:
            if key:
                await self._put_token(job)
            try:
                obj, attached = await self._create_or_get(job, name)
            except Exception:
                if key:  # no pod will read it
                    with contextlib.suppress(Exception):
                        await self._remove_tokens([key])
                raise
            return self.watch.seed(obj, fresh=attached), attached
        finally:
            if key:
                self._placing.discard(key)

    async def _create_or_get(self, job: BuildJob, name: str) -> tuple[dict[str, Any], bool]:
        """(pod object, attached): 409 on create means the build is already running."""
        assert self.api is not None
        body = objs.build_pod_for_job(job, self.settings)
        for _ in range(3):
            try:
                obj = await self.api.create_pod(body)
                self.created += 1
                log.info("build %s: created pod %s for %s at %s", job.build_id, name, job.request.full_name,
                         job.request.sha[:12])
                return obj, False
            except KubeConflict:
                try:
                    obj = await self.api.get_pod(name)
                except KubeNotFound:
                    continue  # deleted in between: create it again
                self.attached += 1
                log.info("build %s: pod %s already exists; attaching", job.build_id, name)
                return obj, True
        raise KubeError(409, "Conflict", f"pod {name} keeps conflicting")

    async def _put_token(self, job: BuildJob) -> None:
        """Add (or refresh: an earlier attempt's may have expired) this build's clone token."""
        assert self.api is not None and job.clone_token
        try:
            await self.api.patch_secret(objs.CLONE_TOKENS_SECRET, objs.add_clone_token(job.build_id, job.clone_token))
        except KubeNotFound:
            raise KubeError(404, "NotFound", f"secret {objs.CLONE_TOKENS_SECRET} is missing in namespace "
                            f"{self.namespace}: apply k8s/ (it creates it), so private repositories can be "
                            "cloned") from None

    async def _remove_tokens(self, keys: list[str]) -> None:
        assert self.api is not None
        await self.api.patch_secret(objs.CLONE_TOKENS_SECRET, objs.remove_clone_tokens(keys))

    async def _follow(self, job: BuildJob, name: str, waiter: asyncio.Event, emit: Emit) -> BuildOutcome:
        assert self.api is not None and self.watch is not None
        reader = LogReader(LOG_TAIL_LINES, secrets=[job.clone_token])
        log_task: asyncio.Task[None] | None = None
        announced: set[str] = set()
        pending = _Pending(self.clock())
        last: PodStatus | None = None
        try:
            while True:
                waiter.clear()  # before reading: a change during the awaits below must wake us
                st = self.watch.get(name)
                if st is None or (st.deleting and (name in self._cancelled or name in self._timed_out)):
                    return self._vanished(job, name, reader, st or last)
                last = st
                if st.disruption and (st.deleting or st.finished):
                    return await self._evicted(job, name, st, reader)
                if st.started and log_task is None:
                    if not st.finished:
                        await emit(ProgressEvent(Phase.FETCHING, f"build pod {name} running"
                                                 + (f" on {st.node}" if st.node else "")))
                    log_task = asyncio.create_task(self._follow_logs(job, name, reader, emit),
                                                   name=f"log-{job.build_id}")
                ended = await self._check_stuck(job, name, st, pending, emit, announced)
                if ended is not None:
                    return BuildOutcome(Phase.FAILED, ended, reader.tail.lines())
                waiting = st.container_reason if st.container_state == "waiting" else st.reason
                if not st.finished and waiting and waiting not in announced and waiting != "ContainerCreating":
                    announced.add(waiting)
                    detail = st.container_message or st.message
                    await emit(ProgressEvent(Phase.WAITING, f"build pod waiting: {waiting}"
                                             + (f": {detail}" if detail else "")))
                if st.finished:
                    break
                poll = self.poll_interval if st.started and st.phase != "Unknown" else self.pending_poll
                try:
                    await asyncio.wait_for(waiter.wait(), poll)
                except asyncio.TimeoutError:
                    await self._refresh(name)
            if log_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(log_task), 30)
                except asyncio.TimeoutError:
                    log.warning("build %s: log of %s did not end; using what was read", job.build_id, name)
            phase, reason = outcome_for(st, reader.failure, self.settings.build_timeout)
            log.info("build %s: pod %s %s%s", job.build_id, name, st.phase, f" ({reason})" if reason else "")
            await self._delete(job.build_id, name, secret=bool(job.clone_token))
            return BuildOutcome(phase, reason, reader.tail.lines())
        finally:
            if log_task is not None and not log_task.done():
                log_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await log_task

    async def _check_stuck(self, job: BuildJob, name: str, st: PodStatus, pending: "_Pending", emit: Emit,
                           announced: set[str]) -> str | None:
        """A pod that cannot start, or whose node is lost: say why while waiting; past the bound, end it.

        Returns the failure reason once the build is given up (the pod is deleted), else None.
        """
        assert self.api is not None
        now = self.clock()
        if st.phase == "Unknown":
            if pending.unknown_since is None:
                pending.unknown_since = now
            if now - pending.unknown_since >= self.node_lost_timeout:
                reason = (f"the node running the build pod stopped answering (its state has been Unknown for "
                          f"{now - pending.unknown_since:.0f} s)")
                log.warning("build %s: %s; force-deleting pod %s", job.build_id, reason, name)
                await self._delete(job.build_id, name, secret=bool(job.clone_token), grace=0)
                return reason
            return None
        pending.unknown_since = None
        if st.started or st.finished:
            return None
        if now - pending.since >= EVENTS_AFTER and now - pending.events_at >= self.pending_poll:
            pending.events_at = now
            try:
                pending.events = await self.api.pod_events(name)
            except KubeError as e:
                log.info("build %s: could not read the events of pod %s: %s", job.build_id, name, e)
        problem = start_problem(st, pending.events)
        if problem and problem not in announced:
            announced.add(problem)
            if st.container_reason:
                announced.add(st.container_reason)  # said once, in the better words
            log.info("build %s: pod %s cannot start yet: %s", job.build_id, name, problem)
            await emit(ProgressEvent(Phase.WAITING, f"the build pod cannot start yet: {problem}"))
        limit = build_deadlines(self.settings).start
        if now - pending.since < limit:
            return None
        reason = f"the build pod did not start within {limit} s: {problem or 'it stayed ' + st.phase}"
        log.warning("build %s: %s; deleting pod %s", job.build_id, reason, name)
        await self._delete(job.build_id, name, secret=bool(job.clone_token))
        return reason

    async def _evicted(self, job: BuildJob, name: str, st: PodStatus, reader: LogReader) -> BuildOutcome:
        """Drained, preempted or evicted: not the build's fault; build it again, once."""
        await self._delete(job.build_id, name, secret=bool(job.clone_token))
        return self._after_eviction(job, st.disruption or "", reader)

    def _after_eviction(self, job: BuildJob, disruption: str, reader: LogReader) -> BuildOutcome:
        """The first eviction of a build puts it back in the queue (BuildDeferred); a second fails it."""
        count = self._evictions.get(job.build_id, 0) + 1
        self._evictions[job.build_id] = count
        self._trim(self._evictions)
        reason = f"the build pod was evicted ({disruption})"
        if count > 1:
            return BuildOutcome(Phase.FAILED, f"{reason}, again; not retrying", reader.tail.lines())
        log.warning("build %s: %s; building it again", job.build_id, reason)
        raise BuildDeferred(f"{reason}; it will be built again", retry_after=1.0)

    def _vanished(self, job: BuildJob, name: str, reader: LogReader, last: PodStatus | None = None) -> BuildOutcome:
        if name in self._cancelled:
            return BuildOutcome(Phase.CANCELLED, "cancelled", reader.tail.lines())
        if name in self._timed_out:
            return BuildOutcome(Phase.FAILED, f"build timed out after {self.settings.build_timeout} s",
                                reader.tail.lines())
        if last is not None and last.disruption:  # evicted and already gone
            return self._after_eviction(job, last.disruption, reader)
        log.warning("build %s: pod %s was deleted by someone else", job.build_id, name)
        return BuildOutcome(Phase.FAILED, "the build pod was deleted before it finished", reader.tail.lines())

    async def _refresh(self, name: str) -> None:
        """No word from the watch for a while: ask for the pod directly."""
        assert self.api is not None and self.watch is not None
        try:
            self.watch.seed(await self.api.get_pod(name), fresh=True)
        except KubeNotFound:
            self.watch.forget(name)
        except KubeError as e:
            log.warning("pod %s: could not refresh status: %s", name, e)

    async def _follow_logs(self, job: BuildJob, name: str, reader: LogReader, emit: Emit) -> None:
        """Stream the build container's log into ``reader`` and ``emit``, whatever the network does.

        A stream that ends or breaks while the container runs is reopened from the last
        line's time (``sinceSeconds`` measured on our own clock since we read that line;
        lines already read are skipped by their node timestamp). Only consecutive
        attempts that bring nothing new count towards giving up. A silent stream is
        reopened after ``log_read_timeout`` (a half-open connection). Once the container
        has terminated, the log is read once more without following, for the lines a
        reset at exit cut off. Lines longer than ``MAX_LOG_LINE`` are cut, not fatal.
        """
        assert self.api is not None and self.watch is not None
        cursor = LogCursor()
        idle = 0
        final = False
        while True:
            st = self.watch.get(name)
            if st is None:
                return
            done = st.finished or st.container_state == "terminated"
            since = cursor.since(self.clock())
            before = cursor.lines
            try:
                resp = await self.api.pod_log(name, objs.CONTAINER_NAME, since_seconds=since, follow=not done,
                                              read_timeout=None if done else self.log_read_timeout)
            except KubeNotFound:
                return
            except KubeError as e:
                log.info("build %s: log of %s not available yet (%s)", job.build_id, name, e)
                resp = None
            if resp is not None:
                try:
                    async for raw in cut_lines(resp.content):
                        item = cursor.feed(raw, self.clock(), reader)
                        if item is not None:
                            await emit(ProgressEvent(item[0], item[1]))
                except (OSError, asyncio.TimeoutError, ValueError) as e:
                    log.info("build %s: log stream of %s broke (%s)", job.build_id, name, e)
                except Exception as e:  # aiohttp payload errors
                    log.info("build %s: log stream of %s broke (%s)", job.build_id, name, e)
                finally:
                    resp.release()
            if done:
                if final or resp is not None:
                    return
                final = True  # could not read the last lines yet: one more try
            idle = 0 if cursor.lines > before else idle + 1
            if idle >= LOG_GIVE_UP:
                log.warning("build %s: the log of %s brought nothing in %d attempts; no longer following",
                            job.build_id, name, idle)
                return
            # The stream ends when the container does; the watch usually says so a moment later.
            changed = self.watch.subscribe(name)
            try:
                st = self.watch.get(name)
                if st is not None and not (st.finished or st.container_state == "terminated"):
                    changed.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), min(0.5 * 2 ** idle, 5.0))
            finally:
                self.watch.unsubscribe(name, changed)

    # -- cancel and clean -------------------------------------------------------
    async def cancel(self, build_id: str) -> None:
        await self.start()
        name = objs.pod_name(build_id)
        self._cancelled[name] = time.time()
        self._trim(self._cancelled)
        creating = self._creating.get(name)
        if creating is not None:  # a slow create (admission, priority and fairness): delete what it makes
            log.info("build %s: cancelling while its pod is being created; waiting for the create", build_id)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(creating), self.api.timeout * 2 if self.api else 60)
        log.info("build %s: cancelling (deleting pod %s)", build_id, name)
        await self._delete(build_id, name, secret=True)

    async def _delete(self, build_id: str, name: str, *, secret: bool, grace: int | None = None) -> None:
        assert self.api is not None
        try:
            await self.api.delete_pod(name, grace)
        except KubeError as e:
            log.warning("build %s: could not delete pod %s: %s", build_id, name, e)
        if secret:
            try:
                await self._remove_tokens([objs.clone_token_key(build_id)])
            except KubeNotFound:
                pass  # no Secret, so no token either
            except KubeError as e:  # the cleaner removes it once the pod is gone
                log.warning("build %s: could not remove its clone token: %s", build_id, e)

    @staticmethod
    def _trim(marks: dict[str, float]) -> None:
        if len(marks) > 5000:
            for key in sorted(marks, key=marks.__getitem__)[: len(marks) - 5000]:
                del marks[key]

    async def _clean_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleaner_interval)
            try:
                await self.clean()
            except Exception:
                log.exception("build pod cleaner failed")

    async def clean(self, now: float | None = None) -> list[str]:
        """Delete build pods past their deadline, force-delete pods stuck terminating, drop clone tokens
        whose pod is gone.

        The deadline is ``BuildDeadlines.pod`` from creation (start + run + grace): past it
        neither the start bound nor the kubelet's activeDeadlineSeconds has ended the pod.
        A pod whose grace period ended ``STUCK_TERMINATING`` ago is on a node that will
        never confirm its deletion (a dead kubelet): only a force delete (grace 0) removes it.
        """
        assert self.api is not None and self.watch is not None
        now = time.time() if now is None else now
        deleted = []
        limit = build_deadlines(self.settings).pod
        for st in list(self.watch.pods.values()):
            if st.deleting and st.deletion_at is not None and now - st.deletion_at > STUCK_TERMINATING:
                log.warning("build %s: pod %s still terminating %d s after its grace period; force-deleting",
                            st.build_id, st.name, now - st.deletion_at)
                if await self.api.delete_pod(st.name, 0):
                    deleted.append(st.name)
                continue
            if st.created is not None and now - st.created > limit and not st.deleting:
                log.warning("build %s: pod %s older than %d s; deleting", st.build_id, st.name, limit)
                self._timed_out[st.name] = now
                self._trim(self._timed_out)
                if await self.api.delete_pod(st.name):
                    deleted.append(st.name)
        if not self.watch.synced.is_set():  # not knowing the pods yet, every token would look orphaned
            return deleted
        try:
            tokens = await self.api.get_secret(objs.CLONE_TOKENS_SECRET)
        except KubeNotFound:
            return deleted
        live = set(self.watch.pods) | self._placing
        orphans = sorted(k for k in (tokens.get("data") or {}) if k not in live)
        if orphans:
            log.info("removing %d clone tokens whose build pod is gone", len(orphans))
            await self._remove_tokens(orphans)
            deleted += [f"{objs.CLONE_TOKENS_SECRET}/{k}" for k in orphans]
        return deleted
