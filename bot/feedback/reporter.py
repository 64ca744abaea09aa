"""Build events -> the `Binder` check run on each sha and the one comment on each PR.

The bus calls our listener inline while a build runs, so the listener only
updates in-memory targets and wakes per-key workers (one per sha for check runs,
one per PR for the comment). Each worker makes GitHub show the newest target,
so a burst of events becomes one call: status changes go out at once, log-only
changes at most every ``min_interval`` seconds, and a comment is edited only
when its text changes. Ids live in ``services.gh_state``; with the store lost,
the check run is found by name on the sha and the comment by its marker.

This module takes the inputs (handlers, the bus) and owns the per-sha targets;
``check_runs`` and ``pr_comment`` send them, ``pacing`` throttles and retries.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import cachetools
from gidgethub.abc import GitHubAPI

from bot.feedback import render
from bot.feedback.check_runs import TRACKED_PHASES, CheckRuns, is_urgent
from bot.feedback.github_io import repo_key
from bot.feedback.pacing import MIN_EDIT_INTERVAL, Pacer
from bot.feedback.pr_comment import PrComments
from bot.feedback.render import CommentState
from bot.feedback.state import ShaState
from bot.model import Phase, ProgressEvent

if TYPE_CHECKING:
    from bot.core import Core
    from bot.prebuild.decisions import Candidate, Skip
    from bot.prebuild.repo_config import ConfigError
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)


class Reporter:
    """The feedback front door: handlers and the build bus tell it what happened, it tells GitHub."""

    def __init__(self, services: "Core", *, min_interval: float = MIN_EDIT_INTERVAL,
                 retry_base: float = 5.0) -> None:
        self.services = services
        self.pacer = Pacer(min_interval=min_interval, retry_base=retry_base)
        self.checks = CheckRuns(services, self.pacer)
        self.comments = PrComments(services, self.pacer)
        self._shas: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)

    @property
    def min_interval(self) -> float:
        """Seconds between log-only check run edits (tests shorten it)."""
        return self.pacer.min_interval

    @min_interval.setter
    def min_interval(self, value: float) -> None:
        self.pacer.min_interval = value

    @property
    def retry_base(self) -> float:
        """First retry delay after a failed send; it doubles per failure (tests shorten it)."""
        return self.pacer.retry_base

    @retry_base.setter
    def retry_base(self, value: float) -> None:
        self.pacer.retry_base = value

    def _sha(self, owner: str, repo: str, sha: str) -> ShaState:
        k = (repo_key(owner, repo), sha)
        st = self._shas.get(k)
        if st is None:
            st = self._shas[k] = ShaState(owner, repo, sha)
        return st

    # inputs from handlers -----------------------------------------------------
    async def track_pr(self, owner: str, repo: str, number: int, sha: str, *, installation_id: int | None,
                       branch: str | None, urlpath: str | None, comment: bool) -> None:
        """A PR now points at ``sha`` (opened, synchronize, reopened, or a command); the store remembers it."""
        await self.services.gh_state.follow_pr(f"{owner}/{repo}", number, sha, installation_id, branch,
                                                 urlpath, comment)
        self.comments.track(owner, repo, number, sha, installation_id=installation_id, branch=branch,
                            urlpath=urlpath, comment=comment)
        st = self._sha(owner, repo, sha)
        st.urlpath = urlpath
        st.installation_id = installation_id or st.installation_id

    def submitted(self, record: "BuildRecord", *, urlpath: str | None = None) -> None:
        """The scheduler answered: make sure feedback reflects ``record`` even if it published nothing new."""
        st = self._sha(record.owner, record.repo, record.sha)
        if urlpath is not None:
            st.urlpath = urlpath
        if record.id not in st.members:
            self._on_event(record, ProgressEvent(phase=record.phase, build_id=record.job_id))
        else:
            self.comments.follow_build(st)

    async def skipped(self, gh: GitHubAPI, skip: "Skip") -> None:
        """A sha we do not build: a skipped check run (unless one already reports on it)."""
        st = self._sha(skip.owner, skip.repo, skip.sha)
        st.installation_id = skip.installation_id or st.installation_id
        st.override = render.check_skipped(skip.reason, None)
        if skip.pr_number is not None:
            self.comments.set_state(skip.owner, skip.repo, skip.pr_number, skip.sha, CommentState.SKIPPED,
                                    skip.reason, may_create=False)
        await self.checks.flush_now(st, gh)

    async def config_error(self, gh: GitHubAPI, c: "Candidate", error: "ConfigError") -> None:
        """An invalid .github/binder.yml: a failed check run naming the key and the problem."""
        st = self._sha(c.owner, c.repo, c.sha)
        st.installation_id = c.installation_id or st.installation_id
        st.override = render.check_config_error(key=error.key, problem=error.problem, line=error.line,
                                                column=error.column)
        if c.pr_number is not None:
            await self.track_pr(c.owner, c.repo, c.pr_number, c.sha, installation_id=c.installation_id,
                                branch=c.branch, urlpath=None, comment=True)
            self.comments.set_state(c.owner, c.repo, c.pr_number, c.sha, CommentState.FAILED,
                                    f"`.github/binder.yml` is invalid: {error.describe()}", may_create=False)
        await self.checks.flush_now(st, gh)

    async def pr_closed(self, owner: str, repo: str, number: int, *, merged: bool, installation_id: int | None,
                        head_sha: str | None) -> None:
        """A closed or merged PR: its comment says so (and the store remembers it)."""
        await self.services.gh_state.followed_pr_closed(f"{owner}/{repo}", number, merged=merged,
                                                   installation_id=installation_id, head_sha=head_sha)
        self.comments.closed(owner, repo, number, merged=merged, installation_id=installation_id,
                             head_sha=head_sha)

    # the bus listener -----------------------------------------------------------
    async def on_event(self, record: "BuildRecord", event: ProgressEvent) -> None:
        self._on_event(record, event)

    def _on_event(self, record: "BuildRecord", event: ProgressEvent) -> None:
        if event.phase not in TRACKED_PHASES:
            return
        st = self._sha(record.owner, record.repo, record.sha)
        st.installation_id = record.request.installation_id or st.installation_id
        if st.job_id != record.job_id:
            if st.job_id is not None:
                if event.phase is Phase.CANCELLED:
                    return  # a late cancellation of a job this sha has moved on from
                if not st.job_finished() and record.created_at < st.job_created:
                    return  # an older job's late event
            st.job_id, st.job_created = record.job_id, record.created_at
            st.members.clear()
            st.logs.clear()
            st.waiting_note = ""
        _, before = st.current()
        prev = st.members.get(record.id)
        if prev is not None and prev[1].terminal_for_build and not event.phase.terminal_for_build:
            return  # a message-only event after the end must not reopen the check run
        st.seq += 1
        st.members[record.id] = (record, event.phase, st.seq)
        if event.message and not event.phase.terminal_for_build:
            if event.phase is Phase.WAITING:
                st.waiting_note = event.message
            else:
                st.logs.extend(event.message.splitlines() or [""])
        _, phase = st.current()
        if phase is None:
            return
        self.checks.schedule(st, urgent=is_urgent(before, phase))
        self.comments.follow_build(st)

    def restore_sha(self, owner: str, repo: str, sha: str, records: "list[BuildRecord]") -> ShaState | None:
        """After a restart: the sha's target from its newest job's stored records (None: followed live already)."""
        st = self._sha(owner, repo, sha)
        if st.job_id is not None or not records:
            return None
        st.job_id, st.job_created = records[0].job_id, records[0].created_at
        for r in records:
            st.installation_id = r.request.installation_id or st.installation_id
            st.seq += 1
            st.members[r.id] = (r, r.phase, st.seq)
        return st

    # lifecycle ----------------------------------------------------------------------
    async def drain(self) -> None:
        """Send everything pending now, coalescing timers included (tests, shutdown)."""
        await self.pacer.drain()

    async def shutdown(self, grace: float = 5.0) -> None:
        """On stop: send what is pending (final states first of all) for ``grace`` seconds, then stop."""
        try:
            await asyncio.wait_for(self.drain(), grace)
        except (asyncio.TimeoutError, Exception):  # GitHub down at shutdown must not block it
            log.warning("feedback: some check run or comment updates were not sent before shutdown")
        await self.close()

    async def close(self) -> None:
        await self.pacer.close()


def attach(services: "Core", **kwargs: Any) -> Reporter:
    """Listen to every build's events; the caller keeps the reporter (``Services.feedback``)."""
    reporter = Reporter(services, **kwargs)
    services.bus.add_listener(reporter.on_event)
    return reporter
