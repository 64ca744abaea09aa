"""The clock the service's waits and timestamps read, in one place.

Code that waits for time to pass (retry delays, a build's backstop) asks a
``Clock`` instead of ``time`` and ``asyncio`` directly, so tests can drive time
(``tests/fake_clock.ManualClock``) instead of sleeping or clearing private state.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time and timeouts measured on that same time."""

    def time(self) -> float:
        """Seconds since the epoch (what stored timestamps and deadlines use)."""
        ...

    def timeout(self, delay: float | None) -> AbstractAsyncContextManager[object]:
        """Like ``asyncio.timeout(delay)``: raises ``TimeoutError`` when ``delay`` seconds pass."""
        ...


class SystemClock:
    """The real clock: ``time.time`` and ``asyncio.timeout``."""

    def time(self) -> float:
        return time.time()

    def timeout(self, delay: float | None) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(delay)


SYSTEM_CLOCK = SystemClock()
