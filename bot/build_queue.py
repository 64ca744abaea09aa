"""The scheduler's queue bookkeeping: whose turn it is, where each queued build stands.

The order itself is ``bot.queue_order.queue_order`` (pure). This keeps what it needs
between calls: when each installation last got a slot (loaded from the store's
``started_at`` at start, so turns survive a restart), the positions last told to
watchers, and the queue metrics.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bot.model import Phase, ProgressEvent
from bot.queue_order import (QueuedJob, coarse_message, coarse_position, group_jobs, installation_key,
                             queue_lengths, queue_order, waiting_message)

if TYPE_CHECKING:
    from bot.core import Core
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)


class BuildQueue:
    def __init__(self, services: "Core") -> None:
        self.services = services
        self.last_served: dict[str, float] = {}  # installation key -> when it last got a slot
        self._records: dict[str, list["BuildRecord"]] = {}  # job_id -> its queued records (last order)
        self._told: dict[str, int] = {}  # job_id -> position last published to streams
        self._told_coarse: dict[str, tuple[int, int | None]] = {}  # ... and to listeners (check runs)
        self._gauge_labels: set[str] = set()

    async def load(self) -> None:
        """Whose turn it is, from the builds' stored start times."""
        for inst, owner, at in await self.services.builds.last_started_by_installation():
            key = installation_key(inst, owner)
            self.last_served[key] = max(at, self.last_served.get(key, at))

    def order(self, queued: Iterable["BuildRecord"]) -> list[QueuedJob]:
        records = list(queued)
        self._records = {}
        for r in records:
            self._records.setdefault(r.job_id, []).append(r)
        return queue_order(records, self.last_served)

    def served(self, job: QueuedJob, at: float) -> None:
        """``job`` takes a slot now: its installation goes to the back of its turns."""
        self.last_served[job.installation] = at

    def position(self, job_id: str) -> int | None:
        """Builds ahead of a queued job as last published (None: not waiting in the queue)."""
        return self._told.get(job_id)

    def message(self, job_id: str) -> str | None:
        ahead = self.position(job_id)
        return None if ahead is None else waiting_message(ahead)

    def observe_wait(self, records: list["BuildRecord"], now: float) -> None:
        """The queue-wait histogram, when a job leaves the queue for a slot."""
        metrics = self.services.metrics
        if metrics is None or not records:
            return
        (job,) = group_jobs(records)
        metrics.queue_wait.labels(priority=job.priority.label).observe(max(0.0, now - job.created_at))

    async def announce(self, waiting: list[QueuedJob]) -> None:
        """Tell each queued build's watchers its new position, when it changed.

        Streams and pages (bus subscribers) hear every change; listeners (the check
        run, through GitHub's rate-limited API) hear it when its range changes.
        """
        self._metrics(waiting)
        bus = self.services.bus
        current = {job.job_id for job in waiting}
        for gone in [j for j in self._told if j not in current]:
            del self._told[gone]
            self._told_coarse.pop(gone, None)
        for ahead, job in enumerate(waiting):
            records = self._records.get(job.job_id, [])
            if not records:
                continue
            exact = self._told.get(job.job_id) != ahead
            coarse = coarse_position(ahead)
            rough = self._told_coarse.get(job.job_id) != coarse
            self._told[job.job_id] = ahead
            self._told_coarse[job.job_id] = coarse
            image = records[0].image
            if exact:
                event = ProgressEvent(Phase.WAITING, waiting_message(ahead), job.job_id, image)
                await bus.publish(records[0], event, to_listeners=False)
            if rough:
                event = ProgressEvent(Phase.WAITING, coarse_message(ahead), job.job_id, image)
                for r in records:
                    await bus.publish(r, event, to_subscribers=False)

    def _metrics(self, waiting: list[QueuedJob]) -> None:
        metrics = self.services.metrics
        if metrics is None:
            return
        metrics.builds_queued.set(len(waiting))
        lengths = queue_lengths(waiting)
        for label in self._gauge_labels - lengths.keys():
            metrics.queue_length.remove(label)  # an installation's queue emptied: no stale series
        for label, n in lengths.items():
            metrics.queue_length.labels(installation=label).set(n)
        self._gauge_labels = set(lengths)
