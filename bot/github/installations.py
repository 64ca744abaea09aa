"""Where the App is installed: keep GitHubState's installations and repositories current.

Webhooks (``installation``, ``installation_repositories``) change the store as they
arrive; a background refresh from the API (on start, then now and then) repairs
whatever was missed while the service was down. The launcher refuses repositories
that no active (unsuspended) installation covers.

Handlers are idempotent (upserts, unions, deletes), so a redelivered or re-run
delivery changes nothing. Installation events carry no repository, so the
dispatcher may run two of them out of order; ``created`` therefore adds to what
is stored instead of replacing it, and the periodic refresh settles the rest.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import gidgethub.abc
import gidgethub.routing
import gidgethub.sansio

from bot.store.github_state import GitHubState
from bot.store.repo_facts import RepoFactsStore, facts_from_repository

if TYPE_CHECKING:
    from bot.github.client import GitHubApp
    from bot.services import Services

log = logging.getLogger(__name__)

router = gidgethub.routing.Router()

# --- pure reading of payloads -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InstallationInfo:
    id: int
    account: str
    account_type: str | None
    suspended: bool


def installation_info(inst: Mapping[str, Any]) -> InstallationInfo:
    """The parts we keep of an installation object (webhook or GET /app/installations)."""
    account = inst.get("account") or {}
    return InstallationInfo(
        id=int(inst["id"]),
        account=str(account.get("login") or account.get("slug") or account.get("name") or ""),
        account_type=account.get("type") or inst.get("target_type"),
        suspended=bool(inst.get("suspended_at")),
    )


def repo_list(repos: Iterable[Mapping[str, Any]] | None) -> list[tuple[str, bool]]:
    """(full_name, private) of each repository object; webhook lists carry exactly these fields."""
    return [(str(r["full_name"]), bool(r.get("private", False))) for r in repos or () if r.get("full_name")]


async def record_facts(db: Any, repos: Iterable[Mapping[str, Any]] | None, *, authoritative: bool) -> None:
    """What each listed repository object says of it (visibility; URLs when the list carries them):
    the launcher reads these instead of asking GitHub on a click (bot/store/repo_facts.py)."""
    facts = [f for f in map(facts_from_repository, repos or ()) if f is not None]
    await RepoFactsStore(db).record_all(facts, authoritative=authoritative)  # one transaction


# --- webhook handlers ------------------------------------------------------------------

async def _upsert(state: GitHubState, info: InstallationInfo) -> None:
    await state.upsert_installation(info.id, info.account, info.account_type, suspended=info.suspended)


def _forget_tokens(services: "Services", installation_id: int) -> None:
    if services.github is not None:
        services.github.forget_installation(installation_id)


@router.register("installation", action="created")
async def installation_created(event: gidgethub.sansio.Event, gh: gidgethub.abc.GitHubAPI, *,
                               services: "Services") -> None:
    info = installation_info(event.data["installation"])
    repos = repo_list(event.data.get("repositories"))
    await _upsert(services.gh_state, info)
    await services.gh_state.add_repos(info.id, repos)
    await record_facts(services.db, event.data.get("repositories"), authoritative=False)
    log.info("installation %s created on %s with %d repositories", info.id, info.account, len(repos))


@router.register("installation", action="deleted")
async def installation_deleted(event: gidgethub.sansio.Event, gh: gidgethub.abc.GitHubAPI, *,
                               services: "Services") -> None:
    info = installation_info(event.data["installation"])
    await services.gh_state.delete_installation(info.id)
    _forget_tokens(services, info.id)
    log.info("installation %s on %s deleted", info.id, info.account)


@router.register("installation", action="suspend")
async def installation_suspended(event: gidgethub.sansio.Event, gh: gidgethub.abc.GitHubAPI, *,
                                 services: "Services") -> None:
    info = dataclasses.replace(installation_info(event.data["installation"]), suspended=True)
    await _upsert(services.gh_state, info)
    _forget_tokens(services, info.id)
    log.info("installation %s on %s suspended", info.id, info.account)


@router.register("installation", action="unsuspend")
async def installation_unsuspended(event: gidgethub.sansio.Event, gh: gidgethub.abc.GitHubAPI, *,
                                   services: "Services") -> None:
    info = dataclasses.replace(installation_info(event.data["installation"]), suspended=False)
    await _upsert(services.gh_state, info)
    repos = repo_list(event.data.get("repositories"))
    if repos:
        await services.gh_state.add_repos(info.id, repos)
        await record_facts(services.db, event.data.get("repositories"), authoritative=False)
    log.info("installation %s on %s unsuspended", info.id, info.account)


@router.register("installation", action="new_permissions_accepted")
async def installation_permissions(event: gidgethub.sansio.Event, gh: gidgethub.abc.GitHubAPI, *,
                                   services: "Services") -> None:
    info = installation_info(event.data["installation"])
    await _upsert(services.gh_state, info)
    _forget_tokens(services, info.id)  # cached tokens carry the old permissions
    log.info("installation %s on %s accepted new permissions", info.id, info.account)


@router.register("installation_repositories", action="added")
async def repositories_added(event: gidgethub.sansio.Event, gh: gidgethub.abc.GitHubAPI, *,
                             services: "Services") -> None:
    info = installation_info(event.data["installation"])
    repos = repo_list(event.data.get("repositories_added"))
    await _upsert(services.gh_state, info)
    await services.gh_state.add_repos(info.id, repos)
    await record_facts(services.db, event.data.get("repositories_added"), authoritative=False)
    log.info("installation %s: added %s", info.id, ", ".join(n for n, _ in repos) or "nothing")


@router.register("installation_repositories", action="removed")
async def repositories_removed(event: gidgethub.sansio.Event, gh: gidgethub.abc.GitHubAPI, *,
                               services: "Services") -> None:
    info = installation_info(event.data["installation"])
    names = [n for n, _ in repo_list(event.data.get("repositories_removed"))]
    await _upsert(services.gh_state, info)
    await services.gh_state.remove_repos(info.id, names)
    _forget_tokens(services, info.id)  # scoped tokens may name a removed repository
    log.info("installation %s: removed %s", info.id, ", ".join(names) or "nothing")


# --- refresh from the API --------------------------------------------------------------

@dataclasses.dataclass
class RefreshResult:
    installations: int = 0
    repositories: int = 0
    removed: int = 0
    failed: list[int] = dataclasses.field(default_factory=list)  # installations whose repos could not be listed
    # installation id -> the repository objects GitHub listed (clone_url, default_branch, ...)
    listed: dict[int, list[Mapping[str, Any]]] = dataclasses.field(default_factory=dict)


async def refresh_installations(github: "GitHubApp", state: GitHubState, *, cache: Any = None) -> RefreshResult:
    """Make the store match GitHub: GET /app/installations, then each one's repositories.

    An installation whose repositories cannot be listed keeps what the store has;
    installations GitHub no longer reports are deleted. ``cache`` (an ETag cache, see
    GitHubApp.installation_client) makes the lists conditional requests.
    """
    result = RefreshResult()
    seen: set[int] = set()
    app = github.app_client(cache=cache)
    async for raw in app.getiter("/app/installations?per_page=100"):
        info = installation_info(raw)
        seen.add(info.id)
        result.installations += 1
        await state.upsert_installation(info.id, info.account, info.account_type, suspended=info.suspended)
        if info.suspended:
            continue  # a suspended installation cannot have a token; keep its stored repositories
        try:
            gh = github.installation_client(info.id, cache=cache)
            raw = [r async for r in gh.getiter("/installation/repositories?per_page=100",
                                               iterable_key="repositories")]
            repos = repo_list(raw)
        except Exception as e:  # one bad installation must not stop the others
            from bot.github.client import describe_error

            log.warning("installation %s: cannot list repositories: %s", info.id, describe_error(e))
            result.failed.append(info.id)
            continue
        await state.replace_repos(info.id, repos)
        await record_facts(state.db, raw, authoritative=True)  # GitHub's answer now
        result.listed[info.id] = raw
        result.repositories += len(repos)
    for stored in await state.installations():
        if int(stored["id"]) not in seen:
            await state.delete_installation(int(stored["id"]))
            result.removed += 1
    return result


async def _refresh_loop(services: "Services", *, delay: float, retry_base: float, retry_cap: float,
                        interval: float | None) -> None:
    from bot.github.client import describe_error

    await asyncio.sleep(delay)
    failures = 0
    while True:
        github = services.github
        if github is None:
            return
        try:
            r = await refresh_installations(github, services.gh_state)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            failures += 1
            wait = min(retry_cap, retry_base * 2 ** (failures - 1)) * (1 + 0.1 * random.random())
            log.warning("refreshing installations from GitHub failed (%s); retrying in %.0f s",
                        describe_error(e), wait)
            await asyncio.sleep(wait)
            continue
        failures = 0
        log.info("installations refreshed: %d installations, %d repositories, %d removed%s",
                 r.installations, r.repositories, r.removed,
                 f", could not list {r.failed}" if r.failed else "")
        if interval is None:
            return
        await asyncio.sleep(interval if not r.failed else min(interval, retry_base))


def refresh_installations_soon(services: "Services", *, delay: float = 0.0, retry_base: float = 30.0,
                               retry_cap: float = 1800.0, interval: float | None = 6 * 3600.0,
                               ) -> asyncio.Task[None] | None:
    """Start the background refresh (no-op without App credentials or if one runs already).

    Failures are logged and retried with backoff; nothing here can fail start-up.
    Stop it with :func:`stop_refresh`.
    """
    if services.github is None:
        log.info("no GitHub App credentials: installations are not refreshed from the API")
        return None
    running = services.installations_refresh
    if running is not None and not running.done():
        return running
    task = asyncio.create_task(
        _refresh_loop(services, delay=delay, retry_base=retry_base, retry_cap=retry_cap, interval=interval),
        name="installations-refresh")
    services.installations_refresh = task
    return task


async def stop_refresh(services: "Services") -> None:
    task, services.installations_refresh = services.installations_refresh, None
    if task is not None and not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
