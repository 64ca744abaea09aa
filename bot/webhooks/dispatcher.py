"""The dispatcher: drains the delivery store and routes each event through gidgethub.

Exactly once, across crashes:
- a delivery is *claimed* (state 'processing', attempts+1, a lease) in one transaction;
- its handlers run (at most ``handler_timeout``; the lease is much longer);
- it is marked done together with a 'done' row in ``delivery_attempts``, in one
  transaction fenced by the claim's attempt number, so only the claim that
  still holds the delivery can complete it.
A SIGKILL between claim and completion leaves the row 'processing'; at start-up
every such row is made due again (one process owns DATA_DIR). So every stored
delivery completes exactly once; a handler may run again after a crash, which is
why handlers key their durable effects by ``event.delivery_id`` (idempotent).

A handler that raises marks its delivery failed with the error. A dependency that is
down or rate limited (bot.github.outage.classify) only *delays* it: retried after the
rate limit's reset, or with backoff capped at ``backoff_cap``, for as long as the
delivery is relevant (``relevance``, days); such attempts are recorded as 'delayed' and
never count towards giving up. A failure of the delivery's own content is retried
up to ``max_attempts`` times, then the delivery is 'dead' (listed and requeued with
``binder-prebuild deliveries``). The other deliveries carry on.
Deliveries for the same repository run one after another (in arrival order),
different repositories in parallel, at most ``concurrency`` at once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import gidgethub.abc
import gidgethub.routing
import gidgethub.sansio

from bot.clock import SYSTEM_CLOCK, Clock
from bot.github.outage import FailureKind, Verdict, classify, describe, retry_time
from bot.logs import delivery_context
from bot.core import Core
from bot.store.deliveries import Delivery
from bot.webhooks.signature import BadDelivery, MediaType, decode_payload, installation_id
from bot.webhooks.writer import GroupCommit

log = logging.getLogger(__name__)


class GitHubUnavailable(RuntimeError):
    """A handler tried to call GitHub where no client can exist."""


class UnavailableGitHub(gidgethub.abc.GitHubAPI):
    """The ``gh`` handlers get when there are no App credentials or no installation.

    Handlers that only touch the store work as usual; any API call fails with a
    clear reason (and the delivery is retried, then dead, like any failure).
    """

    def __init__(self, reason: str) -> None:
        super().__init__("binder-prebuild")
        self.reason = reason

    async def _request(self, method: str, url: str, headers: Mapping[str, str],
                       body: bytes = b"") -> tuple[int, Mapping[str, str], bytes]:
        raise GitHubUnavailable(f"cannot {method} {url}: {self.reason}")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


RELEVANCE = 3 * 86400.0  # GitHub keeps deliveries (and their redelivery) for 3 days


class PermanentFailure(Exception):
    """A stored delivery that can never be processed (retrying cannot help)."""


def retry_at(attempt: int, now: float, *, max_attempts: int, base: float, cap: float,
             jitter: float = 0.1, rand: Callable[[], float] = random.random) -> float | None:
    """When to retry after failed attempt number ``attempt`` (1-based); None means give up."""
    if attempt >= max_attempts:
        return None
    delay = min(cap, base * 2 ** (attempt - 1))
    return now + delay * (1 + jitter * rand())


def event_from_delivery(d: Delivery) -> gidgethub.sansio.Event:
    """The gidgethub Event for a stored delivery (body as GitHub sent it, JSON or form)."""
    ctype = (d.headers.get("content-type") or "application/json").split(";", 1)[0].strip().lower()
    kind = MediaType.FORM if ctype == MediaType.FORM.value else MediaType.JSON
    try:
        payload = decode_payload(kind, d.body)
    except BadDelivery as e:
        raise PermanentFailure(e.message) from None
    return gidgethub.sansio.Event(payload, event=d.event, delivery_id=d.id)


class Dispatcher:
    def __init__(self, services: Core, router: gidgethub.routing.Router, *,
                 concurrency: int = 8, handler_timeout: float = 120.0, lease_seconds: float | None = None,
                 max_attempts: int = 6, backoff_base: float = 5.0, backoff_cap: float = 900.0,
                 idle_poll: float = 5.0, ack_quiet: float = 0.02, max_defer: float = 1.0,
                 clock: Clock = SYSTEM_CLOCK, relevance: float = RELEVANCE) -> None:
        self.services = services
        self.router = router
        self.concurrency = concurrency
        self.handler_timeout = handler_timeout
        # a claimed delivery may wait behind every other one of its repository
        self.lease_seconds = lease_seconds or handler_timeout * (concurrency + 2)
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.relevance = relevance
        self.idle_poll = idle_poll
        self.ack_quiet = ack_quiet
        self.max_defer = max_defer
        self.clock = clock  # measures the pause for the receiver (tests drive it)
        self._ingest = services.ingest
        self._deferred = False  # the current busy spell already waited max_defer
        self._wakeup = services.delivery_wakeup
        self._completions = GroupCommit(services.deliveries.finish_many, name="delivery-completions")
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_of_repo: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._depth_at = 0.0
        self.completed = 0
        self.failed = 0

    @property
    def _metrics(self) -> Any:
        return self.services.metrics

    async def start(self) -> None:
        recovered = await self.services.deliveries.recover_interrupted()
        if recovered:
            log.warning("re-queued %d deliveries interrupted by the last stop", recovered)
        self._stopping = False
        self._completions.start()
        self._loop_task = asyncio.create_task(self._run(), name="delivery-dispatcher")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let running handlers finish for ``grace`` seconds, then cancel them.

        A cancelled delivery stays 'processing' and is re-run at the next start.
        """
        self._stopping = True
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._completions.close()

    async def _run(self) -> None:
        store = self.services.deliveries
        while not self._stopping:
            self._wakeup.clear()
            free = self._limit() - len(self._tasks)
            claimed: list[Delivery] = []
            try:
                if free > 0:
                    await self._yield_to_ingest()
                    free = self._limit() - len(self._tasks)
                if free > 0:
                    claimed = await store.claim(limit=free, lease_seconds=self.lease_seconds)
                    for d in claimed:
                        self._spawn(d)
                await self._update_depth()
                timeout = self.idle_poll
                if free > 0 and len(claimed) < free:  # nothing else due now: sleep until the next retry
                    due = await store.next_due()
                    if due is not None and due > time.time():
                        timeout = min(timeout, max(0.01, due - time.time()))
                elif free > 0:
                    continue  # a full batch: there may be more right away
            except Exception:  # the store failed; keep the loop alive and try again
                log.exception("dispatcher could not read the delivery store")
                timeout = 1.0
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _limit(self) -> int:
        """How many deliveries may run now: one while the receiver is busy, else ``concurrency``."""
        return 1 if self._ingest.busy(self.ack_quiet) else self.concurrency

    async def _yield_to_ingest(self) -> None:
        """Acknowledge first: while the receiver is busy, wait (at most ``max_defer`` s).

        Answers are due within GitHub's 10 s; processing is not, and every handler
        write queues with the receiver's commits for the one store connection. In a
        burst the queue grows and drains at full concurrency once it ends; under
        sustained load deliveries still run, one at a time, so nothing starves.
        """
        if not self._ingest.busy(self.ack_quiet):
            self._deferred = False
            return
        if self._deferred:
            return  # this busy spell already had its pause: keep going at the busy pace
        deadline = self.clock.time() + self.max_defer
        while self._ingest.busy(self.ack_quiet) and not self._stopping and self.clock.time() < deadline:
            await asyncio.sleep(self.ack_quiet)
        self._deferred = self._ingest.busy(self.ack_quiet)

    def _spawn(self, d: Delivery) -> None:
        before = self._last_of_repo.get(d.repo) if d.repo else None
        task = asyncio.create_task(self._process(d, before), name=f"delivery-{d.id}")
        self._tasks.add(task)
        if d.repo:
            self._last_of_repo[d.repo] = task

        def done(t: asyncio.Task[None], repo: str | None = d.repo) -> None:
            self._tasks.discard(t)
            if repo and self._last_of_repo.get(repo) is t:
                del self._last_of_repo[repo]
            self._wakeup.set()  # a slot is free

        task.add_done_callback(done)

    async def _process(self, d: Delivery, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])  # same repository: keep arrival order
        with delivery_context(d.id):
            started = time.perf_counter()
            deadline = asyncio.timeout(self.handler_timeout)
            try:
                event = event_from_delivery(d)
                gh = self._client_for(event.data)
                async with deadline:
                    await self.router.dispatch(event, gh, services=self.services)
            except Exception as e:
                await self._failed(d, e, timed_out=deadline.expired())
                return
            try:
                completed = await self._completions.submit((d.id, d.attempts))
            except Exception as e:  # the store failed: the delivery stays claimed and runs again later
                log.error("could not mark %s delivery done (it will run again): %s", d.event, e)
                return
            if completed:
                self.completed += 1
                log.info("processed %s delivery (attempt %d) in %.3f s", d.event, d.attempts,
                         time.perf_counter() - started)
            else:
                log.warning("%s delivery was claimed again elsewhere; this run's completion was dropped", d.event)

    async def _failed(self, d: Delivery, e: Exception, *, timed_out: bool = False) -> None:
        self.failed += 1
        now = time.time()
        if timed_out:
            error = f"handler timed out after {self.handler_timeout:g} s"
            verdict = Verdict(FailureKind.UNAVAILABLE)  # a dependency that hangs, most likely
        else:
            error = f"{type(e).__name__}: {e}"[:2000]
            verdict = Verdict(FailureKind.CONTENT) if isinstance(e, PermanentFailure) else classify(e, now)
        store = self.services.deliveries
        outcome = None
        if verdict.transient and now - d.received_at < self.relevance:
            delayed = await self._count_attempts(d, "delayed") + 1
            when: float | None = retry_time(verdict, delayed, now, base=self.backoff_base, cap=self.backoff_cap,
                                            rand=random.random())
            outcome = "delayed"
            log.warning("%s delivery delayed (%s; attempt %d), retry in %.0f s: %s", d.event, describe(verdict, now),
                        d.attempts, (when or now) - now, error)
        else:
            failures = 1 if isinstance(e, PermanentFailure) else await self._count_attempts(d, "failed") + 1
            when = None if isinstance(e, PermanentFailure) else retry_at(
                failures, now, max_attempts=self.max_attempts, base=self.backoff_base, cap=self.backoff_cap)
            if verdict.transient:
                error = f"no longer relevant after {self.relevance / 86400:g} days of outage: {error}"
            if when is None:
                log.error("%s delivery failed for good (attempt %d): %s", d.event, d.attempts, error,
                          exc_info=not isinstance(e, PermanentFailure) and not verdict.transient)
            else:
                log.warning("%s delivery failed (attempt %d), retry in %.0f s: %s", d.event, d.attempts,
                            when - now, error, exc_info=True)
        if self._metrics is not None:
            self._metrics.handler_failures.labels(event=d.event).inc()
        try:
            await store.fail(d.id, error, retry_at=when, attempt=d.attempts, outcome=outcome)
        except Exception:  # the row keeps its lease and is claimed again when it expires
            log.exception("could not record the failure of %s delivery", d.event)
        if when is not None:
            self._wakeup.set()  # the loop's sleep must not outlast this retry

    async def _count_attempts(self, d: Delivery, outcome: str) -> int:
        try:
            return await self.services.deliveries.count_attempts(d.id, outcome)
        except Exception:  # the store is busy: assume the worst for content, the best for delays
            return d.attempts if outcome == "failed" else 1

    def _client_for(self, payload: dict[str, Any]) -> gidgethub.abc.GitHubAPI:
        inst = installation_id(payload)
        github = self.services.github
        if github is None:
            return UnavailableGitHub("no GitHub App credentials configured (GITHUB_APP_ID, GITHUB_PRIVATE_KEY)")
        if inst is None:
            return UnavailableGitHub("this delivery names no installation; use the app client")
        return github.installation_client(inst)

    async def _update_depth(self) -> None:
        """Refresh the queue-depth gauge, at most once a second (a COUNT per loop is waste)."""
        now = time.monotonic()
        if self._metrics is None or now - self._depth_at < 1.0:
            return
        self._depth_at = now
        self._metrics.queue_depth.set(await self.services.deliveries.depth())
