"""`/binder build`, `/binder rebuild` and GitHub's "Re-run" buttons.

`/binder build` lets a maintainer approve a fork's pull request: the head it had
when the comment was written (bot.store.pr_heads), which the reply names; a push
after the comment is not built and needs a new approval. `/binder rebuild` and a
re-requested check run build a sha again even if its image exists. Only users
with write or admin permission on the base repository may command; anyone else
trying `build`/`rebuild` is told why nothing happened (once per PR, then only with
a reaction). Unknown words and `help` are answered only for those who may command,
without echoing the word: a stranger cannot make the App say anything.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
from typing import TYPE_CHECKING, Any

import cachetools
import gidgethub
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router
from gidgethub.sansio import Event

from bot.feedback.render import CHECK_NAME, COMMENT_MARKER, inert
from bot.model import Trigger
from bot.prebuild.decisions import Candidate, PayloadError, Skip, pull_request_candidate
from bot.prebuild.handlers import OutcomeKind, candidate_from_request, process_candidate, reporter_of
from bot.store.pr_heads import PullHeads, github_time

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)
router = Router()

WRITE_PERMISSIONS = frozenset({"admin", "write", "maintain"})


class Command(str, enum.Enum):
    BUILD = "build"
    REBUILD = "rebuild"
    HELP = "help"
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class ParsedCommand:
    command: Command
    word: str


def parse_command(body: str | None) -> ParsedCommand | None:
    """The first line that starts with `/binder` (quoted lines ignored), or None."""
    for raw in (body or "").splitlines():
        line = raw.strip()
        if line.startswith(">"):
            continue
        parts = line.split()
        if not parts or parts[0].lower() != "/binder":
            continue
        word = parts[1].lower() if len(parts) > 1 else ""
        try:
            return ParsedCommand(Command(word), word)
        except ValueError:
            return ParsedCommand(Command.UNKNOWN, word)
    return None


def _denials(services: "Services") -> cachetools.TTLCache:
    """Who we already answered, so repeating a refused command does not make us repeat the reply."""
    if services.command_denials is None:
        services.command_denials = cachetools.TTLCache(maxsize=4096, ttl=24 * 3600)
    return services.command_denials


async def permission(gh: GitHubAPI, owner: str, repo: str, user: str) -> str:
    try:
        data = await gh.getitem("/repos/{owner}/{repo}/collaborators/{user}/permission",
                                {"owner": owner, "repo": repo, "user": user})
    except gidgethub.BadRequest as e:
        if e.status_code in (403, 404):
            return "none"
        raise
    role = str(data.get("role_name") or "")
    perm = str(data.get("permission") or "none")
    return "maintain" if role == "maintain" else perm


async def react(gh: GitHubAPI, owner: str, repo: str, comment_id: int, content: str) -> None:
    try:
        await gh.post("/repos/{owner}/{repo}/issues/comments/{id}/reactions",
                      {"owner": owner, "repo": repo, "id": comment_id}, data={"content": content})
    except gidgethub.BadRequest as e:  # the comment may be gone already; a reaction is a courtesy
        log.info("reaction on comment %s in %s/%s failed: %s", comment_id, owner, repo, e)


async def reply(gh: GitHubAPI, owner: str, repo: str, number: int, text: str) -> None:
    await gh.post("/repos/{owner}/{repo}/issues/{number}/comments",
                  {"owner": owner, "repo": repo, "number": number}, data={"body": text})


def _repo_names(data: dict[str, Any]) -> tuple[str, str]:
    repository = data.get("repository") or {}
    owner = (repository.get("owner") or {}).get("login")
    name = repository.get("name")
    if not owner or not name:
        owner, _, name = str(repository.get("full_name", "")).partition("/")
    if not owner or not name:
        raise PayloadError("repository has no owner/name")
    return owner, name


async def _pr_candidate(gh: GitHubAPI, data: dict[str, Any], owner: str, repo: str, number: int,
                        trigger: Trigger, delivery_id: str | None) -> Candidate | Skip | None:
    pr = await gh.getitem("/repos/{owner}/{repo}/pulls/{number}", {"owner": owner, "repo": repo, "number": number})
    payload = {"pull_request": pr, "repository": data.get("repository") or (pr.get("base") or {}).get("repo"),
               "installation": data.get("installation")}
    return pull_request_candidate(payload, delivery_id=delivery_id, trigger=trigger, any_action=True)


@router.register("issue_comment", action="created")
async def on_comment(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    data = event.data
    issue = data.get("issue") or {}
    comment = data.get("comment") or {}
    if "pull_request" not in issue:
        return
    user = comment.get("user") or {}
    body = comment.get("body") or ""
    if user.get("type") == "Bot" or comment.get("performed_via_github_app") or COMMENT_MARKER in body:
        return
    parsed = parse_command(body)
    if parsed is None:
        return
    owner, repo = _repo_names(data)
    number = int(issue["number"])
    login = str(user.get("login") or "")
    comment_id = int(comment["id"])
    tag = f"delivery {event.delivery_id}: {owner}/{repo}#{number}"
    usage = ("`/binder build` builds this pull request's head commit (a maintainer's approval for forks); "
             "`/binder rebuild` builds it again even if its image exists.")

    async def refuse(why: str, reaction: str = "confused") -> None:
        await react(gh, owner, repo, comment_id, reaction)
        denials = _denials(services)
        key = (f"{owner}/{repo}".lower(), number, login.lower(), why)
        if key in denials:
            return
        denials[key] = True
        await reply(gh, owner, repo, number, f"@{login} {why}")

    perm = await permission(gh, owner, repo, login)
    may_command = perm in WRITE_PERMISSIONS
    if parsed.command in (Command.HELP, Command.UNKNOWN):
        if not may_command:  # nothing for strangers to make the App say
            log.info("%s: /binder help or unknown word from %s (%s): ignored", tag, login, perm)
        elif parsed.command is Command.UNKNOWN:
            await refuse(f"that is not a `/binder` command I know, so nothing happened. {usage}")
        else:
            await refuse(usage, reaction="eyes")
        return

    if not may_command:
        log.info("%s: /binder %s from %s (%s) refused", tag, parsed.word, login, perm)
        await refuse(f"only people with write access to {owner}/{repo} can run `/binder {parsed.word}`, "
                     "so nothing was built.", reaction="-1")
        return
    if issue.get("state") == "closed":
        await refuse("this pull request is closed, so nothing was built; reopen it to build again.")
        return

    rebuild = parsed.command is Command.REBUILD
    c = await _pr_candidate(gh, data, owner, repo, number, Trigger.COMMAND, event.delivery_id)
    if c is None:
        await refuse("this pull request is not open, so nothing was built.")
        return
    if isinstance(c, Skip):
        await refuse(f"nothing was built: {c.reason}")
        return
    approved = await _head_at(services, f"{owner}/{repo}", number, comment.get("created_at"), c.sha)
    if approved != c.sha:
        log.warning("%s: /binder %s by %s approved %s, but the head is now %s: not built", tag, parsed.word,
                    login, (approved or "?")[:12], c.sha[:12])
        seen = f"`{approved}`, the head when you commented" if approved else "the head when you commented"
        await refuse(f"you approved {seen}, but this pull request's head is now `{c.sha}` (pushed after "
                     f"your comment), so nothing was built. Comment `/binder {parsed.word}` again to build it.")
        return
    log.info("%s: /binder %s by %s (%s) for %s", tag, parsed.word, login, perm, c.sha[:12])
    outcome = await process_candidate(c, gh, services, approved=True, rebuild=rebuild)
    if outcome.kind is OutcomeKind.SUBMITTED:
        await react(gh, owner, repo, comment_id, "rocket")
        await reply(gh, owner, repo, number, f"@{login} approved `{c.sha}` (this pull request's head when you "
                                             f"commented) and started its build{' again' if rebuild else ''}.")
    elif outcome.kind is OutcomeKind.CONFIG_ERROR and outcome.error is not None:
        await refuse(f"nothing was built: `.github/binder.yml` is invalid: {inert(outcome.error.describe(), 600)}")
    elif outcome.kind is OutcomeKind.SKIPPED and outcome.skip is not None:
        await refuse(f"nothing was built: {outcome.skip.reason}")
    else:
        await refuse("nothing was built for this pull request.")


async def _head_at(services: "Services", full_name: str, number: int, created_at: Any, current: str) -> str | None:
    """The PR's head when the comment was written; ``current`` when we never saw a head before it.

    None means the comment's time is unknown and the current head was first seen
    after the command could have been written: approve nothing.
    """
    when = github_time(created_at)
    heads = PullHeads(services.db)
    if when is None:
        return None if await heads.known(full_name, number) else current
    before = await heads.head_before(full_name, number, when)
    if before is not None:
        return before
    # no head recorded before the comment: the PR predates the App or its events were lost.
    # Only a head first seen after the comment proves a later push; otherwise the current one stands.
    return None if await heads.known(full_name, number) else current


async def rebuild_sha(gh: GitHubAPI, services: "Services", data: dict[str, Any], sha: str, *,
                      pull_requests: list[dict[str, Any]], head_branch: str | None,
                      delivery_id: str | None) -> None:
    """Build ``sha`` again: from its last build request if we have one, else from the event."""
    owner, repo = _repo_names(data)
    tag = f"delivery {delivery_id}: {owner}/{repo}@{sha[:12]}"
    c: Candidate | Skip | None = None
    # a PR whose head is still this sha keeps its comment and its supersede key
    for pr in pull_requests:
        if (pr.get("head") or {}).get("sha") == sha and pr.get("number") is not None:
            c = await _pr_candidate(gh, data, owner, repo, int(pr["number"]), Trigger.RERUN, delivery_id)
            if isinstance(c, Candidate) and c.sha == sha:
                break
            c = None
    if c is None:
        rec = await services.builds.latest_for_sha(owner, repo, sha)
        if rec is not None:
            # not a PR head any more: key it by sha so it cannot supersede the PR's newer head
            req = dataclasses.replace(rec.request, pr_number=None) if rec.request.pr_number is not None else rec.request
            if rec.request.pr_number is not None:
                req = dataclasses.replace(req, branch=None)
            c = candidate_from_request(req, trigger=Trigger.RERUN, delivery_id=delivery_id)
        else:
            repository = data.get("repository") or {}
            clone_url = repository.get("clone_url")
            if not clone_url:
                log.warning("%s: cannot re-run, no clone URL known", tag)
                return
            c = Candidate(owner=owner, repo=repo, sha=sha, clone_url=str(clone_url), trigger=Trigger.RERUN,
                          installation_id=(data.get("installation") or {}).get("id"), branch=head_branch,
                          private=bool(repository.get("private")),
                          default_branch=repository.get("default_branch"), delivery_id=delivery_id)
    if isinstance(c, Skip):
        reporter = reporter_of(services)
        if reporter is not None:
            await reporter.skipped(gh, c)
        return
    log.info("%s: re-run requested", tag)
    await process_candidate(c, gh, services, approved=True, rebuild=True)


def _ours(services: "Services", app: dict[str, Any] | None) -> bool:
    app_id = services.settings.github_app_id
    return not app_id or app is None or str(app.get("id")) == str(app_id)


@router.register("check_run", action="rerequested")
async def on_check_run_rerequested(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    run = event.data.get("check_run") or {}
    if run.get("name") != CHECK_NAME or not _ours(services, run.get("app")):
        return
    suite = run.get("check_suite") or {}
    await rebuild_sha(gh, services, event.data, str(run["head_sha"]),
                      pull_requests=run.get("pull_requests") or suite.get("pull_requests") or [],
                      head_branch=suite.get("head_branch"), delivery_id=event.delivery_id)


@router.register("check_suite", action="rerequested")
async def on_check_suite_rerequested(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    suite = event.data.get("check_suite") or {}
    if not _ours(services, suite.get("app")):
        return
    await rebuild_sha(gh, services, event.data, str(suite["head_sha"]),
                      pull_requests=suite.get("pull_requests") or [], head_branch=suite.get("head_branch"),
                      delivery_id=event.delivery_id)
