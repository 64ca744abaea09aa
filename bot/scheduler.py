"""The scheduler: names the image, asks the registry, queues and runs builds.

Vocabulary: a *record* is one request's view of a build (a push to a branch, a
PR's head, a launch); a *job* is the build that actually runs (one pod or one
process), named by ``job_id``. Several records can share one job: the same sha
reached through a branch and a PR is built once, and each of them still gets
its own feedback. Records live in the store; jobs are tasks of this process
(and, for Kubernetes, pods that outlive it and are re-attached on start).

The decisions (what to do with a request given what exists, when a build counts as
built, when a clone-token failure stops) are pure functions in ``bot.build_rules``;
the class is the I/O shell around them.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from bot.build_queue import BuildQueue
from bot.build_rules import Action, ImageStatus, plan_submit, token_failure_verdict, verify_outcome
from bot.builders.base import BuildDeferred, build_deadlines
from bot.clock import SYSTEM_CLOCK, Clock
from bot.github.errors import ErrorKind, classify_github_error
from bot.images import effective_prefix, image_name
from bot.model import BuildJob, BuildOutcome, BuildRequest, BuildState, Phase, ProgressEvent, Trigger
from bot.store.builds import BuildRecord

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
RETRY_SECONDS = 15.0  # a dependency that is down (registry, GitHub): how long a queued build waits
REAP_SECONDS = 120.0  # how often builds running outside the process are compared with the records


class Scheduler:
    """Bounded concurrency, queue order (``bot.queue_order``), supersede, restart reconciliation."""

    def __init__(self, services: "Core", *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.services = services
        self.settings = services.settings
        self.clock = clock  # retry deadlines, the build backstop and timestamps read it (tests drive it)
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._job_phase: dict[str, Phase] = {}
        self._tails: dict[str, collections.deque[str]] = {}
        self._wake = asyncio.Event()
        self._submit_lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._reap_task: asyncio.Task[None] | None = None
        self._retry_at: dict[str, float] = {}  # job_id -> when a build held back by a dependency may start
        self._token_failures: dict[str, int] = {}  # job_id -> clone-token failures in a row
        self._prefix = effective_prefix(self.settings.image_prefix, self.settings.registry_url)
        self.queue = BuildQueue(services)

    # -- naming ------------------------------------------------------------
    def image_for(self, owner: str, repo: str, sha: str) -> str:
        return image_name(owner, repo, sha, self._prefix)

    @property
    def image_prefix(self) -> str:
        """The prefix every image we build starts with (the Hub side checks it)."""
        return self._prefix

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Re-attach running builds (their jobs re-run ``builder.run``), then start the loop."""
        await self.queue.load()
        running = await self.services.builds.in_state(BuildState.RUNNING)
        for job_id in dict.fromkeys(r.job_id for r in running):
            log.info("build %s: re-attaching after restart", job_id)
            await self._launch(job_id)
        self._loop_task = asyncio.create_task(self._loop(), name="scheduler")
        self._reap_task = asyncio.create_task(self._reap_loop(), name="scheduler-reaper")

    async def stop(self) -> None:
        """Leave builds as they are (pods keep running; a restart re-attaches)."""
        for loop_task in (self._loop_task, self._reap_task):
            if loop_task:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
        tasks = list(self._jobs.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._jobs.clear()

    # -- queries -----------------------------------------------------------
    async def status(self, owner: str, repo: str, sha: str) -> BuildRecord | None:
        return await self.services.builds.latest_for_sha(owner, repo, sha)

    async def image_status(self, owner: str, repo: str, sha: str) -> ImageStatus:
        """Is this commit's image built (our record, else the registry), being built, or neither?

        The one place that decides it: the launcher, the badge and the build-on-launch
        refusal all ask here instead of reading the store and the registry themselves.
        """
        record = await self.status(owner, repo, sha)
        if record is not None and record.state in (BuildState.BUILT, BuildState.QUEUED, BuildState.RUNNING):
            return ImageStatus(record)
        return ImageStatus(record, await self._exists(self.image_for(owner, repo, sha)))

    def log_tail(self, job_id: str) -> list[str]:
        return list(self._tails.get(job_id, ()))

    def running_jobs(self) -> int:
        return len(self._jobs)

    def waiting_message(self, job_id: str) -> str | None:
        """Where a queued build stands ("waiting: 3 builds ahead of yours"), None if not queued."""
        return self.queue.message(job_id)

    # -- submit ------------------------------------------------------------
    async def submit(self, req: BuildRequest, *, rebuild: bool = False) -> BuildRecord:
        """Turn a build request into a record: ready, following, or queued."""
        builds = self.services.builds
        image = self.image_for(req.owner, req.repo, req.sha)
        if rebuild and req.trigger is not Trigger.RERUN:
            req = dataclasses.replace(req, trigger=Trigger.RERUN)
        async with self._submit_lock:
            same_key = await builds.active_for_key(req.supersede_key)
            same_image = await builds.active_for_image(image)
            exists: bool | None = None
            if not same_image and not any(r.image == image for r in same_key):
                exists = await self._exists(image)
            plan = plan_submit(req, image, same_key, same_image, exists, rebuild)
            if plan.action is Action.RETURN_EXISTING:
                record = plan.existing
            elif plan.action is Action.FOLLOW:
                leader = plan.existing
                record = await builds.create(
                    req, image, state=leader.state, phase=leader.phase, job_id=leader.job_id,
                    cache_from=leader.cache_from, started_at=leader.started_at, now=self.clock.time())
                log.info("build %s: %s follows running build %s", record.id, req.supersede_key, leader.job_id)
            elif plan.action is Action.READY:
                record = await builds.create(req, image, state=BuildState.BUILT, phase=Phase.BUILT, from_cache=True,
                                             now=self.clock.time())
                log.info("build %s: image %s already in the registry", record.id, image)
            else:
                record = await builds.create(req, image, now=self.clock.time())
                log.info("build %s: queued %s at %s", record.id, req.full_name, req.sha[:12])
            for old in plan.supersede:
                await self._cancel_record(old, f"superseded by {req.sha[:12]}", superseded_by=record.id)
        assert record is not None
        if plan.action is Action.READY:
            await self._publish(record, ProgressEvent(Phase.BUILT, "image found in the registry", record.id, image))
        elif plan.action is Action.QUEUE:
            await self._publish(record, ProgressEvent(Phase.WAITING, "waiting for a build slot", record.id, image))
            self._wake.set()
        elif plan.action is Action.FOLLOW:
            note = self.queue.message(record.job_id) if record.state is BuildState.QUEUED else None
            await self._publish(record, ProgressEvent(record.phase, note or "attached to a running build", record.id,
                                                      image))
            if record.state is BuildState.QUEUED:
                self._wake.set()  # a launch following a queued push moves that build up
        return record

    # -- cancel ------------------------------------------------------------
    async def cancel_key(self, key: str, reason: str, superseded_by: str | None = None) -> list[BuildRecord]:
        """Cancel every active record of a PR or branch (e.g. the PR was closed)."""
        async with self._submit_lock:
            recs = await self.services.builds.active_for_key(key)
            for r in recs:
                await self._cancel_record(r, reason, superseded_by=superseded_by)
        return recs

    async def _cancel_record(self, record: BuildRecord, reason: str, superseded_by: str | None = None) -> None:
        builds = self.services.builds
        await builds.update(record.id, state=BuildState.CANCELLED, phase=Phase.CANCELLED, reason=reason,
                            superseded_by=superseded_by, finished_at=self.clock.time())
        log.info("build %s: cancelled (%s)", record.id, reason)
        record = await builds.get(record.id)
        assert record is not None
        await self._publish(record, ProgressEvent(Phase.CANCELLED, reason, record.id, record.image))
        if not await builds.active_for_job(record.job_id):
            await self._stop_job(record.job_id)

    async def _stop_job(self, job_id: str) -> None:
        task = self._jobs.pop(job_id, None)
        builder = self.services.builder
        if builder is not None:
            try:
                await builder.cancel(job_id)
            except Exception:
                log.exception("build %s: builder could not cancel", job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._wake.set()

    # -- the loop ----------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # before filling: a wake-up during _fill_slots must not be lost
            try:
                await self._fill_slots()
            except Exception:
                log.exception("scheduler loop failed; retrying")
            waits = [t - self.clock.time() for t in self._retry_at.values()]
            timeout = max(0.05, min(waits)) if waits else 30.0
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout(timeout):
                    await self._wake.wait()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_SECONDS)
            try:
                await self.reap_orphans()
            except Exception:
                log.exception("reaping orphaned builds failed; trying again later")

    async def reap_orphans(self) -> list[str]:
        """Stop builds running outside the process (pods) that no active record wants.

        A supersede racing a slow create, a crash between a record's end and its pod's
        deletion: whatever the cause, a pod nobody waits for holds a node and a slot.
        """
        builder = self.services.builder
        known = builder.known_builds() if builder is not None else {}
        if not known:
            return []
        builds = self.services.builds
        wanted = {r.job_id for state in (BuildState.RUNNING, BuildState.QUEUED) for r in await builds.in_state(state)}
        reaped = []
        for build_id in known:
            if build_id in wanted or build_id in self._jobs:
                continue
            log.warning("build %s: its pod runs but no record wants it; deleting it", build_id)
            await builder.cancel(build_id)
            reaped.append(build_id)
        return reaped

    async def _fill_slots(self) -> None:
        """Start queued builds in queue order while slots are free, then tell the rest where they stand."""
        cap = max(1, self.settings.max_concurrent_builds)
        queued = await self.services.builds.in_state(BuildState.QUEUED)
        order = self.queue.order(r for r in queued if r.job_id not in self._jobs)
        now = self.clock.time()
        for job in order:
            if len(self._jobs) >= cap:
                break
            if self._retry_at.get(job.job_id, 0) > now:
                continue
            self._retry_at.pop(job.job_id, None)
            self.queue.served(job, now)
            await self._launch(job.job_id)
        await self.queue.announce([job for job in order if job.job_id not in self._jobs])

    async def _launch(self, job_id: str) -> None:
        task = asyncio.create_task(self._run_job(job_id), name=f"build-{job_id}")
        self._jobs[job_id] = task
        task.add_done_callback(lambda t, j=job_id: self._job_done(j, t))

    def _job_done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("build %s: scheduler task failed: %r; the build stays in the store for the next start",
                      job_id, task.exception())
        if self._jobs.get(job_id) is task:
            del self._jobs[job_id]
        self._job_phase.pop(job_id, None)
        self._wake.set()

    async def _run_job(self, job_id: str) -> None:
        builds = self.services.builds
        records = await builds.active_for_job(job_id)
        if not records:
            return
        lead = records[0]
        image = lead.image
        metrics = self.services.metrics
        if lead.state == BuildState.QUEUED:
            # Someone else (a BinderHub, another sha path) may have built it meanwhile.
            exists = await self._exists(image)
            if exists is None:
                self._retry_at[job_id] = self.clock.time() + RETRY_SECONDS
                log.warning("build %s: registry unreachable; waiting before building", job_id)
                await self._publish_job(job_id, ProgressEvent(
                    Phase.WAITING, "the registry is not answering; the build will start when it does", job_id, image))
                return
            if exists and lead.request.trigger is not Trigger.RERUN:
                await self._finish_job(job_id, BuildState.BUILT, "image found in the registry", from_cache=True)
                return
            cache_from = await self._cache_from(lead)
            started_at = self.clock.time()
            self.queue.observe_wait(records, started_at)
            # Under the submit lock: a record that follows this job (submit reads the leader, then
            # copies its fields) must see the job either before this update or after it, never half.
            async with self._submit_lock:
                await builds.update_job(job_id, state=BuildState.RUNNING, started_at=started_at,
                                        cache_from=cache_from)
        else:
            # Re-attaching after a restart: the build may have pushed and its pod been
            # deleted while we were away. The registry is the truth; never rebuild what it has.
            if await self._exists(image, fresh=True):
                log.info("build %s: its image reached the registry while we were away", job_id)
                with contextlib.suppress(Exception):
                    await self.services.builder.cancel(job_id)  # whatever is left of it
                await self._finish_job(job_id, BuildState.BUILT, "")
                return
            cache_from = lead.cache_from
        try:
            token = await self._clone_token(lead.request)
        except Exception as e:
            await self._token_failed(job_id, lead, e)
            return
        self._token_failures.pop(job_id, None)
        job = BuildJob(build_id=job_id, request=lead.request, image=image, cache_from=cache_from, clone_token=token)
        tail = self._tails.setdefault(job_id, collections.deque(maxlen=LOG_TAIL_LINES))
        self._job_phase[job_id] = lead.phase if lead.state == BuildState.RUNNING else Phase.WAITING
        if metrics is not None:
            metrics.builds_running.inc()

        async def emit(event: ProgressEvent) -> None:
            if event.message and event.phase == self._job_phase.get(job_id):
                tail.append(event.message)
            if event.phase != self._job_phase.get(job_id):
                self._job_phase[job_id] = event.phase
                if event.phase in (Phase.FETCHING, Phase.BUILDING, Phase.PUSHING):
                    await builds.update_job(job_id, phase=event.phase)
                if event.message:
                    tail.append(event.message)
            if event.phase.terminal_for_build:
                return  # the scheduler says built/failed only after it checked
            await self._publish_job(job_id, dataclasses.replace(event, build_id=job_id, image=image))

        started = time.monotonic()
        try:
            async with self.clock.timeout(build_deadlines(self.settings).backstop):
                outcome = await self.services.builder.run(job, emit)
        except TimeoutError:
            outcome = BuildOutcome(Phase.FAILED, f"build timed out after {self.settings.build_timeout} s")
            with contextlib.suppress(Exception):
                await self.services.builder.cancel(job_id)
        except asyncio.CancelledError:
            raise
        except BuildDeferred as e:  # back-pressure, quota: back to the queue, not a failure
            wait = RETRY_SECONDS if e.retry_after is None else max(1.0, e.retry_after)
            log.warning("build %s: the builder cannot take it now (%s); retrying in %g s", job_id, e.message, wait)
            await builds.update_job(job_id, state=BuildState.QUEUED)
            self._retry_at[job_id] = self.clock.time() + wait
            await self._publish_job(job_id, ProgressEvent(Phase.WAITING, e.message, job_id, image))
            return
        except Exception as e:
            log.exception("build %s: builder error", job_id)
            outcome = BuildOutcome(Phase.FAILED, f"the builder failed: {type(e).__name__}: {e}")
        finally:
            if metrics is not None:
                metrics.builds_running.dec()
        if outcome.log_tail:
            for line in outcome.log_tail[-LOG_TAIL_LINES:]:
                if not tail or line not in tail:
                    tail.append(line)
        exists = await self._exists(image, fresh=True) if outcome.phase == Phase.BUILT else None
        state, reason = verify_outcome(outcome, exists)
        if metrics is not None:
            metrics.build_duration.observe(time.monotonic() - started)
        await self._finish_job(job_id, state, reason)

    async def _token_failed(self, job_id: str, lead: BuildRecord, e: Exception) -> None:
        """No clone token: wait while GitHub is down, stop when it will never come, cap the rest."""
        failures = self._token_failures[job_id] = self._token_failures.get(job_id, 0) + 1
        c = classify_github_error(e, asking_for_token=True)
        name = lead.request.full_name
        if token_failure_verdict(c.kind, failures) is BuildState.FAILED:
            self._token_failures.pop(job_id, None)
            if c.kind is ErrorKind.PERMANENT:
                reason = f"GitHub will not give a token to clone {name}: {c.reason}. The build is stopped."
            else:
                reason = (f"GitHub gave no token to clone {name} after {failures} tries ({c.reason}). "
                          "The build is stopped; push again or re-run the check to retry.")
            log.error("build %s: no clone token for %s (%s, %s): failing the build", job_id, name, c.kind.value, e)
            await self._finish_job(job_id, BuildState.FAILED, reason)
            return
        log.warning("build %s: no clone token for %s (%s: %s); retry %d in %g s", job_id, name, c.kind.value, e,
                    failures, RETRY_SECONDS)
        await self.services.builds.update_job(job_id, state=BuildState.QUEUED)
        self._retry_at[job_id] = self.clock.time() + RETRY_SECONDS
        await self._publish_job(job_id, ProgressEvent(
            Phase.WAITING, f"could not get a token from GitHub to clone this private repository ({c.reason}); "
            "the build will retry", job_id, lead.image))

    async def _finish_job(self, job_id: str, state: BuildState, reason: str, from_cache: bool = False) -> None:
        builds = self.services.builds
        tail = tuple(self._tails.get(job_id, ()))
        # Under the submit lock, as the start is: a record that follows this job (submit reads the
        # leader, then copies its state) is either among those finished here or sees the job
        # finished; never copied from a running leader just after that leader finished.
        async with self._submit_lock:
            records = await builds.active_for_job(job_id)
            await builds.update_job(
                job_id, state=state, phase=Phase(state.value),
                reason=reason or None, finished_at=self.clock.time(), log_tail=tail[-50:], from_cache=from_cache)
        metrics = self.services.metrics
        if metrics is not None:
            metrics.builds.labels(state.value).inc()
        log.info("build %s: %s%s", job_id, state.value, f" ({reason})" if reason else "")
        phase = Phase(state.value)
        message = "image built and in the registry" if state == BuildState.BUILT and not from_cache else (
            reason or state.value)
        for r in records:
            fresh = await builds.get(r.id)
            if fresh is not None:
                await self._publish(fresh, ProgressEvent(phase, message, job_id, r.image))
        self._tails.pop(job_id, None)

    # -- helpers -----------------------------------------------------------
    async def _publish(self, record: BuildRecord, event: ProgressEvent) -> None:
        await self.services.bus.publish(record, event)

    async def _publish_job(self, job_id: str, event: ProgressEvent) -> None:
        """One event to every record sharing the job (image subscribers get it once)."""
        records = await self.services.builds.active_for_job(job_id)
        for i, r in enumerate(records):
            await self.services.bus.publish(r, event, to_subscribers=(i == 0))

    async def _exists(self, image: str, fresh: bool = False) -> bool | None:
        lookup = self.services.images
        if lookup is None:
            return None
        try:
            if fresh and hasattr(lookup, "forget"):
                lookup.forget(image)
            return await lookup.exists(image)
        except Exception:
            log.exception("image lookup failed for %s", image)
            return None

    async def _cache_from(self, record: BuildRecord) -> str | None:
        """The newest built image of the repo's default branch (else of the repo)."""
        req = record.request
        builds = self.services.builds
        prev = None
        if req.default_branch:
            prev = await builds.newest_built(req.owner, req.repo, req.default_branch)
        if prev is None:
            prev = await builds.newest_built(req.owner, req.repo)
        if prev is None or prev.image == record.image:
            return None
        return prev.image

    async def _clone_token(self, req: BuildRequest) -> str | None:
        """A token scoped to this one repository, contents read: private repos only."""
        if not req.private or req.installation_id is None or self.services.github is None:
            return None
        return await self.services.github.installation_token(
            req.installation_id, repositories=[req.repo], permissions={"contents": "read"})
