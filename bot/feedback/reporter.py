"""Build events -> the `Binder` check run on each sha and the one comment on each PR.

The bus calls our listener inline while a build runs, so the listener only
updates in-memory targets and wakes per-key workers (one per sha for check runs,
one per PR for the comment). Each worker makes GitHub show the newest target,
so a burst of events becomes one call: status changes go out at once, log-only
changes at most every ``min_interval`` seconds, and a comment is edited only
when its text changes. Ids live in ``services.gh_state``; with the store lost,
the check run is found by name on the sha and the comment by its marker.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cachetools
import gidgethub
from gidgethub.abc import GitHubAPI

from bot.feedback import render
from bot.feedback.render import CHECK_NAME, COMMENT_MARKER, CheckRunView, CheckStatus, CommentState
from bot.feedback.state import PrState, ShaState
from bot.feedback.workers import KeyedWorkers
from bot.model import Phase, ProgressEvent

if TYPE_CHECKING:
    from bot.prebuild.decisions import Candidate, Skip
    from bot.prebuild.repo_config import ConfigError
    from bot.services import Services
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)

MIN_EDIT_INTERVAL = 10.0
MAX_RETRIES = 5
_BUILDER_PHASES = (Phase.FETCHING, Phase.BUILDING, Phase.PUSHING)
_TRACKED_PHASES = (Phase.WAITING, *_BUILDER_PHASES, Phase.BUILT, Phase.FAILED, Phase.CANCELLED)


def _status_of(phase: Phase) -> CheckStatus:
    if phase is Phase.WAITING:
        return CheckStatus.QUEUED
    if phase in _BUILDER_PHASES:
        return CheckStatus.IN_PROGRESS
    return CheckStatus.COMPLETED


def _key(owner: str, repo: str) -> str:
    return f"{owner}/{repo}".lower()


def _hash(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class Reporter:
    def __init__(self, services: "Services", *, min_interval: float = MIN_EDIT_INTERVAL,
                 retry_base: float = 5.0) -> None:
        self.services = services
        self.min_interval = min_interval
        self.retry_base = retry_base
        self._shas: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)
        self._prs: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)
        self._prs_by_sha: cachetools.LRUCache = cachetools.LRUCache(maxsize=8192)
        self._workers = KeyedWorkers()
        self._timers: dict[asyncio.TimerHandle, Callable[[], None]] = {}

    # state ----------------------------------------------------------------
    def _sha(self, owner: str, repo: str, sha: str) -> ShaState:
        k = (_key(owner, repo), sha)
        st = self._shas.get(k)
        if st is None:
            st = self._shas[k] = ShaState(owner, repo, sha)
        return st

    def _pr(self, owner: str, repo: str, number: int, *, create: bool = True) -> PrState | None:
        k = (_key(owner, repo), number)
        pr = self._prs.get(k)
        if pr is None and create:
            pr = self._prs[k] = PrState(owner, repo, number)
        return pr

    def _details_url(self, owner: str, repo: str, sha: str) -> str:
        """The build's own progress page (it follows the build and starts no server)."""
        return render.build_url(self.services.settings.public_url, owner, repo, sha)

    async def _client(self, installation_id: int | None) -> GitHubAPI | None:
        app = self.services.github
        if app is None or installation_id is None:
            return None
        client = app.installation_client(installation_id)
        if inspect.isawaitable(client):
            client = await client
        return client

    # inputs from handlers -----------------------------------------------------
    def track_pr(self, owner: str, repo: str, number: int, sha: str, *, installation_id: int | None,
                 branch: str | None, urlpath: str | None, comment: bool) -> None:
        """A PR now points at ``sha`` (opened, synchronize, reopened, or a command)."""
        pr = self._pr(owner, repo, number)
        assert pr is not None
        if pr.head_sha != sha or pr.closed:  # a new head, or reopened: the next state is news
            pr.head_sha = sha
            pr.state = pr.reason = None
        pr.closed = False
        pr.installation_id = installation_id or pr.installation_id
        pr.branch, pr.urlpath, pr.comment, pr.config_known = branch, urlpath, comment, True
        shas = self._prs_by_sha.get((_key(owner, repo), sha)) or set()
        shas.add(number)
        self._prs_by_sha[(_key(owner, repo), sha)] = shas
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
            self._update_comments(st)

    async def skipped(self, gh: GitHubAPI, skip: "Skip") -> None:
        """A sha we do not build: a skipped check run (unless one already reports on it)."""
        st = self._sha(skip.owner, skip.repo, skip.sha)
        st.installation_id = skip.installation_id or st.installation_id
        st.override = render.check_skipped(skip.reason, None)
        if skip.pr_number is not None:
            self._set_pr_state(skip.owner, skip.repo, skip.pr_number, skip.sha, CommentState.SKIPPED, skip.reason,
                               may_create=False)
        await self._flush_now(st, gh)

    async def config_error(self, gh: GitHubAPI, c: "Candidate", error: "ConfigError") -> None:
        """An invalid .github/binder.yml: a failed check run naming the key and the problem."""
        st = self._sha(c.owner, c.repo, c.sha)
        st.installation_id = c.installation_id or st.installation_id
        st.override = render.check_config_error(key=error.key, problem=error.problem, line=error.line,
                                                column=error.column)
        if c.pr_number is not None:
            self.track_pr(c.owner, c.repo, c.pr_number, c.sha, installation_id=c.installation_id,
                          branch=c.branch, urlpath=None, comment=True)
            self._set_pr_state(c.owner, c.repo, c.pr_number, c.sha, CommentState.FAILED,
                               f"`.github/binder.yml` is invalid: {error.describe()}", may_create=False)
        await self._flush_now(st, gh)

    def pr_closed(self, owner: str, repo: str, number: int, *, merged: bool, installation_id: int | None,
                  head_sha: str | None) -> None:
        pr = self._pr(owner, repo, number)
        assert pr is not None
        pr.closed, pr.merged = True, merged
        pr.installation_id = installation_id or pr.installation_id
        if head_sha and pr.head_sha is None:
            pr.head_sha = head_sha
        self._queue_comment(pr)

    # the bus listener -----------------------------------------------------------
    async def on_event(self, record: "BuildRecord", event: ProgressEvent) -> None:
        self._on_event(record, event)

    def _on_event(self, record: "BuildRecord", event: ProgressEvent) -> None:
        if event.phase not in _TRACKED_PHASES:
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
        before_rec, before = st.current()
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
        urgent = before is None or _status_of(before) is not _status_of(phase) or (
            phase.terminal_for_build and phase is not before)
        self._schedule_check(st, urgent=urgent)
        self._update_comments(st)

    # check runs ------------------------------------------------------------------
    def _schedule_check(self, st: ShaState, *, urgent: bool) -> None:
        if st.flush_queued:
            return  # the queued flush will read the newest target
        loop = asyncio.get_running_loop()
        delay = 0.0 if urgent else st.last_edit + self.min_interval - loop.time()
        if delay <= 0:
            if st.timer is not None:
                st.timer.cancel()
                self._timers.pop(st.timer, None)
                st.timer = None
            st.flush_queued = True
            self._workers.submit(("check", _key(st.owner, st.repo), st.sha), lambda: self._flush_background(st))
        elif st.timer is None:
            def fire() -> None:
                st.timer = None
                self._schedule_check(st, urgent=True)

            st.timer = self._later(delay, fire)

    async def _flush_now(self, st: ShaState, gh: GitHubAPI) -> None:
        fut = self._workers.submit(("check", _key(st.owner, st.repo), st.sha), lambda: self._flush_check(st, gh),
                                   wait=True)
        assert fut is not None
        await fut

    async def _flush_background(self, st: ShaState) -> None:
        st.flush_queued = False
        try:
            await self._flush_check(st, None)
            st.failures = 0
        except Exception as e:
            st.failures += 1
            build = st.job_id or "-"
            if st.failures > MAX_RETRIES:
                log.error("build %s: giving up on check run for %s@%s: %s", build, st.full_name, st.sha[:12], e)
                st.failures = 0
                return
            delay = min(self.retry_base * 2 ** (st.failures - 1), 300.0)
            log.warning("build %s: check run update for %s@%s failed (%s); retry in %.0f s", build,
                        st.full_name, st.sha[:12], e, delay)
            self._later(delay, lambda: self._schedule_check(st, urgent=True))

    def _later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        """call_later that ``drain`` can fire early and ``close`` can cancel."""
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.pop(handle, None)
            fn()

        handle = asyncio.get_running_loop().call_later(max(0.0, delay), fire)
        self._timers[handle] = fire
        return handle

    async def _render_check(self, st: ShaState) -> tuple[CheckRunView | None, str | None]:
        rec, phase = st.current()
        if rec is None or phase is None:
            return st.override, None
        job = st.job_id
        details = self._details_url(st.owner, st.repo, st.sha)
        if phase is Phase.WAITING:
            note = st.waiting_note if st.waiting_note and "slot" not in st.waiting_note else ""
            return render.check_queued(details, render.trusted(note, 300)), job
        if phase in _BUILDER_PHASES:
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

    async def _flush_check(self, st: ShaState, gh: GitHubAPI | None) -> None:
        view, job = await self._render_check(st)
        if view is None:
            return
        fields = view.as_fields()
        if st.resolved and fields == st.sent and job == st.run_job:
            return
        client = gh or await self._client(st.installation_id)
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
            data = await client.post("/repos/{owner}/{repo}/check-runs", {"owner": st.owner, "repo": st.repo},
                                     data={"name": CHECK_NAME, "head_sha": st.sha, **body})
            st.run_id = int(data["id"])
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
                data = await client.post("/repos/{owner}/{repo}/check-runs", {"owner": st.owner, "repo": st.repo},
                                         data={"name": CHECK_NAME, "head_sha": st.sha, **body})
                st.run_id = int(data["id"])
        st.run_status = view.status.value
        st.run_conclusion = view.conclusion.value if view.conclusion else None
        st.run_job = job
        st.sent = fields
        st.last_edit = asyncio.get_running_loop().time()
        status_text = st.run_status if not st.run_conclusion else f"{st.run_status}:{st.run_conclusion}"
        await self.services.gh_state.set_check_run(st.full_name, st.sha, st.run_id, status_text)

    async def _resolve_run(self, client: GitHubAPI, st: ShaState) -> None:
        """Find the run that already reports on this sha: the store, else GitHub by name."""
        if st.resolved:
            return
        run: dict[str, Any] | None = None
        stored = await self.services.gh_state.check_run(st.full_name, st.sha)
        if stored is not None:
            try:
                run = await client.getitem("/repos/{owner}/{repo}/check-runs/{id}",
                                           {"owner": st.owner, "repo": st.repo, "id": stored})
            except gidgethub.BadRequest as e:
                if e.status_code != 404:
                    raise
        if run is None:
            listing = await client.getitem(
                "/repos/{owner}/{repo}/commits/{sha}/check-runs{?check_name,filter,per_page}",
                {"owner": st.owner, "repo": st.repo, "sha": st.sha, "check_name": CHECK_NAME,
                 "filter": "latest", "per_page": 100})
            app_id = self.services.settings.github_app_id
            runs = [r for r in (listing or {}).get("check_runs", [])
                    if r.get("name") == CHECK_NAME
                    and (not app_id or str((r.get("app") or {}).get("id")) == str(app_id))]
            run = max(runs, key=lambda r: int(r["id"])) if runs else None
        if run is not None:
            st.run_id = int(run["id"])
            st.run_status = run.get("status")
            st.run_conclusion = run.get("conclusion")
            st.run_job = run.get("external_id") or None
        st.resolved = True

    # the PR comment --------------------------------------------------------------
    def _set_pr_state(self, owner: str, repo: str, number: int, sha: str, state: CommentState,
                      reason: str | None, *, may_create: bool) -> None:
        pr = self._pr(owner, repo, number)
        assert pr is not None
        if pr.head_sha is None:
            pr.head_sha = sha
        if pr.head_sha != sha or pr.closed:
            return
        if (pr.state, pr.reason) == (state, reason):
            return
        pr.state, pr.reason = state, reason
        pr.may_create = pr.may_create or may_create
        self._queue_comment(pr)

    def _update_comments(self, st: ShaState) -> None:
        """Tell every PR whose head is this sha what its build is doing now."""
        rec, phase = st.current()
        if rec is None or phase is None or phase is Phase.CANCELLED:
            return  # superseded (the new head speaks) or closed (pr_closed speaks)
        if phase is Phase.BUILT:
            state, reason = CommentState.READY, None
        elif phase is Phase.FAILED:
            state, reason = CommentState.FAILED, rec.reason
        else:
            state, reason = CommentState.BUILDING, None
        numbers = set(self._prs_by_sha.get((_key(st.owner, st.repo), st.sha)) or ())
        from_requests = {r.request.pr_number: r for r, _, _ in st.members.values() if r.request.pr_number is not None}
        for n in numbers | set(from_requests):
            if self._pr(st.owner, st.repo, n, create=False) is None:
                if n not in from_requests:
                    continue
                # after a restart: the request tells us enough to keep its comment current
                pr = self._pr(st.owner, st.repo, n)
                assert pr is not None
                req = from_requests[n].request
                pr.head_sha, pr.branch, pr.installation_id = st.sha, req.branch, req.installation_id
            self._set_pr_state(st.owner, st.repo, n, st.sha, state, reason, may_create=True)

    def _queue_comment(self, pr: PrState) -> None:
        if pr.flush_queued:
            return
        pr.flush_queued = True
        self._workers.submit(("comment", _key(pr.owner, pr.repo), pr.number), lambda: self._flush_comment_bg(pr))

    async def _flush_comment_bg(self, pr: PrState) -> None:
        pr.flush_queued = False
        try:
            await self._flush_comment(pr)
            pr.failures = 0
        except Exception as e:
            pr.failures += 1
            if pr.failures > MAX_RETRIES:
                log.error("PR %s#%s: giving up on the comment: %s", pr.full_name, pr.number, e)
                pr.failures = 0
                return
            delay = min(self.retry_base * 2 ** (pr.failures - 1), 300.0)
            log.warning("PR %s#%s: comment update failed (%s); retry in %.0f s", pr.full_name, pr.number, e, delay)
            self._later(delay, lambda: self._queue_comment(pr))

    async def _flush_comment(self, pr: PrState) -> None:
        if pr.head_sha is None or (pr.state is None and not pr.closed):
            return
        client = await self._client(pr.installation_id)
        if client is None:
            log.info("PR %s#%s: no GitHub client (installation %s); comment not updated", pr.full_name, pr.number,
                     pr.installation_id)
            return
        if not pr.config_known:
            await self._load_pr_config(client, pr)
        if not pr.comment:
            return
        view = render.CommentView(
            public_url=self.services.settings.public_url, owner=pr.owner, repo=pr.repo, sha=pr.head_sha,
            state=CommentState.CLOSED if pr.closed else pr.state or CommentState.BUILDING,
            branch=pr.branch, urlpath=pr.urlpath, reason=pr.reason, merged=pr.merged)
        body = render.comment_body(view)
        digest = _hash(body)
        await self._resolve_comment(client, pr)
        if pr.comment_id is not None and digest == pr.body_hash:
            return
        if pr.comment_id is None:
            if not pr.may_create or pr.closed:
                return
            data = await client.post("/repos/{owner}/{repo}/issues/{number}/comments",
                                     {"owner": pr.owner, "repo": pr.repo, "number": pr.number}, data={"body": body})
            pr.comment_id = int(data["id"])
            log.info("PR %s#%s: created comment %s (%s)", pr.full_name, pr.number, pr.comment_id, view.state.value)
        else:
            try:
                await client.patch("/repos/{owner}/{repo}/issues/comments/{id}",
                                   {"owner": pr.owner, "repo": pr.repo, "id": pr.comment_id}, data={"body": body})
            except gidgethub.BadRequest as e:
                if e.status_code != 404:
                    raise
                # deleted by someone: look again (it may have been re-posted), else start over
                await self.services.gh_state.forget_comment(pr.full_name, pr.number)
                pr.resolved, pr.comment_id, pr.body_hash = False, None, None
                self._queue_comment(pr)
                return
            log.info("PR %s#%s: edited comment %s (%s)", pr.full_name, pr.number, pr.comment_id, view.state.value)
        pr.body_hash = digest
        await self.services.gh_state.set_comment(pr.full_name, pr.number, pr.comment_id, digest)

    async def _resolve_comment(self, client: GitHubAPI, pr: PrState) -> None:
        if pr.resolved:
            return
        stored = await self.services.gh_state.comment_id(pr.full_name, pr.number)
        if stored is not None:
            pr.comment_id, pr.body_hash = stored
        else:
            bot_login = getattr(self.services.github, "bot_login", None)
            app_id = self.services.settings.github_app_id
            async for c in client.getiter("/repos/{owner}/{repo}/issues/{number}/comments{?per_page}",
                                          {"owner": pr.owner, "repo": pr.repo, "number": pr.number,
                                           "per_page": 100}):
                user = c.get("user") or {}
                body = c.get("body") or ""
                if not body.lstrip().startswith(COMMENT_MARKER):
                    continue
                via = c.get("performed_via_github_app") or {}
                if app_id and via.get("id") is not None and str(via["id"]) != str(app_id):
                    continue  # another App's comment that happens to carry our marker
                if bot_login and user.get("login") != bot_login:
                    continue
                if not bot_login and user.get("type") != "Bot":
                    continue
                pr.comment_id, pr.body_hash = int(c["id"]), _hash(body)
                await self.services.gh_state.set_comment(pr.full_name, pr.number, pr.comment_id, pr.body_hash)
                break
        pr.resolved = True

    async def _load_pr_config(self, client: GitHubAPI, pr: PrState) -> None:
        """After a restart we may not know `comment`/`urlpath`: read them at the head sha."""
        from bot.prebuild.handlers import load_repo_config
        from bot.prebuild.repo_config import ConfigError

        try:
            cfg = await load_repo_config(client, self.services, pr.owner, pr.repo, pr.head_sha or "")
        except ConfigError:
            pr.config_known = True
            return
        pr.comment, pr.urlpath, pr.config_known = cfg.comment, cfg.urlpath, True

    # lifecycle ----------------------------------------------------------------------
    async def drain(self) -> None:
        """Send everything pending now, coalescing timers included (tests, shutdown)."""
        for _ in range(100):
            for handle, fire in list(self._timers.items()):
                handle.cancel()
                fire()  # now instead of later
            await self._workers.join()
            if not self._timers and not self._workers.busy():
                return

    async def shutdown(self, grace: float = 5.0) -> None:
        """On stop: send what is pending (final states first of all) for ``grace`` seconds, then stop."""
        try:
            await asyncio.wait_for(self.drain(), grace)
        except (asyncio.TimeoutError, Exception):  # GitHub down at shutdown must not block it
            log.warning("feedback: some check run or comment updates were not sent before shutdown")
        await self.close()

    async def close(self) -> None:
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        await self._workers.close()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def attach(services: "Services", **kwargs: Any) -> Reporter:
    """Listen to every build's events; the reporter is ``services.extras["feedback"]``."""
    reporter = Reporter(services, **kwargs)
    services.bus.add_listener(reporter.on_event)
    services.extras["feedback"] = reporter
    return reporter
