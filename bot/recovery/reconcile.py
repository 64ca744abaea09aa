"""Reconcile, level-triggered: build the branch and pull request heads nobody told us about.

A delivery can be lost before GitHub records it, or the App installed while the
service was down. Every ``RECONCILE_INTERVAL`` (and at start) a round walks every
installation and installed repository: the heads of its branches (those the default
branch's ``.github/binder.yml`` builds) and of its open pull requests are compared
with what the store knows (a build record for that branch/PR at that sha, a check
run we made, or a head an earlier round took care of). A head nobody handled is
handed to the ``push`` / ``pull_request`` handlers exactly as a webhook would be, so
it gets the same decisions, check run and PR comment; the scheduler then finds its
image in the registry (ready at once) or builds it.

The lists are conditional requests (ETags kept in memory): an unchanged repository
costs two 304 answers, which GitHub does not count against the rate limit. Rounds
after the first are spread over the interval; a round pauses when the installation's
``x-ratelimit-remaining`` falls under ``reserve`` of its limit (or GitHub says the quota
is used up) and resumes after the reset. Installations and repositories GitHub no
longer lists are forgotten (the installations refresh deletes them; their heads here too).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import cachetools
from gidgethub.sansio import Event

from bot.github.installations import refresh_installations
from bot.github.outage import RateLimited
from bot.prebuild.repo_config import DEFAULT, ConfigError, RepoConfig
from bot.store.heads import HeadStore, RefKind

if TYPE_CHECKING:
    from bot.core import Core
    from bot.store.checkpoints import Checkpoints

log = logging.getLogger(__name__)

ETAG_CACHE_SIZE = 20_000  # list pages (branches, pulls, repositories) whose ETag we keep
RESERVE = 0.1  # stop a round when less than this share of an installation's quota is left
MAX_RATE_PAUSES = 3  # per repository and round


# --- pure ---------------------------------------------------------------------------------

def push_payload(repository: Mapping[str, Any], branch: str, sha: str, installation_id: int) -> dict[str, Any]:
    """A ``push`` event body for a branch head (no head_commit: the handler reads the message)."""
    return {"ref": f"refs/heads/{branch}", "before": "0" * 40, "after": sha, "created": False, "deleted": False,
            "forced": False, "head_commit": None, "commits": [], "repository": dict(repository),
            "installation": {"id": installation_id}}


def pull_request_payload(pr: Mapping[str, Any], repository: Mapping[str, Any],
                         installation_id: int) -> dict[str, Any]:
    """A ``pull_request`` ``opened`` body for an open PR as the pulls API lists it."""
    return {"action": "opened", "number": pr.get("number"), "pull_request": dict(pr),
            "repository": dict(repository), "installation": {"id": installation_id}}


def branches_to_check(branches: list[tuple[str, str]], seen: Mapping[str, str],
                      policy: RepoConfig | None) -> list[tuple[str, str]]:
    """Branch heads not taken care of yet that the policy builds (None: unknown policy, every branch)."""
    out = []
    for name, sha in branches:
        if seen.get(f"refs/heads/{name}") == sha:
            continue
        if policy is not None and (not policy.enabled or not policy.branch_allowed(name)):
            continue
        out.append((name, sha))
    return out


def pace(repositories: int, spread: float) -> float:
    """Seconds between two repositories so a round of ``repositories`` lasts about ``spread``."""
    return spread / repositories if repositories > 1 and spread > 0 else 0.0


@dataclasses.dataclass
class ReconcileResult:
    installations: int = 0
    repositories: int = 0
    submitted: int = 0  # heads handed to the push / pull_request handlers
    unchanged: int = 0  # repositories whose lists were all 304 or already handled
    errors: int = 0
    paused: int = 0  # times the round waited for a rate-limit reset
    forgotten: int = 0


Sleep = Callable[[float], Awaitable[None]]


async def record_head(checkpoints: "Checkpoints", full_name: str, ref: str, sha: str) -> None:
    """The one place a seen head is written: handled by reconcile, and (branches) the heads the
    launcher resolves refs from (bot/store/heads.py), as a push webhook would have recorded it."""
    await checkpoints.set_head(full_name, ref, sha)
    if ref.startswith("refs/heads/"):
        await HeadStore(checkpoints.db).record(full_name, RefKind.BRANCH, ref[len("refs/heads/"):], sha)


class Reconciler:
    """Runs rounds; keeps the ETag cache between them."""

    def __init__(self, services: "Core", checkpoints: "Checkpoints", *, reserve: float = RESERVE,
                 sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.time) -> None:
        self.services = services
        self.checkpoints = checkpoints
        self.reserve = reserve
        self.sleep = sleep
        self.clock = clock
        self.etags: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=ETAG_CACHE_SIZE)

    async def round(self, *, spread: float = 0.0) -> ReconcileResult:
        github = self.services.github
        result = ReconcileResult()
        if github is None:
            return result
        refreshed = await refresh_installations(github, self.services.gh_state, cache=self.etags)
        result.installations = refreshed.installations
        repos = [(inst, raw) for inst, listed in refreshed.listed.items() for raw in listed if raw.get("full_name")]
        keep = {str(raw["full_name"]).lower() for _, raw in repos}
        if not refreshed.failed:  # an installation we could not list keeps its heads
            result.forgotten = await self.checkpoints.forget_repos_except(keep)
        result.repositories = len(repos)
        gap = pace(len(repos), spread)
        for i, (inst, raw) in enumerate(repos):
            if i and gap:
                await self.sleep(gap)
            await self._repository_with_pauses(inst, raw, result)
        metrics = self.services.metrics
        if metrics is not None:
            metrics.reconcile_rounds.labels(outcome="errors" if result.errors else "ok").inc()
        log.info("reconcile: %d installations, %d repositories, %d heads submitted, %d unchanged, %d errors",
                 result.installations, result.repositories, result.submitted, result.unchanged, result.errors)
        return result

    async def _repository_with_pauses(self, inst: int, raw: Mapping[str, Any], result: ReconcileResult) -> None:
        full = str(raw["full_name"])
        for _ in range(MAX_RATE_PAUSES + 1):
            until = self.services.github.gate_of(inst).low(self.reserve, self.clock())  # type: ignore[union-attr]
            if until is not None:
                await self._pause(inst, until, result, "the quota runs low")
            try:
                await self._repository(inst, raw, result)
                return
            except RateLimited as e:
                await self._pause(inst, e.until, result, "rate limited")
            except Exception as e:  # one repository must not stop the round
                result.errors += 1
                log.warning("reconcile %s: %s: %s", full, type(e).__name__, e)
                return
        result.errors += 1

    async def _pause(self, inst: int, until: float, result: ReconcileResult, why: str) -> None:
        wait = max(0.0, until - self.clock())
        result.paused += 1
        log.info("reconcile: installation %s %s; pausing %.0f s until the reset", inst, why, wait)
        await self.sleep(wait)

    async def _repository(self, inst: int, raw: Mapping[str, Any], result: ReconcileResult) -> None:
        from bot.prebuild import handlers

        services = self.services
        github = services.github
        assert github is not None
        full = str(raw["full_name"])
        owner, name = full.split("/", 1)
        lists = github.installation_client(inst, cache=self.etags)
        branches = [(str(b["name"]), str(b["commit"]["sha"])) async for b in
                    lists.getiter(f"/repos/{owner}/{name}/branches?per_page=100")]
        pulls = [p async for p in lists.getiter(f"/repos/{owner}/{name}/pulls?state=open&per_page=100")]
        seen = await self.checkpoints.heads(full)
        todo = branches_to_check(branches, seen, None)
        todo_prs = [p for p in pulls if seen.get(f"pull/{p['number']}") != p["head"]["sha"]]
        if not todo and not todo_prs:
            result.unchanged += 1
            return
        gh = github.installation_client(inst)
        if raw.get("default_branch"):
            await HeadStore(services.db).record_default_branch(full, str(raw["default_branch"]))
        policy = await self._policy(gh, owner, name, dict(branches).get(str(raw.get("default_branch"))))
        wanted = set(branches_to_check(todo, {}, policy))
        for branch, sha in todo:
            if (branch, sha) in wanted and not await self._branch_known(full, branch, sha):
                log.info("reconcile %s: branch %s at %s was never handled; submitting it", full, branch, sha[:12])
                await handlers.on_push(Event(push_payload(raw, branch, sha, inst), event="push",
                                             delivery_id=f"reconcile-{sha[:12]}"), gh, services=services)
                result.submitted += 1
                self._count("push")
            await record_head(self.checkpoints, full, f"refs/heads/{branch}", sha)
        for pr in todo_prs:
            number, sha = int(pr["number"]), str(pr["head"]["sha"])
            if not await self._pull_known(full, number, sha):
                log.info("reconcile %s: pull request #%d at %s was never handled; submitting it", full, number,
                         sha[:12])
                await handlers.on_pull_request(Event(pull_request_payload(pr, raw, inst), event="pull_request",
                                                     delivery_id=f"reconcile-{sha[:12]}"), gh, services=services)
                result.submitted += 1
                self._count("pull_request")
            await record_head(self.checkpoints, full, f"pull/{number}", sha)

    def _count(self, kind: str) -> None:
        metrics = self.services.metrics
        if metrics is not None:
            metrics.reconcile_submitted.labels(kind=kind).inc()

    async def _policy(self, gh: Any, owner: str, name: str, default_sha: str | None) -> RepoConfig | None:
        """The default branch's config, which says what branches are built (None: build them all)."""
        from bot.prebuild.handlers import load_repo_config

        if default_sha is None:
            return None
        try:
            return await load_repo_config(gh, self.services, owner, name, default_sha)
        except ConfigError:
            return DEFAULT  # each head's own config error is reported by the handler

    async def _branch_known(self, full: str, branch: str, sha: str) -> bool:
        s = self.services
        return (await s.builds.has_key_sha(f"{full.lower()}#branch/{branch}", sha)
                or await s.gh_state.check_run(full, sha) is not None)

    async def _pull_known(self, full: str, number: int, sha: str) -> bool:
        s = self.services
        if await s.builds.has_key_sha(f"{full.lower()}#pr/{number}", sha):
            return True
        return await s.gh_state.check_run(full, sha) is not None and await s.gh_state.comment_id(full, number) is not None
