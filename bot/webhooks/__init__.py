"""Webhook intake: the receiver (HTTP, verify, store), the writer (group commit)
and the dispatcher (drain the store, route through gidgethub)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.services import Services

_WAKEUP = "delivery_wakeup"


def wakeup_event(services: "Services") -> asyncio.Event:
    """The event the receiver sets after storing a delivery, so the dispatcher wakes at once."""
    ev = services.extras.get(_WAKEUP)
    if ev is None:
        ev = services.extras[_WAKEUP] = asyncio.Event()
    return ev
