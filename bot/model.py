"""Plain data shared by both flows: phases, build requests, progress events."""
from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any


class Phase(str, enum.Enum):
    """BinderHub's phase names, as sent on the progress stream."""

    WAITING = "waiting"
    FETCHING = "fetching"
    BUILDING = "building"
    PUSHING = "pushing"
    BUILT = "built"
    LAUNCHING = "launching"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal_for_build(self) -> bool:
        return self in (Phase.BUILT, Phase.FAILED, Phase.CANCELLED)


class BuildState(str, enum.Enum):
    """Where a build record stands in the store."""

    QUEUED = "queued"
    RUNNING = "running"
    BUILT = "built"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self in (BuildState.BUILT, BuildState.FAILED, BuildState.CANCELLED, BuildState.SKIPPED)


class Trigger(str, enum.Enum):
    PUSH = "push"
    PULL_REQUEST = "pull_request"
    LAUNCH = "launch"
    RERUN = "rerun"
    COMMAND = "command"
    CLI = "cli"


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """What a handler decided to build: one repository at one sha."""

    owner: str
    repo: str
    sha: str
    clone_url: str
    installation_id: int | None = None
    branch: str | None = None
    pr_number: int | None = None
    private: bool = False
    default_branch: str | None = None
    subdir: str | None = None
    trigger: Trigger = Trigger.PUSH
    delivery_id: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def supersede_key(self) -> str:
        """A newer sha with the same key replaces the older build."""
        if self.pr_number is not None:
            return f"{self.full_name.lower()}#pr/{self.pr_number}"
        if self.branch is not None:
            return f"{self.full_name.lower()}#branch/{self.branch}"
        return f"{self.full_name.lower()}#sha/{self.sha}"


@dataclasses.dataclass(frozen=True)
class BuildJob:
    """What a builder runs: a request plus the names decided for it."""

    build_id: str
    request: BuildRequest
    image: str
    cache_from: str | None = None
    clone_token: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """One step of a build or launch; the SSE payload is ``as_message()``."""

    phase: Phase
    message: str = ""
    build_id: str | None = None
    image: str | None = None
    url: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    progress: float | None = None
    at: float = dataclasses.field(default_factory=time.time)

    def as_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"phase": self.phase.value, "message": self.message}
        if self.image:
            msg["imageName"] = self.image
        if self.url:
            msg["url"] = self.url
        if self.token:
            msg["token"] = self.token
        if self.progress is not None:
            msg["progress"] = self.progress
        return msg


@dataclasses.dataclass(frozen=True)
class BuildOutcome:
    """How a builder run ended."""

    phase: Phase  # BUILT, FAILED or CANCELLED
    reason: str = ""
    log_tail: tuple[str, ...] = ()
