"""Which repositories are served, and ref -> sha through the GitHub API (cached, ETag-revalidated).

A full 40-hex sha needs no GitHub call to be named (``verify_commit`` asks GitHub, once,
before anything is built for it). A branch or tag of an installed repository is
answered from the heads push webhooks keep in the store (launcher/known_heads.py: old
ones are revalidated in the background), and its visibility and clone URL from the
facts webhooks keep (launcher/known_repos.py, the same way). Other refs are cached for a few seconds
(bursts of clicks cost one call), then revalidated with ``If-None-Match``: gidgethub
keeps the ETag and the answer in our bounded cache and a 304 reuses it. "Not found"
answers are cached briefly too, and every call first passes the GitHubGuard
(launcher/guard.py): anonymous visitors cannot spend the installation's quota.
Repositories served without an installation (LAUNCH_ALLOW) resolve refs with
``git ls-remote`` against their clone URL instead (launcher/git_refs.py): no
token, no rate limit; their clone URL comes from our own build records when we
have one (``binder-prebuild build`` writes one), else from GitHub once.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import cachetools
import gidgethub

from bot.git_remote import Outcome
from launcher.git_refs import GitBusy, GitRefs
from bot.store.heads import HeadStore
from bot.store.repo_facts import RepoFacts, RepoFactsStore
from launcher.known_heads import KnownHeads
from launcher.known_repos import KnownRepos
from launcher.guard import GitHubGuard
from launcher.spec import RepoSpec, is_full_sha

if TYPE_CHECKING:
    from bot.core import Core
    from bot.model import BuildRequest

log = logging.getLogger(__name__)

SHA_ACCEPT = "application/vnd.github.sha"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA = re.compile(r"^[0-9a-fA-F]{7,39}$")


class NotServed(Exception):
    """A 404 page: this repository is not launched here, and why."""


class RefNotFound(Exception):
    """A 404 page: the repository has no such branch, tag or commit."""


class GitHubDown(Exception):
    """A 503 page: GitHub did not answer."""


@dataclasses.dataclass(frozen=True)
class RepoInfo:
    full_name: str
    clone_url: str
    html_url: str
    private: bool
    default_branch: str | None


@dataclasses.dataclass(frozen=True)
class Access:
    """How a repository is served: through an installation, or listed in LAUNCH_ALLOW."""

    installation_id: int | None
    allowed: bool  # listed in LAUNCH_ALLOW


def allowed_by_list(full_name: str, patterns: tuple[str, ...]) -> bool:
    """LAUNCH_ALLOW entries are ``owner/repo`` or ``owner/*`` (case-insensitive)."""
    name = full_name.lower()
    return any(fnmatch.fnmatchcase(name, p.strip().lower()) for p in patterns if p.strip())


def repo_info_from_api(data: dict[str, Any]) -> RepoInfo:
    """The parts of GitHub's repository object we need (``clone_url`` as GitHub reports it)."""
    return RepoInfo(
        full_name=str(data["full_name"]),
        clone_url=str(data["clone_url"]),
        html_url=str(data.get("html_url") or str(data["clone_url"]).removesuffix(".git")),
        private=bool(data.get("private")),
        default_branch=data.get("default_branch"),
    )


def repo_info_from_facts(facts: RepoFacts) -> RepoInfo:
    """The repository as webhooks described it (complete facts: a clone URL is known)."""
    clone_url = str(facts.clone_url)
    return RepoInfo(full_name=facts.full_name, clone_url=clone_url,
                    html_url=facts.html_url or clone_url.removesuffix(".git"), private=facts.private,
                    default_branch=facts.default_branch)


def repo_info_from_request(req: "BuildRequest") -> RepoInfo:
    """The repository as a build record describes it (its clone URL as given when it was built)."""
    return RepoInfo(full_name=req.full_name, clone_url=req.clone_url, html_url=req.clone_url.removesuffix(".git"),
                    private=req.private, default_branch=req.default_branch)


def not_served_message(full_name: str) -> str:
    """The same words for "not installed" and "private": a refusal does not tell which."""
    return (f"{full_name} is not served here: the binder-prebuild GitHub App is not installed on it (or its "
            "installation is suspended), or it is a private repository: launch links are public, so private "
            "repositories are only launched when LAUNCH_ALLOW lists them.")


class Resolver:
    def __init__(self, services: "Core", *, fresh_ttl: float = 5.0, repo_ttl: float = 60.0,
                 negative_ttl: float = 30.0, maxsize: int = 4096, guard: GitHubGuard | None = None,
                 clock: Callable[[], float] = time.monotonic, git: GitRefs | None = None,
                 head_fresh: float = 60.0, repo_fresh: float = 60.0, repo_max_age: float = 86400.0) -> None:
        self.services = services
        self.guard = guard
        self.git = git or GitRefs(ttl=fresh_ttl)  # refs of repositories without an installation
        self.known = KnownHeads(HeadStore(services.db), self._fetch_sha, fresh=head_fresh, gone=(RefNotFound,))
        self.known_repos = KnownRepos(RepoFactsStore(services.db), self._fetch_repo, fresh=repo_fresh,
                                      max_age=repo_max_age, gone=(NotServed,))
        # answers GitHub gave "not found" (refs, commits, repositories), remembered briefly
        self._missing: cachetools.TTLCache[tuple[str, str], Exception] = cachetools.TTLCache(
            maxsize, negative_ttl, timer=clock) if negative_ttl > 0 else cachetools.TTLCache(1, 1e-9)
        # commits GitHub confirmed: a commit id names the same commit for good
        self._commits: cachetools.LRUCache[tuple[str, str], bool] = cachetools.LRUCache(maxsize)
        self._fresh: cachetools.TTLCache[tuple[str, str], str] = cachetools.TTLCache(maxsize, fresh_ttl, timer=clock) \
            if fresh_ttl > 0 else cachetools.TTLCache(1, 1e-9)
        self._repos: cachetools.TTLCache[str, RepoInfo] = cachetools.TTLCache(maxsize, repo_ttl, timer=clock)
        # gidgethub's conditional-request cache: url -> (etag, last_modified, data, next link)
        self._etags: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize)
        self._anonymous: Any = None

    # -- who is served ---------------------------------------------------------
    async def access(self, spec: RepoSpec) -> Access:
        settings = self.services.settings
        inst = await self.services.gh_state.installation_for(spec.full_name)
        allowed = allowed_by_list(spec.full_name, settings.launch_allow)
        if inst is None and not allowed:
            raise NotServed(not_served_message(spec.full_name))
        return Access(inst, allowed)

    # -- GitHub calls ----------------------------------------------------------
    def _client(self, access: Access) -> Any:
        """The installation's client (or an anonymous one), with our ETag cache: GETs are conditional."""
        services = self.services
        if access.installation_id is not None and services.github is not None:
            return services.github.installation_client(access.installation_id, cache=self._etags)
        if self._anonymous is None:
            from bot.github.client import GitHubClient

            self._anonymous = GitHubClient(services.session, base_url=services.settings.github_api_url,
                                           metrics=services.metrics, label="anonymous launcher",
                                           cache=self._etags)
        return self._anonymous

    async def _get(self, access: Access, url: str, accept: str | None = None) -> Any:
        if self.guard is not None:  # before any I/O: the client's limit, then the installation's budget
            self.guard.admit(access.installation_id)
        gh = self._client(access)
        try:
            if accept:
                return await gh.getitem(url, accept=accept)
            return await gh.getitem(url)
        except gidgethub.BadRequest as e:
            if e.status_code in (404, 422):
                raise LookupError(str(e)) from e
            if e.status_code in (401, 403):
                raise GitHubDown(f"GitHub refused the request ({e.status_code}): {e}") from e
            raise
        except gidgethub.GitHubBroken as e:
            raise GitHubDown(f"GitHub answered {e.status_code}") from e
        except gidgethub.GitHubException as e:  # unreachable, rate limited
            raise GitHubDown(f"GitHub is not answering: {e}") from e

    async def resolve(self, spec: RepoSpec, access: Access) -> str:
        """The commit sha of ``spec.ref``; a full sha is returned as is (no call)."""
        if is_full_sha(spec.ref):
            return spec.ref.lower()
        sha = await self.known.lookup(spec, access)
        if sha is not None:
            self._commits[(spec.full_name.lower(), sha)] = True  # GitHub told us of it (a push)
            return sha
        key = (spec.full_name.lower(), spec.ref)
        sha = self._fresh.get(key)
        if sha is not None:
            return sha
        if access.installation_id is None:
            sha = await self._resolve_with_git(spec, access)
            if sha is not None:
                self._commits[(key[0], sha)] = True  # a ref's head exists: a launch of it needs no lookup
                return sha
        sha = await self._fetch_sha(spec, access)
        self._fresh[key] = sha
        return sha

    async def _fetch_sha(self, spec: RepoSpec, access: Access) -> str:
        """GitHub's answer for ``spec.ref`` (RefNotFound when it has no such ref)."""
        return await self._commit(spec, access, spec.ref,
                                  f"{spec.full_name} has no branch, tag or commit called {spec.ref!r}.")

    async def verify_commit(self, spec: RepoSpec, access: Access, sha: str) -> None:
        """RefNotFound unless GitHub knows commit ``sha`` in the repository (asked once per sha)."""
        if self._commits.get((spec.full_name.lower(), sha)):
            return
        if await self._commit(spec, access, sha, f"{spec.full_name} has no commit {sha}: nothing is built for it.") \
                != sha:
            raise GitHubDown(f"GitHub answered another commit id for {spec.full_name}@{sha}")

    async def _commit(self, spec: RepoSpec, access: Access, ref: str, not_found: str) -> str:
        """GitHub's commit id for ``ref`` (remembered); RefNotFound, remembered briefly, if none."""
        key = (spec.full_name.lower(), ref)
        self._raise_if_missing(key)
        url = f"/repos/{quote(spec.owner)}/{quote(spec.repo)}/commits/{quote(ref, safe='/')}"
        try:
            data = await self._get(access, url, SHA_ACCEPT)
        except LookupError as e:
            raise self._remember_missing(key, RefNotFound(not_found)) from e
        sha = str(data or "").strip().lower()
        if not _SHA.match(sha):
            raise GitHubDown(f"GitHub answered an unexpected commit id for {spec.full_name}@{ref}")
        self._commits[(key[0], sha)] = True
        return sha

    async def _resolve_with_git(self, spec: RepoSpec, access: Access) -> str | None:
        """``git ls-remote`` against the clone URL; None only for a short sha (the API resolves those)."""
        repo = await self.repo(spec, access)
        try:
            answer = await self.git.lookup(repo.clone_url, spec.ref)
        except GitBusy as e:
            raise GitHubDown(f"too many ref lookups are in progress ({e})") from e
        if answer.outcome is Outcome.FOUND and answer.sha:
            return answer.sha
        if answer.outcome is Outcome.UNREACHABLE:
            raise GitHubDown(f"the git host of {spec.full_name} did not answer")
        if answer.outcome is Outcome.NO_REPO:
            raise NotServed(f"{spec.full_name} cannot be read anonymously at its clone URL: it does not exist, "
                            "or it is private (private repositories need the App's installation).")
        if _SHORT_SHA.match(spec.ref):
            return None
        raise RefNotFound(f"{spec.full_name} has no branch or tag called {spec.ref!r}.")

    def _raise_if_missing(self, key: tuple[str, str]) -> None:
        missing = self._missing.get(key)
        if missing is not None:
            raise type(missing)(*missing.args)

    def _remember_missing(self, key: tuple[str, str], error: Exception) -> Exception:
        self._missing[key] = error
        return error

    async def private(self, spec: RepoSpec, access: Access) -> bool:
        """The repository's current visibility: from webhooks' facts when installed (no call), else GitHub."""
        facts = await self.known_repos.lookup(spec, access)
        if facts is not None:
            return facts.private
        return (await self.repo(spec, access)).private

    async def repo(self, spec: RepoSpec, access: Access) -> RepoInfo:
        """GitHub's repository object (clone_url, html_url, current visibility).

        An installed repository is read from the facts webhooks keep (bot/store/repo_facts.py),
        so a ``privatized`` event takes effect at once; others are cached briefly."""
        facts = await self.known_repos.lookup(spec, access)
        if facts is not None and facts.complete:
            return repo_info_from_facts(facts)
        key = spec.full_name.lower()
        if access.installation_id is None:
            info = self._repos.get(key)
            if info is not None:
                return info
            record = await self.services.builds.newest_built(spec.owner, spec.repo)
            if record is not None:  # what our own build of it recorded: no GitHub call
                info = repo_info_from_request(record.request)
                self._repos[key] = info
                return info
        return await self._fetch_repo(spec, access)

    async def _fetch_repo(self, spec: RepoSpec, access: Access) -> RepoInfo:
        """GET the repository object (a "not found" is remembered briefly); an installed one's facts are kept."""
        key = spec.full_name.lower()
        self._raise_if_missing((key, ""))
        try:
            data = await self._get(access, f"/repos/{quote(spec.owner)}/{quote(spec.repo)}")
        except LookupError as e:
            raise self._remember_missing((key, ""), NotServed(not_served_message(spec.full_name))) from e
        info = repo_info_from_api(data)
        if access.installation_id is not None:
            await self.known_repos.store.record(
                RepoFacts(info.full_name, info.private, info.clone_url, info.html_url, info.default_branch),
                authoritative=True)
        else:
            self._repos[key] = info
        return info

    async def close(self) -> None:
        """Stop background work: head revalidations, and ref lookups in flight (their git processes)."""
        await self.known.close()
        await self.known_repos.close()
        await self.git.close()
