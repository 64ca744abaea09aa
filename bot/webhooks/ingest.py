"""How busy the webhook receiver is (read by the dispatcher to acknowledge first)."""
from __future__ import annotations

import time


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
