"""The one comment on each PR: which state it should show, and keeping it current.

One worker per PR edits the comment only when its text changes. Its id lives in
``services.gh_state``; with the store lost, the comment is found by its marker.
"""
from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import cachetools
import gidgethub
from gidgethub.abc import GitHubAPI

from bot.feedback import render
from bot.feedback.github_io import installation_client, repo_key
from bot.feedback.pacing import Pacer
from bot.feedback.render import COMMENT_MARKER, CommentState
from bot.feedback.state import PrState, ShaState
from bot.model import Phase
from bot.prebuild.reading import load_repo_config
from bot.prebuild.repo_config import ConfigError

if TYPE_CHECKING:
    from bot.core import Core
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)


def body_hash(body: str) -> str:
    """What we remember of a comment's text, to skip edits that would change nothing."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def comment_state_for(rec: "BuildRecord | None", phase: Phase | None) -> tuple[CommentState, str | None] | None:
    """The comment state (and reason) a sha's build shows, or None when the build has nothing to say."""
    if rec is None or phase is None or phase is Phase.CANCELLED:
        return None  # superseded (the new head speaks) or closed (pr_closed speaks)
    if phase is Phase.BUILT:
        return CommentState.READY, None
    if phase is Phase.FAILED:
        return CommentState.FAILED, rec.reason
    return CommentState.BUILDING, None


class PrComments:
    """What each PR's comment should say, and the per-PR workers that make GitHub show it."""

    def __init__(self, services: "Core", pacer: Pacer) -> None:
        self.services = services
        self.pacer = pacer
        self._prs: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)
        self._prs_by_sha: cachetools.LRUCache = cachetools.LRUCache(maxsize=8192)

    def get(self, owner: str, repo: str, number: int, *, create: bool = True) -> PrState | None:
        k = (repo_key(owner, repo), number)
        pr = self._prs.get(k)
        if pr is None and create:
            pr = self._prs[k] = PrState(owner, repo, number)
        return pr

    def track(self, owner: str, repo: str, number: int, sha: str, *, installation_id: int | None,
              branch: str | None, urlpath: str | None, comment: bool) -> None:
        """A PR now points at ``sha``: its comment follows that sha's build from now on."""
        pr = self.get(owner, repo, number)
        assert pr is not None
        if pr.head_sha != sha or pr.closed:  # a new head, or reopened: the next state is news
            pr.head_sha = sha
            pr.state = pr.reason = None
        pr.closed = False
        pr.installation_id = installation_id or pr.installation_id
        pr.branch, pr.urlpath, pr.comment, pr.config_known = branch, urlpath, comment, True
        shas = self._prs_by_sha.get((repo_key(owner, repo), sha)) or set()
        shas.add(number)
        self._prs_by_sha[(repo_key(owner, repo), sha)] = shas

    def restore(self, owner: str, repo: str, number: int, *, head_sha: str | None, installation_id: int | None,
                branch: str | None, urlpath: str | None, comment: bool, closed: bool, merged: bool) -> bool:
        """After a restart: follow the PR as the store last knew it (True: its comment is queued for a check).

        An open PR's comment then follows its head's build (``follow_build``); a closed
        one says so. Either way it is edited only if its text differs from what was sent.
        """
        pr = self.get(owner, repo, number)
        assert pr is not None
        if pr.head_sha is not None or not head_sha:
            return False  # followed live already
        pr.head_sha, pr.installation_id, pr.branch = head_sha, installation_id, branch
        pr.urlpath, pr.comment, pr.config_known = urlpath, comment, True
        key = (repo_key(owner, repo), head_sha)
        self._prs_by_sha[key] = (self._prs_by_sha.get(key) or set()) | {number}
        if closed:
            pr.closed, pr.merged = True, merged
            self.queue(pr)
        return True

    def closed(self, owner: str, repo: str, number: int, *, merged: bool, installation_id: int | None,
               head_sha: str | None) -> None:
        """A closed or merged PR: its comment says so (it is edited, never created, for that)."""
        pr = self.get(owner, repo, number)
        assert pr is not None
        pr.closed, pr.merged = True, merged
        pr.installation_id = installation_id or pr.installation_id
        if head_sha and pr.head_sha is None:
            pr.head_sha = head_sha
        self.queue(pr)

    def set_state(self, owner: str, repo: str, number: int, sha: str, state: CommentState,
                  reason: str | None, *, may_create: bool) -> None:
        """Only news about the PR's current head (and an open PR) changes its comment."""
        pr = self.get(owner, repo, number)
        assert pr is not None
        if pr.head_sha is None:
            pr.head_sha = sha
        if pr.head_sha != sha or pr.closed:
            return
        if (pr.state, pr.reason) == (state, reason):
            return
        pr.state, pr.reason = state, reason
        pr.may_create = pr.may_create or may_create
        self.queue(pr)

    def follow_build(self, st: ShaState, *, adopt: bool = True) -> None:
        """Tell every PR whose head is this sha what its build is doing now.

        ``adopt``: a PR we know nothing about (after a restart) takes this sha as its head
        from the build's request; the start-up restore says False, as it knows each
        PR's head from the store and goes through old shas too.
        """
        target = comment_state_for(*st.current())
        if target is None:
            return
        state, reason = target
        numbers = set(self._prs_by_sha.get((repo_key(st.owner, st.repo), st.sha)) or ())
        from_requests = {r.request.pr_number: r for r, _, _ in st.members.values() if r.request.pr_number is not None}
        for n in numbers | set(from_requests):
            if self.get(st.owner, st.repo, n, create=False) is None:
                if n not in from_requests or not adopt:
                    continue
                # after a restart: the request tells us enough to keep its comment current
                pr = self.get(st.owner, st.repo, n)
                assert pr is not None
                req = from_requests[n].request
                pr.head_sha, pr.branch, pr.installation_id = st.sha, req.branch, req.installation_id
            self.set_state(st.owner, st.repo, n, st.sha, state, reason, may_create=True)

    def queue(self, pr: PrState) -> None:
        """Have the PR's worker bring its comment up to date (once, however often asked meanwhile)."""
        if pr.flush_queued:
            return
        pr.flush_queued = True
        self.pacer.submit(("comment", repo_key(pr.owner, pr.repo), pr.number), lambda: self._flush_background(pr))

    async def _flush_background(self, pr: PrState) -> None:
        pr.flush_queued = False
        try:
            await self._flush(pr)
            pr.failures = 0
        except Exception as e:
            pr.failures += 1
            delay = self.pacer.after_failure(e, pr.failures)
            if delay is None:
                log.error("PR %s#%s: giving up on the comment: %s", pr.full_name, pr.number, e)
                pr.failures = 0
                return
            log.warning("PR %s#%s: comment update failed (%s); retry in %.0f s", pr.full_name, pr.number, e, delay)
            self.pacer.later(delay, lambda: self.queue(pr))

    async def _flush(self, pr: PrState) -> None:
        if pr.head_sha is None or (pr.state is None and not pr.closed):
            return
        client = await installation_client(self.services, pr.installation_id)
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
        digest = body_hash(body)
        await self._resolve(client, pr)
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
                self.queue(pr)
                return
            log.info("PR %s#%s: edited comment %s (%s)", pr.full_name, pr.number, pr.comment_id, view.state.value)
        pr.body_hash = digest
        await self.services.gh_state.set_comment(pr.full_name, pr.number, pr.comment_id, digest)

    async def _resolve(self, client: GitHubAPI, pr: PrState) -> None:
        """Find our comment on the PR: the store, else the App's own comment carrying the marker."""
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
                pr.comment_id, pr.body_hash = int(c["id"]), body_hash(body)
                await self.services.gh_state.set_comment(pr.full_name, pr.number, pr.comment_id, pr.body_hash)
                break
        pr.resolved = True

    async def _load_pr_config(self, client: GitHubAPI, pr: PrState) -> None:
        """After a restart we may not know `comment`/`urlpath`: read them at the head sha."""
        try:
            cfg = await load_repo_config(client, self.services, pr.owner, pr.repo, pr.head_sha or "")
        except ConfigError:
            pr.config_known = True
            return
        pr.comment, pr.urlpath, pr.config_known = cfg.comment, cfg.urlpath, True
