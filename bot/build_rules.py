"""The scheduler's decisions, as pure functions over what the store and the registry said.

What a submit does (``plan_submit``), when a finished build counts as built
(``verify_outcome``), when a failed clone-token request stops a build
(``token_failure_verdict``), and one commit's image as the scheduler knows it
(``ImageStatus``). bot/scheduler.py is the I/O shell that acts on them.
"""
from __future__ import annotations

import dataclasses
import enum

from bot.github.errors import ErrorKind
from bot.model import BuildOutcome, BuildRequest, BuildState, Phase
from bot.store.builds import BuildRecord

MAX_UNCLASSIFIED_RETRIES = 5  # a clone-token failure we cannot classify: tries before the build fails


class Action(enum.Enum):
    RETURN_EXISTING = "return-existing"  # this request already has an active record for the image
    FOLLOW = "follow"  # another request's build of this image is active: share it
    READY = "ready"  # the image is already in the registry
    QUEUE = "queue"  # build it


@dataclasses.dataclass(frozen=True)
class SubmitPlan:
    action: Action
    existing: BuildRecord | None = None
    supersede: tuple[BuildRecord, ...] = ()


def plan_submit(
    req: BuildRequest,
    image: str,
    active_same_key: list[BuildRecord],
    active_same_image: list[BuildRecord],
    image_exists: bool | None,
    rebuild: bool,
) -> SubmitPlan:
    """Decide what a submit does, from what the store and the registry said.

    - Active records of the same key for another image are superseded (a newer
      sha for a PR or branch replaces the older one).
    - An active record of the same key and image is returned as is (dedupe).
    - Another key's active build of the image is followed, not repeated.
    - An image the registry has is ready at once, unless a rebuild was asked for.
    """
    supersede = tuple(r for r in active_same_key if r.image != image)
    mine = [r for r in active_same_key if r.image == image]
    if mine:
        return SubmitPlan(Action.RETURN_EXISTING, mine[0], supersede)
    if active_same_image:
        return SubmitPlan(Action.FOLLOW, active_same_image[0], supersede)
    if image_exists is True and not rebuild:
        return SubmitPlan(Action.READY, None, supersede)
    return SubmitPlan(Action.QUEUE, None, supersede)


def token_failure_verdict(kind: ErrorKind, failures: int) -> BuildState | None:
    """After the ``failures``-th failed clone-token request in a row: FAILED to stop, None to wait and retry.

    Transient (GitHub down, rate limited) waits as long as it takes; permanent
    (uninstalled, suspended, repository gone) stops at once; anything else
    stops after ``MAX_UNCLASSIFIED_RETRIES`` tries.
    """
    if kind is ErrorKind.PERMANENT:
        return BuildState.FAILED
    if kind is ErrorKind.UNKNOWN and failures >= MAX_UNCLASSIFIED_RETRIES:
        return BuildState.FAILED
    return None


def verify_outcome(outcome: BuildOutcome, image_exists: bool | None) -> tuple[BuildState, str]:
    """A build counts as built only once the image is confirmed where images live."""
    if outcome.phase == Phase.BUILT:
        if image_exists is True:
            return BuildState.BUILT, ""
        if image_exists is False:
            return BuildState.FAILED, "the build finished but its image is not in the registry (the push failed?)"
        return BuildState.FAILED, "the build finished but the registry could not be reached to confirm the image"
    if outcome.phase == Phase.CANCELLED:
        return BuildState.CANCELLED, outcome.reason or "cancelled"
    return BuildState.FAILED, outcome.reason or "the build failed"


@dataclasses.dataclass(frozen=True)
class ImageStatus:
    """One commit's image as the scheduler knows it: its newest record, and the registry's word
    when no record says built or building (None: not asked, or the registry did not answer)."""

    record: BuildRecord | None
    in_registry: bool | None = None

    @property
    def built(self) -> bool:
        return (self.record is not None and self.record.state is BuildState.BUILT) or self.in_registry is True

    @property
    def active(self) -> bool:
        return self.record is not None and self.record.state in (BuildState.QUEUED, BuildState.RUNNING)
