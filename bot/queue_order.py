"""The build queue's order: who gets the next free build slot (pure functions).

The order is derived from stored records alone (priority from the trigger,
installation, created time) plus when each installation last got a slot (its
builds' ``started_at``), so it is the same after a restart:

1. priority: a launch someone waits for in a browser, then pull requests and
   builds a person asked for on GitHub (re-run, command), then branch pushes,
   then background work (reconcile and any trigger not listed here);
2. within a priority, installations take turns (round-robin): the installation
   served least recently goes first, so one installation's burst cannot starve
   the others;
3. within an installation, oldest first (a newer sha for the same branch or PR
   has already superseded the older one, so "newest first" for one key holds).

Running builds are not part of the queue and are never stopped to make room.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from bot.model import Trigger

if TYPE_CHECKING:
    from bot.store.builds import BuildRecord


class Priority(enum.IntEnum):
    """Lower goes first."""

    INTERACTIVE = 0  # a launch: a person watches a progress page
    PULL_REQUEST = 1  # a PR head, or a person asked on GitHub (re-run, command)
    PUSH = 2  # a branch push, a command-line build
    BACKGROUND = 3  # reconcile and anything else nobody waits for

    @property
    def label(self) -> str:
        return self.name.lower()


_BY_TRIGGER: dict[str, Priority] = {
    Trigger.LAUNCH.value: Priority.INTERACTIVE,
    Trigger.PULL_REQUEST.value: Priority.PULL_REQUEST,
    Trigger.RERUN.value: Priority.PULL_REQUEST,
    Trigger.COMMAND.value: Priority.PULL_REQUEST,
    Trigger.PUSH.value: Priority.PUSH,
    Trigger.CLI.value: Priority.PUSH,
}


def trigger_priority(trigger: Trigger | str) -> Priority:
    """A trigger's priority; triggers not listed (reconcile work) are background."""
    value = trigger.value if isinstance(trigger, Trigger) else str(trigger)
    return _BY_TRIGGER.get(value, Priority.BACKGROUND)


def installation_key(installation_id: int | None, owner: str) -> str:
    """Who shares slots fairly: the App installation, else (no App) the repository owner."""
    return f"installation:{installation_id}" if installation_id is not None else f"owner:{owner.lower()}"


def record_installation(record: "BuildRecord") -> str:
    return installation_key(record.request.installation_id, record.owner)


@dataclasses.dataclass(frozen=True)
class QueuedJob:
    """One queued build (a job) as the queue sees it: several records may share it."""

    job_id: str
    priority: Priority
    installation: str
    created_at: float  # the oldest of its records: how long it has waited
    record_ids: tuple[str, ...]


def group_jobs(records: Iterable["BuildRecord"]) -> list[QueuedJob]:
    """Queued records grouped by job: a job has its most urgent record's priority and installation."""
    by_job: dict[str, list["BuildRecord"]] = {}
    for r in records:
        by_job.setdefault(r.job_id, []).append(r)
    jobs = []
    for job_id, recs in by_job.items():
        lead = min(recs, key=lambda r: (trigger_priority(r.request.trigger), r.created_at))
        jobs.append(QueuedJob(
            job_id=job_id, priority=trigger_priority(lead.request.trigger), installation=record_installation(lead),
            created_at=min(r.created_at for r in recs), record_ids=tuple(r.id for r in recs)))
    return jobs


def queue_order(records: Iterable["BuildRecord"], last_served: Mapping[str, float] | None = None) -> list[QueuedJob]:
    """The queued jobs in the order they get slots.

    ``records`` are the queued records (in store order: created time, then insertion,
    which breaks ties); ``last_served`` maps an installation key to when it last got
    a slot (never: absent). The result is a fixed interleaving: installation turns
    only change when a slot is taken, and then the next call sees the new time.
    """
    served = last_served or {}
    by_level: dict[Priority, dict[str, list[QueuedJob]]] = {}
    for job in group_jobs(records):  # group_jobs keeps first-seen order, sorted() below is stable
        by_level.setdefault(job.priority, {}).setdefault(job.installation, []).append(job)
    order: list[QueuedJob] = []
    for level in sorted(by_level):
        lanes = by_level[level]
        for lane in lanes.values():
            lane.sort(key=lambda j: j.created_at)
        turns = sorted(lanes, key=lambda inst: (served.get(inst, float("-inf")), lanes[inst][0].created_at))
        depth = max(len(lane) for lane in lanes.values())
        for i in range(depth):
            order.extend(lanes[inst][i] for inst in turns if i < len(lanes[inst]))
    return order


def positions(order: Sequence[QueuedJob]) -> dict[str, int]:
    """job_id -> how many queued builds start before it (0: it takes the next free slot)."""
    return {job.job_id: i for i, job in enumerate(order)}


def waiting_message(ahead: int) -> str:
    """What a queued build's viewers read (streams, pages). Avoids the word the check run drops."""
    if ahead <= 0:
        return "waiting: yours is the next build to start"
    return f"waiting: {ahead} build{'s' if ahead != 1 else ''} ahead of yours"


_BUCKETS = (0, 1, 2, 3, 4, 5, 10, 25, 50, 100, 250, 500, 1000)


def coarse_position(ahead: int) -> tuple[int, int | None]:
    """The range ``ahead`` falls in, (low, high) with high None past the last bucket.

    A check run is updated through GitHub's API, which is rate limited: it hears of
    a new position only when this range changes, not on every step of a long queue.
    """
    low = 0
    for b in _BUCKETS:
        if ahead <= b:
            return (low if b > 5 else b), b
        low = b + 1
    return low, None


def coarse_message(ahead: int) -> str:
    """The check run's note: exact near the front of the queue, a range further back."""
    low, high = coarse_position(ahead)
    if high is not None and low == high:
        return waiting_message(ahead)
    if high is None:
        return f"waiting: more than {low - 1} builds ahead of yours"
    return f"waiting: {low} to {high} builds ahead of yours"


def metric_label(installation: str) -> str:
    """The gauge's label: the installation id, or "none" for launches without the App
    (owners are chosen by anonymous visitors: as labels they would be unbounded)."""
    prefix = "installation:"
    return installation[len(prefix):] if installation.startswith(prefix) else "none"


def queue_lengths(order: Sequence[QueuedJob]) -> dict[str, int]:
    """Metric label (installation id) -> queued jobs: the per-installation gauge."""
    out: dict[str, int] = {}
    for job in order:
        label = metric_label(job.installation)
        out[label] = out.get(label, 0) + 1
    return out
