"""Webhook intake: the receiver (HTTP, verify, store), the writer (group commit)
and the dispatcher (drain the store, route through gidgethub)."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.services import Services

_WAKEUP = "delivery_wakeup"
_INGEST = "webhook_ingest"


def wakeup_event(services: "Services") -> asyncio.Event:
    """The event the receiver sets after storing a delivery, so the dispatcher wakes at once."""
    ev = services.extras.get(_WAKEUP)
    if ev is None:
        ev = services.extras[_WAKEUP] = asyncio.Event()
    return ev


class IngestGauge:
    """How busy the receiver is: requests in hand now, and when the last one arrived.

    The dispatcher reads it to acknowledge first: during a burst it holds back
    (bounded), because a slow answer costs a delivery (GitHub gives up after
    10 s and does not retry) while a late one only waits in the durable queue.
    """

    def __init__(self) -> None:
        self.active = 0
        self.last = 0.0

    def enter(self) -> None:
        self.active += 1
        self.last = time.monotonic()

    def leave(self) -> None:
        self.active -= 1
        self.last = time.monotonic()

    def busy(self, quiet: float) -> bool:
        """True while requests are in hand or the last one ended less than ``quiet`` s ago."""
        return self.active > 0 or time.monotonic() - self.last < quiet


def ingest_gauge(services: "Services") -> IngestGauge:
    gauge = services.extras.get(_INGEST)
    if gauge is None:
        gauge = services.extras[_INGEST] = IngestGauge()
    return gauge
