"""push and pull_request -> build requests (thin I/O around bot.prebuild.decisions).

Each handler reads what the pure decision needs (the repo config at the sha, the
head commit message), decides, and hands the result on: a BuildRequest to the
scheduler, a Skip or a config error to the feedback reporter. A GitHub error
propagates, so the dispatcher retries the delivery.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
from typing import TYPE_CHECKING, Any

import gidgethub
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router
from gidgethub.sansio import Event

from bot.model import BuildRequest, BuildState, Trigger
from bot.prebuild.decisions import (
    PR_BUILD_ACTIONS,
    Candidate,
    Skip,
    SkipKind,
    decide,
    has_skip_marker,
    pull_request_candidate,
    push_candidate,
    push_is_stale,
)
from bot.prebuild.reading import head_commit_message, load_repo_config
from bot.prebuild.repo_config import CONFIG_PATH, DEFAULT, ConfigError, RepoConfig
from bot.store.pr_heads import PullHeads, github_time

if TYPE_CHECKING:
    from bot.feedback.reporter import Reporter
    from bot.services import Services
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)
router = Router()


def reporter_of(services: "Services") -> "Reporter | None":
    return services.feedback


async def _get_unless_gone(gh: GitHubAPI, url: str, params: dict[str, Any],
                           gone: tuple[int, ...] = (404,)) -> Any:
    """GET ``url``; None when GitHub answers that it is not there (other errors propagate: retry)."""
    try:
        return await gh.getitem(url, params)
    except gidgethub.BadRequest as e:
        if e.status_code not in gone:
            raise
        return None


async def at_branch_head(c: Candidate, gh: GitHubAPI) -> Candidate:
    """A push its branch has moved on from is handled as a push of the branch's head.

    Deliveries can run late (a retry, a restart): an older push must never supersede
    the newer head's build or move feedback back to an older commit. The branch's
    history decides (GitHub's compare), so a lagging API answer cannot demote the
    newest push.
    """
    if c.branch is None:
        return c
    branch = await _get_unless_gone(gh, "/repos/{owner}/{repo}/branches/{branch}",
                                    {"owner": c.owner, "repo": c.repo, "branch": c.branch})
    # a branch that is gone has no head to compare with: its deletion is another delivery
    head = str(((branch or {}).get("commit") or {}).get("sha") or "").lower() or None
    status = None
    if head is not None and head != c.sha:
        cmp = await _get_unless_gone(gh, "/repos/{owner}/{repo}/compare/{basehead}",
                                     {"owner": c.owner, "repo": c.repo, "basehead": f"{c.sha}...{head}"},
                                     gone=(404, 422))
        status = (cmp or {}).get("status")
    if not push_is_stale(c.sha, head, status):
        return c
    assert head is not None
    log.info("delivery %s: %s@%s is behind branch %s (now %s): handling its head instead", c.delivery_id,
             c.full_name, c.sha[:12], c.branch, head[:12])
    return dataclasses.replace(c, sha=head, head_message=None)


async def at_pull_head(c: Candidate, payload: dict[str, Any], gh: GitHubAPI) -> Candidate | Skip | None:
    """A pull_request event about an older head is handled as one about the PR's current head.

    The PR as GitHub shows it now decides (its head, open or closed), so an
    ``opened`` or ``synchronize`` that runs late never supersedes a newer head.
    """
    pr = await _get_unless_gone(gh, "/repos/{owner}/{repo}/pulls/{number}",
                                {"owner": c.owner, "repo": c.repo, "number": c.pr_number})
    head = str(((pr or {}).get("head") or {}).get("sha") or "").lower()
    if pr is None or not head or (head == c.sha and pr.get("state", "open") == "open"):
        return c
    now = pull_request_candidate(
        {"pull_request": pr, "number": c.pr_number, "repository": payload.get("repository"),
         "installation": payload.get("installation")}, delivery_id=c.delivery_id, any_action=True)
    log.info("delivery %s: %s#%s points at %s now (%s), not %s: handling that instead", c.delivery_id,
             c.full_name, c.pr_number, head[:12], pr.get("state"), c.sha[:12])
    return now


# The shared path: candidate -> decision -> scheduler or feedback ----------------------


class OutcomeKind(str, enum.Enum):
    SUBMITTED = "submitted"
    SKIPPED = "skipped"
    CONFIG_ERROR = "config_error"
    IGNORED = "ignored"


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    record: "BuildRecord | None" = None
    skip: Skip | None = None
    error: ConfigError | None = None


async def process_candidate(c: Candidate, gh: GitHubAPI, services: "Services", *, approved: bool = False,
                            rebuild: bool = False) -> Outcome:
    """Decide for one sha and act on it; used by the event handlers and by commands."""
    tag = f"delivery {c.delivery_id}: {c.full_name}@{c.sha[:12]}"
    reporter = reporter_of(services)
    message = c.head_message
    if message is None:
        message = await head_commit_message(gh, services, c.owner, c.repo, c.sha)
    if not approved and has_skip_marker(message):
        skip = decide(c, DEFAULT, head_message=message)  # the marker wins before any config is read
        assert isinstance(skip, Skip)
        return await _skipped(skip, c, gh, services, DEFAULT, tag)

    try:
        policy = None
        if c.policy_sha != c.sha:  # a fork: the base branch's policy first, before a byte of the fork's file
            try:
                policy = await load_repo_config(gh, services, c.owner, c.repo, c.policy_sha)
            except ConfigError as e:
                raise ConfigError(f"{e.problem} (in the base branch's copy)", key=e.key, line=e.line,
                                  column=e.column) from None
            early = decide(c, DEFAULT, policy=policy, head_message=message, approved=approved)
            if not isinstance(early, BuildRequest):  # refused by policy: the fork's config is never read
                if early is None:
                    log.info("%s: nothing to build (filtered by the base branch's config)", tag)
                    return Outcome(OutcomeKind.IGNORED)
                return await _skipped(early, c, gh, services, policy, tag)
        config = await load_repo_config(gh, services, c.owner, c.repo, c.sha)
        policy = policy or config
    except ConfigError as e:
        log.info("%s: invalid %s: %s", tag, CONFIG_PATH, e)
        if reporter is not None:
            await reporter.config_error(gh, c, e)
        return Outcome(OutcomeKind.CONFIG_ERROR, error=e)

    decision = decide(c, config, policy=policy, head_message=message, approved=approved)
    if decision is None:
        log.info("%s: nothing to build (filtered by config or event)", tag)
        return Outcome(OutcomeKind.IGNORED)
    if isinstance(decision, Skip):
        return await _skipped(decision, c, gh, services, policy, tag, config)

    return await submit(decision, services, config=config, policy=policy, rebuild=rebuild)


async def submit(req: BuildRequest, services: "Services", *,
                 config: RepoConfig, policy: RepoConfig, rebuild: bool = False) -> Outcome:
    tag = f"delivery {req.delivery_id}: {req.full_name}@{req.sha[:12]}"
    reporter = reporter_of(services)
    if reporter is not None and req.pr_number is not None:
        await reporter.track_pr(req.owner, req.repo, req.pr_number, req.sha, installation_id=req.installation_id,
                          branch=req.branch, urlpath=config.urlpath, comment=policy.comment)
    if services.scheduler is None:
        raise RuntimeError("no scheduler is running")
    record = await services.scheduler.submit(req, rebuild=rebuild)
    log.info("%s: submitted as build %s (%s)", tag, record.id, record.state.value)
    if reporter is not None:
        reporter.submitted(record, urlpath=config.urlpath)
    return Outcome(OutcomeKind.SUBMITTED, record=record)


async def _skipped(skip: Skip, c: Candidate, gh: GitHubAPI, services: "Services", policy: RepoConfig,
                   tag: str, config: RepoConfig | None = None) -> Outcome:
    # A fork sha a maintainer already had built is ready: serving it from cache runs no fork code
    # (and reading its config is then reading what a maintainer approved).
    if skip.kind is SkipKind.FORK:
        rec = await services.builds.latest_for_sha(c.owner, c.repo, c.sha)
        if rec is not None and rec.state is BuildState.BUILT:
            if config is None:
                try:
                    config = await load_repo_config(gh, services, c.owner, c.repo, c.sha)
                except ConfigError:
                    config = DEFAULT  # it built before with this file; its subdir came with the record
            req = decide(c, config, policy=policy, approved=True)
            assert isinstance(req, BuildRequest)
            return await submit(req, services, config=config, policy=policy)
    log.info("%s: skipped: %s", tag, skip.reason)
    reporter = reporter_of(services)
    if reporter is not None:
        if skip.pr_number is not None:
            await reporter.track_pr(skip.owner, skip.repo, skip.pr_number, skip.sha,
                              installation_id=skip.installation_id, branch=c.branch,
                              urlpath=(config or DEFAULT).urlpath, comment=policy.comment)
        await reporter.skipped(gh, skip)
    return Outcome(OutcomeKind.SKIPPED, skip=skip)


def pr_supersede_key(owner: str, repo: str, number: int) -> str:
    return BuildRequest(owner=owner, repo=repo, sha="", clone_url="", pr_number=number).supersede_key


# Handlers ---------------------------------------------------------------------------


@router.register("push")
async def on_push(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    c = push_candidate(event.data, build_tags=services.settings.build_tags, delivery_id=event.delivery_id)
    if c is None:
        log.info("delivery %s: push to %s ignored (deletion, tag or not a branch)", event.delivery_id,
                 event.data.get("ref"))
        return
    await process_candidate(await at_branch_head(c, gh), gh, services)


@router.register("pull_request")
async def on_pull_request(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    action = event.data.get("action")
    if action == "closed":
        await _on_closed(event, gh, services)
        return
    if action not in PR_BUILD_ACTIONS:
        return
    c = pull_request_candidate(event.data, delivery_id=event.delivery_id)
    if isinstance(c, Candidate):
        c = await at_pull_head(c, event.data, gh)
    if c is None:
        log.info("delivery %s: the pull request is closed now; nothing to build", event.delivery_id)
        return
    await _record_head(services, event.data, c)
    if isinstance(c, Skip):
        reporter = reporter_of(services)
        log.info("delivery %s: %s#%s skipped: %s", event.delivery_id, c.full_name, c.pr_number, c.reason)
        if reporter is not None:
            await reporter.skipped(gh, c)
        return
    await process_candidate(c, gh, services)


async def _record_head(services: "Services", data: dict[str, Any], c: Candidate | Skip) -> None:
    """Remember this head and since when (GitHub's time): `/binder build` approves the head
    at the comment's time (bot.feedback.commands)."""
    since = github_time((data.get("pull_request") or {}).get("updated_at"))
    if since is not None and c.pr_number is not None:
        await PullHeads(services.db).record(c.full_name, c.pr_number, c.sha, since)


async def _on_closed(event: Event, gh: GitHubAPI, services: "Services") -> None:
    data = event.data
    pr = data.get("pull_request") or {}
    repository = data.get("repository") or {}
    owner = (repository.get("owner") or {}).get("login") or str(repository.get("full_name", "/")).split("/")[0]
    name = repository.get("name") or str(repository.get("full_name", "/")).split("/")[1]
    number = int(pr.get("number") or data.get("number"))
    merged = bool(pr.get("merged"))
    key = pr_supersede_key(owner, name, number)
    log.info("delivery %s: %s/%s#%s closed: cancelling its builds", event.delivery_id, owner, name, number)
    reporter = reporter_of(services)
    if reporter is not None:  # first, so the cancellations below do not touch the comment
        await reporter.pr_closed(owner, name, number, merged=merged,
                           installation_id=(data.get("installation") or {}).get("id"),
                           head_sha=(pr.get("head") or {}).get("sha"))
    if services.scheduler is not None:
        await services.scheduler.cancel_key(key, f"The pull request was {'merged' if merged else 'closed'}.")
    await PullHeads(services.db).forget(f"{owner}/{name}", number)


def candidate_from_request(req: BuildRequest, *, trigger: Trigger, delivery_id: str | None) -> Candidate:
    """Rebuild a Candidate from a stored request (re-runs of a sha we built before)."""
    return Candidate(
        owner=req.owner, repo=req.repo, sha=req.sha, clone_url=req.clone_url, trigger=trigger,
        installation_id=req.installation_id, branch=req.branch, pr_number=req.pr_number,
        private=req.private, default_branch=req.default_branch, delivery_id=delivery_id,
    )
