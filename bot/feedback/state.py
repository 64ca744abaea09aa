"""What the reporter remembers per sha and per PR: the target GitHub should show, and what it shows."""
from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import TYPE_CHECKING, Any

from bot.feedback.render import CheckRunView, CommentState
from bot.model import Phase

if TYPE_CHECKING:
    from bot.store.builds import BuildRecord


@dataclasses.dataclass
class ShaState:
    owner: str
    repo: str
    sha: str
    installation_id: int | None = None
    urlpath: str | None = None
    # the target: what GitHub should show. The check run reports one *job* (the build
    # that runs); several records (a branch, a PR) may share it and each has a phase.
    job_id: str | None = None
    job_created: float = 0.0
    members: dict[str, tuple["BuildRecord", Phase, int]] = dataclasses.field(default_factory=dict)
    seq: int = 0
    waiting_note: str = ""
    logs: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=60))
    override: CheckRunView | None = None  # skipped / invalid config, when no build exists
    # what GitHub shows
    resolved: bool = False
    run_id: int | None = None
    run_status: str | None = None
    run_conclusion: str | None = None
    run_job: str | None = None  # the job the run reports (its external_id)
    sent: dict[str, Any] | None = None
    last_edit: float = float("-inf")
    # scheduling
    flush_queued: bool = False
    timer: asyncio.TimerHandle | None = None
    failures: int = 0
    unknown_sha: bool = False  # GitHub answered 422 to creating a run on it: it does not know the commit

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def current(self) -> tuple["BuildRecord | None", Phase | None]:
        """The job's record and phase: its live records speak; if all were cancelled, the last one."""
        live = [m for m in self.members.values() if m[1] is not Phase.CANCELLED]
        pool = live or list(self.members.values())
        if not pool:
            return None, None
        rec, phase, _ = max(pool, key=lambda m: m[2])
        return rec, phase

    def job_finished(self) -> bool:
        return all(p.terminal_for_build for _, p, _ in self.members.values())


@dataclasses.dataclass
class PrState:
    owner: str
    repo: str
    number: int
    installation_id: int | None = None
    head_sha: str | None = None
    branch: str | None = None
    urlpath: str | None = None
    comment: bool = True
    config_known: bool = False
    closed: bool = False
    merged: bool = False
    state: CommentState | None = None
    reason: str | None = None
    may_create: bool = False  # only a build creates the comment; skips and closing only edit it
    resolved: bool = False
    comment_id: int | None = None
    body_hash: str | None = None
    flush_queued: bool = False
    failures: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"
