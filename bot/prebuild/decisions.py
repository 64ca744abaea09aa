"""Webhook payload -> what to do: build a sha, show it as skipped, or ignore it.

Pure: plain payload dicts and a parsed RepoConfig in, BuildRequest | Skip | None out.
``None`` means "not our business" (a deleted branch, a closed PR, a branch outside
the config's ``branches``); ``Skip`` means "we would have built this sha but were
told not to" and is shown to the user as a skipped check run.

The clone URL is always the one GitHub reported in the payload (the PR head
repository's for forks), never assembled from a host name.
"""
from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any

from bot.model import BuildRequest, Trigger
from bot.prebuild.repo_config import RepoConfig

ZERO_SHA = "0" * 40
PR_BUILD_ACTIONS = frozenset({"opened", "synchronize", "reopened"})
_SKIP_RE = re.compile(r"\[\s*(?:skip\s+binder|binder\s+skip)\s*\]", re.IGNORECASE)
_SHA_RE = re.compile(r"\A[0-9a-f]{40}\Z")


class SkipKind(str, enum.Enum):
    MARKER = "marker"
    DISABLED = "disabled"
    FORK = "fork"
    HEAD_GONE = "head_gone"


@dataclasses.dataclass(frozen=True)
class Skip:
    """A sha we deliberately do not build; ``reason`` is one sentence for the check run."""

    owner: str
    repo: str
    sha: str
    reason: str
    kind: SkipKind
    installation_id: int | None = None
    pr_number: int | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A sha an event points at, before the repo config has had its say."""

    owner: str
    repo: str
    sha: str
    clone_url: str
    trigger: Trigger
    installation_id: int | None = None
    branch: str | None = None  # the base repository branch this sha is built for
    tag: str | None = None
    pr_number: int | None = None
    base_ref: str | None = None  # PRs: the branch the PR targets
    base_sha: str | None = None
    head_full_name: str | None = None  # PRs: the repository the head branch lives in
    head_ref: str | None = None
    is_fork: bool = False
    private: bool = False
    default_branch: str | None = None
    head_message: str | None = None  # push: head_commit.message; PRs: fetched separately
    delivery_id: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def policy_sha(self) -> str:
        """Where to read the policy settings: a fork must not be able to approve itself."""
        return self.base_sha if self.is_fork and self.base_sha else self.sha


class PayloadError(ValueError):
    """The payload lacks a field GitHub always sends."""


def _owner_repo(repository: dict[str, Any]) -> tuple[str, str]:
    owner = (repository.get("owner") or {}).get("login") or (repository.get("owner") or {}).get("name")
    name = repository.get("name")
    if (not owner or not name) and repository.get("full_name"):
        owner, _, name = str(repository["full_name"]).partition("/")
    if not owner or not name:
        raise PayloadError("repository has no owner/name")
    return str(owner), str(name)


def _installation(payload: dict[str, Any]) -> int | None:
    inst = payload.get("installation") or {}
    return int(inst["id"]) if inst.get("id") is not None else None


def has_skip_marker(message: str | None) -> bool:
    """``[skip binder]`` or ``[binder skip]`` anywhere in the commit message (any case)."""
    return bool(message) and _SKIP_RE.search(message or "") is not None


def push_candidate(payload: dict[str, Any], *, build_tags: bool = False,
                   delivery_id: str | None = None) -> Candidate | None:
    """A ``push`` to a branch (or a tag when ``build_tags``) that leaves a commit behind."""
    if payload.get("deleted") or payload.get("after") in (None, ZERO_SHA):
        return None
    ref = str(payload.get("ref") or "")
    branch = tag = None
    if ref.startswith("refs/heads/"):
        branch = ref[len("refs/heads/"):]
    elif ref.startswith("refs/tags/"):
        if not build_tags:
            return None
        tag = ref[len("refs/tags/"):]
    else:
        return None
    repository = payload.get("repository") or {}
    owner, name = _owner_repo(repository)
    head = payload.get("head_commit") or {}
    # an annotated tag's `after` is the tag object; head_commit.id is the commit
    sha = str(head.get("id") or payload["after"]).lower()
    if not _SHA_RE.match(sha):
        raise PayloadError(f"push head is not a full sha: {sha!r}")
    clone_url = repository.get("clone_url")
    if not clone_url:
        raise PayloadError("repository.clone_url missing")
    return Candidate(
        owner=owner, repo=name, sha=sha, clone_url=str(clone_url), trigger=Trigger.PUSH,
        installation_id=_installation(payload), branch=branch, tag=tag,
        private=bool(repository.get("private")), default_branch=repository.get("default_branch"),
        head_message=head.get("message") if head else None, delivery_id=delivery_id,
    )


def pull_request_candidate(payload: dict[str, Any], *, delivery_id: str | None = None,
                           trigger: Trigger = Trigger.PULL_REQUEST,
                           any_action: bool = False) -> Candidate | Skip | None:
    """``pull_request`` opened, synchronize or reopened on an open PR -> its head sha.

    ``any_action`` is for callers that hold a PR object from the API (commands).
    A PR whose head repository was deleted cannot be cloned: that is a Skip.
    """
    if not any_action and payload.get("action") not in PR_BUILD_ACTIONS:
        return None
    pr = payload.get("pull_request") or {}
    if pr.get("state", "open") != "open":
        return None
    base_repo = (pr.get("base") or {}).get("repo") or payload.get("repository") or {}
    owner, name = _owner_repo(payload.get("repository") or base_repo)
    head = pr.get("head") or {}
    sha = str(head.get("sha") or "").lower()
    if not _SHA_RE.match(sha):
        raise PayloadError(f"pull request head is not a full sha: {sha!r}")
    number = int(pr.get("number") or payload.get("number"))
    head_repo = head.get("repo")
    if not head_repo:
        return Skip(owner, name, sha, "The pull request's head repository was deleted, so it cannot be cloned.",
                    SkipKind.HEAD_GONE, _installation(payload), number)
    if head_repo.get("id") is not None and base_repo.get("id") is not None:
        is_fork = head_repo["id"] != base_repo["id"]
    else:
        is_fork = str(head_repo.get("full_name", "")).lower() != f"{owner}/{name}".lower()
    clone_url = head_repo.get("clone_url")
    if not clone_url:
        raise PayloadError("pull_request.head.repo.clone_url missing")
    head_ref = head.get("ref")
    repository = payload.get("repository") or base_repo
    return Candidate(
        owner=owner, repo=name, sha=sha, clone_url=str(clone_url), trigger=trigger,
        installation_id=_installation(payload),
        branch=None if is_fork else head_ref, pr_number=number,
        base_ref=(pr.get("base") or {}).get("ref"), base_sha=(pr.get("base") or {}).get("sha"),
        head_full_name=head_repo.get("full_name"), head_ref=head_ref, is_fork=is_fork,
        private=bool(head_repo.get("private") if is_fork else repository.get("private")),
        default_branch=repository.get("default_branch") or base_repo.get("default_branch"),
        delivery_id=delivery_id,
    )


def push_is_stale(event_sha: str, branch_head: str | None, head_vs_event: str | None) -> bool:
    """A push is stale when its branch has moved on past it: never let it supersede the newer head.

    ``head_vs_event`` is GitHub's compare status of the branch head against the pushed sha
    (``compare/{event_sha}...{branch_head}``): "ahead" (the push is in the branch's
    history, behind its head) or "diverged" (force-pushed over) make it stale; "behind"
    means GitHub's answer lags the webhook, and the push is the newest.
    """
    if branch_head is None or branch_head == event_sha:
        return False
    return head_vs_event in ("ahead", "diverged")


def decide(c: Candidate, config: RepoConfig, *, policy: RepoConfig | None = None,
           head_message: str | None = None, approved: bool = False) -> BuildRequest | Skip | None:
    """Apply skip markers, ``enabled``, ``branches``, ``pull_requests`` and the fork policy.

    ``config`` is read at the built sha (subdir); ``policy`` (default: ``config``) is the
    config whose switches apply: for a fork PR, the base branch's, so a fork cannot
    enable itself. ``approved`` is a writer's explicit ``/binder build`` or re-run: it
    overrides skip markers, branch filters and the fork policy, not ``enabled: false``.
    """
    policy = policy or config
    message = head_message if head_message is not None else c.head_message

    def skip(reason: str, kind: SkipKind) -> Skip:
        return Skip(c.owner, c.repo, c.sha, reason, kind, c.installation_id, c.pr_number)

    if not approved and has_skip_marker(message):
        return skip("The head commit message asks to skip Binder ([skip binder]).", SkipKind.MARKER)
    if not policy.enabled:
        return skip("Binder builds are disabled by `.github/binder.yml` (`enabled: false`).", SkipKind.DISABLED)
    if c.pr_number is not None:
        if not policy.pull_requests and not approved:
            return None
        if c.base_ref is not None and not policy.branch_allowed(c.base_ref) and not approved:
            return None
        if c.is_fork and not policy.forks and not approved:
            return skip(
                "Pull requests from forks are built only after a maintainer comments `/binder build`.",
                SkipKind.FORK)
    elif c.branch is not None and not policy.branch_allowed(c.branch) and not approved:
        return None
    return BuildRequest(
        owner=c.owner, repo=c.repo, sha=c.sha, clone_url=c.clone_url, installation_id=c.installation_id,
        branch=c.branch, pr_number=c.pr_number, private=c.private, default_branch=c.default_branch,
        subdir=config.subdir, trigger=c.trigger, delivery_id=c.delivery_id,
    )


def decide_push(payload: dict[str, Any], config: RepoConfig, *, build_tags: bool = False,
                delivery_id: str | None = None) -> BuildRequest | Skip | None:
    c = push_candidate(payload, build_tags=build_tags, delivery_id=delivery_id)
    return None if c is None else decide(c, config)


def decide_pull_request(payload: dict[str, Any], config: RepoConfig, *, head_message: str | None,
                        policy: RepoConfig | None = None,
                        delivery_id: str | None = None) -> BuildRequest | Skip | None:
    c = pull_request_candidate(payload, delivery_id=delivery_id)
    if c is None or isinstance(c, Skip):
        return c
    return decide(c, config, policy=policy, head_message=head_message)
