"""Webhooks -> what GitHub says about each repository (bot/store/repo_facts.py).

Every push, pull request, check run and comment delivery carries its repository object:
its visibility, clone URL and default branch are recorded as they come (a snapshot, under
the store's fail-closed rule). ``repository`` events change them at once: ``privatized``
and ``publicized`` are the change itself (authoritative), ``deleted``, ``renamed`` and
``transferred`` retire the old name (its facts and its recorded heads), so a launch link
under a name that is gone or private stops working without a GitHub call on the click.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router
from gidgethub.sansio import Event

from bot.store.heads import HeadStore
from bot.store.repo_facts import RepoFacts, RepoFactsStore, facts_from_repository

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

router = Router()

# events whose payload carries the repository object they are about
SNAPSHOT_EVENTS = ("push", "pull_request", "check_run", "issue_comment")


class Change(str, enum.Enum):
    """What a ``repository`` event does to the facts we keep."""

    RECORD = "record"            # a snapshot of the repository (edited, archived, created, ...)
    AUTHORITATIVE = "authoritative"  # the visibility change itself
    GONE = "gone"                # deleted: forget it
    MOVED = "moved"              # renamed or transferred: forget the old name, record the new


@dataclasses.dataclass(frozen=True)
class RepositoryChange:
    change: Change
    facts: RepoFacts | None      # the repository as it is now (None when deleted or unreadable)
    old_name: str | None = None  # the name that is gone (deleted, renamed, transferred)


def repository_change(payload: Mapping[str, Any]) -> RepositoryChange | None:
    """What one ``repository`` event means for the facts (pure); None for a payload we cannot read."""
    repo = payload.get("repository")
    facts = facts_from_repository(repo)
    if facts is None:
        return None
    action = payload.get("action")
    if action == "deleted":
        return RepositoryChange(Change.GONE, None, facts.full_name)
    if action in ("privatized", "publicized"):
        return RepositoryChange(Change.AUTHORITATIVE, dataclasses.replace(facts, private=action == "privatized"))
    changes = payload.get("changes") if isinstance(payload.get("changes"), Mapping) else {}
    owner, _, name = facts.full_name.partition("/")
    if action == "renamed":
        old = _get(changes, "repository", "name", "from")
        if isinstance(old, str) and old and old != name:
            return RepositoryChange(Change.MOVED, facts, f"{owner}/{old}")
    if action == "transferred":
        previous = _get(changes, "owner", "from") or {}
        account = (previous.get("user") or previous.get("organization") or {}) if isinstance(previous, Mapping) \
            else {}
        login = account.get("login") if isinstance(account, Mapping) else None
        if isinstance(login, str) and login and login.lower() != owner.lower():
            return RepositoryChange(Change.MOVED, facts, f"{login}/{name}")
    return RepositoryChange(Change.RECORD, facts)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


async def record_snapshot(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    facts = facts_from_repository(event.data.get("repository"))
    if facts is None:
        return
    await RepoFactsStore(services.db).record(facts, authoritative=False)


for _event in SNAPSHOT_EVENTS:
    router.register(_event)(record_snapshot)


@router.register("repository")
async def repository_changed(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    change = repository_change(event.data)
    if change is None:
        log.info("delivery %s: repository event without a readable repository; ignored", event.delivery_id)
        return
    store = RepoFactsStore(services.db)
    if change.old_name is not None:
        await store.forget(change.old_name)
        await HeadStore(services.db).forget_repository(change.old_name)
    if change.facts is not None:
        await store.record(change.facts, authoritative=change.change is Change.AUTHORITATIVE)
    log.info("delivery %s: repository %s %s%s", event.delivery_id,
             change.facts.full_name if change.facts else change.old_name, event.data.get("action"),
             f" (was {change.old_name})" if change.change is Change.MOVED else "")
