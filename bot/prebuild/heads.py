"""push -> the branch or tag head it moved, kept in the store (bot/store/heads.py).

The launcher resolves a branch of an installed repository from these heads, so a click
costs no GitHub call. Every push is recorded, also the ones no build follows (tags when
BUILD_TAGS is off, deleted branches, skipped commits): the head is a fact about the
repository, whatever the prebuild decides.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router
from gidgethub.sansio import Event

from bot.store.heads import HeadStore, head_from_push

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

router = Router()


@router.register("push")
async def record_head(event: Event, gh: GitHubAPI, *, services: "Services") -> None:
    pushed = head_from_push(event.data)
    if pushed is None:
        return
    await HeadStore(services.db).record_push(pushed)
    log.info("delivery %s: head %s %s of %s is %s", event.delivery_id, pushed.kind.value, pushed.name,
             pushed.full_name, pushed.sha[:12] if pushed.sha else "deleted")
