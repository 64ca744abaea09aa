"""The `Binder` check run on each sha: what it should say, and making GitHub say it.

One worker per sha sends the newest target, so a burst of build events becomes one
call. The run's id lives in ``services.gh_state``: the store knows every run it made,
so a sha it has no run for gets one created at once, without first listing the
commit's check runs (that listing was a fifth of all requests in a soak of new
commits). A create is noted in the store before it is sent: after a crash between
GitHub's answer and the record, that sha's runs are listed once and ours adopted, so
no run is made twice and left queued. The cost, only if DATA_DIR is lost: a commit
reported again gets a second ``Binder`` run (GitHub shows the newest).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.feedback import render
from bot.feedback.github_io import installation_client, repo_key
from bot.feedback.pacing import Pacer
from bot.feedback.render import CHECK_NAME, CheckRunView, CheckStatus
from bot.feedback.state import ShaState
from bot.model import Phase

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger(__name__)

BUILDER_PHASES = (Phase.FETCHING, Phase.BUILDING, Phase.PUSHING)
TRACKED_PHASES = (Phase.WAITING, *BUILDER_PHASES, Phase.BUILT, Phase.FAILED, Phase.CANCELLED)


def status_of(phase: Phase) -> CheckStatus:
    """The check run status a build phase shows as."""
    if phase is Phase.WAITING:
        return CheckStatus.QUEUED
    if phase in BUILDER_PHASES:
        return CheckStatus.IN_PROGRESS
    return CheckStatus.COMPLETED


def is_urgent(before: Phase | None, phase: Phase) -> bool:
    """A change of status or outcome goes out at once; a log-only change may wait for the throttle."""
    return before is None or status_of(before) is not status_of(phase) or (
        phase.terminal_for_build and phase is not before)


def sent_status(status: str, conclusion: str | None) -> str:
    """How the store remembers what a run was last sent: "in_progress", "completed:success", ..."""
    return f"{status}:{conclusion}" if conclusion else status


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class CheckRuns:
    """Sends each sha's check run target to GitHub, throttled and retried through the shared pacer."""

    def __init__(self, services: "Core", pacer: Pacer) -> None:
        self.services = services
        self.pacer = pacer

    def _details_url(self, owner: str, repo: str, sha: str) -> str:
        """The build's own progress page (it follows the build and starts no server)."""
        return render.build_url(self.services.settings.public_url, owner, repo, sha)

    def schedule(self, st: ShaState, *, urgent: bool) -> None:
        """Send ``st`` now if urgent or the throttle allows, else once the throttle does."""
        if st.flush_queued:
            return  # the queued flush will read the newest target
        delay = self.pacer.edit_delay(st.last_edit, urgent=urgent)
        if delay <= 0:
            if st.timer is not None:
                self.pacer.cancel(st.timer)
                st.timer = None
            st.flush_queued = True
            self.pacer.submit(("check", repo_key(st.owner, st.repo), st.sha), lambda: self._flush_background(st))
        elif st.timer is None:
            def fire() -> None:
                st.timer = None
                self.schedule(st, urgent=True)

            st.timer = self.pacer.later(delay, fire)

    async def flush_now(self, st: ShaState, gh: GitHubAPI) -> None:
        """Send ``st`` in turn on its sha's worker and wait for it (errors reach the caller)."""
        fut = self.pacer.submit(("check", repo_key(st.owner, st.repo), st.sha), lambda: self._flush(st, gh),
                                wait=True)
        assert fut is not None
        await fut

    async def _flush_background(self, st: ShaState) -> None:
        st.flush_queued = False
        try:
            await self._flush(st, None)
            st.failures = 0
        except Exception as e:
            if isinstance(e, gidgethub.BadRequest) and e.status_code == 422:
                # GitHub refused the content (or, on create, does not know the sha): the same
                # request would be refused again, so it is not retried
                st.failures = 0
                log.warning("build %s: GitHub refused the check run for %s@%s (422: %s); not retried",
                            st.job_id or "-", st.full_name, st.sha[:12], e)
                return
            st.failures += 1
            build = st.job_id or "-"
            delay = self.pacer.after_failure(e, st.failures)
            if delay is None:
                log.error("build %s: giving up on check run for %s@%s: %s", build, st.full_name, st.sha[:12], e)
                st.failures = 0
                return
            log.warning("build %s: check run update for %s@%s failed (%s); retry in %.0f s", build,
                        st.full_name, st.sha[:12], e, delay)
            self.pacer.later(delay, lambda: self.schedule(st, urgent=True))

    async def render(self, st: ShaState) -> tuple[CheckRunView | None, str | None]:
        """The view the run should show and the job it reports (None: a skip or config error)."""
        rec, phase = st.current()
        if rec is None or phase is None:
            return st.override, None
        job = st.job_id
        details = self._details_url(st.owner, st.repo, st.sha)
        if phase is Phase.WAITING:
            note = st.waiting_note if st.waiting_note and "slot" not in st.waiting_note else ""
            return render.check_queued(details, render.trusted(note, 300)), job
        if phase in BUILDER_PHASES:
            return render.check_in_progress(phase, list(st.logs), details, rec.image), job
        if phase is Phase.BUILT:
            launch = render.launch_url(self.services.settings.public_url, st.owner, st.repo, st.sha, st.urlpath)
            return render.check_success(image=rec.image, launch=launch, duration=rec.duration,
                                        from_cache=rec.from_cache, details_url=details), job
        if phase is Phase.FAILED:
            return render.check_failure(reason=rec.reason, log_tail=list(rec.log_tail) or list(st.logs),
                                        details_url=details), job
        # every record of the job was cancelled
        new = await self.services.builds.get(rec.superseded_by) if rec.superseded_by else None
        if new is not None and new.sha == rec.sha:
            return None, None  # a new attempt at this same sha takes the check run over
        return render.check_cancelled(
            new_sha=new.sha if new else None,
            new_commit_url=render.commit_url(new.request.clone_url, new.sha) if new else None,
            reason=rec.reason, details_url=details), job

    async def _flush(self, st: ShaState, gh: GitHubAPI | None) -> None:
        if st.unknown_sha:
            return  # a check run is only written for a sha GitHub knows
        view, job = await self.render(st)
        if view is None:
            return
        fields = view.as_fields()
        if st.resolved and fields == st.sent and job == st.run_job:
            return
        client = gh or await installation_client(self.services, st.installation_id)
        if client is None:
            log.info("build %s: no GitHub client for %s (installation %s); check run not updated",
                     job, st.full_name, st.installation_id)
            return
        await self._resolve_run(client, st)
        create = st.run_id is None
        if not create and job is None:
            return  # a skip or config error never replaces a run that already reports on this sha
        if not create and st.run_status == CheckStatus.COMPLETED.value:
            if view.conclusion is not None and view.conclusion.value == st.run_conclusion:
                st.run_job, st.sent = job, fields  # it already says so (e.g. ready, found in the registry)
                if st.run_id is not None:
                    await self.services.gh_state.set_check_run(
                        st.full_name, st.sha, st.run_id, sent_status(st.run_status, st.run_conclusion))
                return
            if st.run_job != job:
                create = True  # a finished run cannot be reopened: a new attempt gets a new run
        if not create and fields == st.sent and job == st.run_job:
            return
        body = dict(fields)
        if job is not None:
            body["external_id"] = job
        if view.status is CheckStatus.COMPLETED:
            body["completed_at"] = _now_iso()
        if create:
            try:
                st.run_id = await self._create(client, st, body)
            except gidgethub.BadRequest as e:
                st.unknown_sha = e.status_code == 422  # "No commit found for SHA": never written again
                raise
            log.info("build %s: created check run %s on %s@%s (%s)", job, st.run_id, st.full_name,
                     st.sha[:12], view.status.value)
        else:
            try:
                await client.patch("/repos/{owner}/{repo}/check-runs/{id}",
                                   {"owner": st.owner, "repo": st.repo, "id": st.run_id}, data=body)
            except gidgethub.BadRequest as e:
                if e.status_code != 404:
                    raise
                st.run_id, st.resolved = None, True  # gone: make a new one
                st.run_id = await self._create(client, st, body)
        st.run_status = view.status.value
        st.run_conclusion = view.conclusion.value if view.conclusion else None
        st.run_job = job
        st.sent = fields
        st.last_edit = asyncio.get_running_loop().time()
        await self.services.gh_state.set_check_run(st.full_name, st.sha, st.run_id,
                                                   sent_status(st.run_status, st.run_conclusion))

    async def _create(self, client: GitHubAPI, st: ShaState, body: dict[str, Any]) -> int:
        """POST a new run, noted in the store first: a crash before its id is recorded cannot orphan it."""
        await self.services.gh_state.begin_check_run_create(st.full_name, st.sha)
        data = await client.post("/repos/{owner}/{repo}/check-runs", {"owner": st.owner, "repo": st.repo},
                                 data={"name": CHECK_NAME, "head_sha": st.sha, **body})
        return int(data["id"])

    async def _resolve_run(self, client: GitHubAPI, st: ShaState) -> None:
        """Find the run that already reports on this sha: the one the store recorded (None: we made none)."""
        if st.resolved:
            return
        run: dict[str, Any] | None = None
        stored, create_pending = await self.services.gh_state.check_run_state(st.full_name, st.sha)
        if stored is not None:
            try:
                run = await client.getitem("/repos/{owner}/{repo}/check-runs/{id}",
                                           {"owner": st.owner, "repo": st.repo, "id": stored})
            except gidgethub.BadRequest as e:
                if e.status_code != 404:
                    raise
        elif create_pending:
            run = await self._adopt(client, st)
        if run is not None:
            st.run_id = int(run["id"])
            st.run_status = run.get("status")
            st.run_conclusion = run.get("conclusion")
            st.run_job = run.get("external_id") or None
        st.resolved = True

    async def _adopt(self, client: GitHubAPI, st: ShaState) -> dict[str, Any] | None:
        """A create was sent but its answer never recorded (a crash): the newest run of ours on the sha.

        Only this case lists the commit's runs; any older run of ours left open there is
        closed, so nothing on the commit keeps saying "queued" for a build long gone.
        """
        data = await client.getitem(
            "/repos/{owner}/{repo}/commits/{sha}/check-runs{?check_name,filter,app_id,per_page}",
            {"owner": st.owner, "repo": st.repo, "sha": st.sha, "check_name": CHECK_NAME, "filter": "all",
             "app_id": self.services.settings.github_app_id, "per_page": 100})
        ours = sorted((r for r in data.get("check_runs") or [] if _is_ours(r, self.services.settings.github_app_id)
                       and r.get("head_sha") == st.sha), key=lambda r: int(r["id"]))
        if not ours:
            log.info("build %s: no check run of ours on %s@%s after an unrecorded create", st.job_id or "-",
                     st.full_name, st.sha[:12])
            return None
        newest = ours[-1]
        log.info("build %s: adopted check run %s on %s@%s (created before a restart, never recorded)",
                 st.job_id or "-", newest["id"], st.full_name, st.sha[:12])
        for stale in ours[:-1]:
            if stale.get("status") != CheckStatus.COMPLETED.value:
                await client.patch("/repos/{owner}/{repo}/check-runs/{id}",
                                   {"owner": st.owner, "repo": st.repo, "id": stale["id"]},
                                   data=render.check_replaced(int(newest["id"])).as_fields()
                                   | {"completed_at": _now_iso()})
        return newest


def _is_ours(run: dict[str, Any], app_id: str | None) -> bool:
    """A run another app named "Binder" is not ours to adopt (without an app id: trust the query)."""
    app = run.get("app") or {}
    return run.get("name") == CHECK_NAME and (not app_id or str(app.get("id")) == str(app_id))
