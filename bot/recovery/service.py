"""The background loops of recovery: redelivery, reconcile, and store pruning.

Started after the dispatcher; each loop logs and backs off on failure, waits out a
rate limit until its reset, and never stops the service.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.github.outage import RateLimited
from bot.recovery.reconcile import Reconciler
from bot.recovery.redeliver import redeliver_round
from bot.store.checkpoints import Checkpoints
from bot.store.upkeep import prune

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Timing:
    """How the loops are paced (tests shorten these)."""

    start_delay: float = 5.0  # let the listener come up before GitHub is asked to redeliver to it
    reconcile_delay: float = 30.0  # after the first redelivery round, so redelivered events go first
    recheck: float = 60.0  # a round that asked for redeliveries looks again this soon
    redeliver_limit: int = 100  # redelivery requests per round
    redeliver_pace: float = 1.0  # seconds between two redelivery requests
    spread: float = 0.8  # share of RECONCILE_INTERVAL a round is spread over (not the first one)
    prune_every: float = 3600.0
    retry_base: float = 10.0
    retry_cap: float = 600.0


class Recovery:
    """Owns the loops' tasks; kept in ``Services.recovery``."""

    def __init__(self, services: "Core", timing: Timing | None = None) -> None:
        self.services = services
        self.timing = timing or Timing()
        self.checkpoints = Checkpoints(services.db)
        self.reconciler = Reconciler(services, self.checkpoints)
        self._tasks: list[asyncio.Task[None]] = []
        self.first_redelivery = asyncio.Event()
        self.rounds = {"redeliver": 0, "reconcile": 0, "prune": 0}

    def start(self) -> None:
        s = self.services.settings
        if self.services.github is not None:
            self._spawn("redeliver", self._redeliver_loop())
            self._spawn("reconcile", self._reconcile_loop())
        else:
            log.info("no GitHub App credentials: webhook redelivery and reconcile are off")
            self.first_redelivery.set()
        self._spawn("prune", self._every(self.timing.prune_every, "prune", self._prune,
                                         first=min(60.0, self.timing.prune_every)))
        log.info("recovery: redelivery every %g s, reconcile every %g s, store retention %g days",
                 s.redeliver_interval, s.reconcile_interval, s.store_retention_days)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    def _spawn(self, name: str, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"recovery-{name}"))  # type: ignore[arg-type]

    # loops ------------------------------------------------------------------------
    async def _redeliver_loop(self) -> None:
        await asyncio.sleep(self.timing.start_delay)
        failures = 0
        while True:
            wait = self.services.settings.redeliver_interval
            try:
                r = await redeliver_round(self.services.github, self.services.deliveries, self.checkpoints,
                                          limit=self.timing.redeliver_limit, pace=self.timing.redeliver_pace,
                                          metrics=self.services.metrics)
                failures = 0
                self.rounds["redeliver"] += 1
                if r.requested or r.failed:
                    log.info("redelivery: scanned %d deliveries, %d failed, asked for %d again%s", r.scanned,
                             r.failed, r.requested, "" if r.complete else " (round cut short; resuming soon)")
                if r.rate_limited_until is not None:
                    wait = max(1.0, r.rate_limited_until - time.time())
                elif r.requested or not r.complete:
                    wait = min(wait, self.timing.recheck)
            except RateLimited as e:
                wait = max(1.0, e.until - time.time())
                log.warning("redelivery: rate limited; next scan in %.0f s", wait)
            except Exception as e:
                failures += 1
                wait = min(self.timing.retry_cap, self.timing.retry_base * 2 ** (failures - 1)) * (
                    1 + 0.1 * random.random())
                log.warning("redelivery: scanning GitHub's deliveries failed (%s: %s); retry in %.0f s",
                            type(e).__name__, e, wait)
            self.first_redelivery.set()
            await asyncio.sleep(wait)

    async def _reconcile_loop(self) -> None:
        await self.first_redelivery.wait()
        await asyncio.sleep(self.timing.reconcile_delay)
        spread = 0.0  # the first round catches up as fast as the quota allows
        failures = 0
        while True:
            interval = self.services.settings.reconcile_interval
            started = time.monotonic()
            try:
                await self.reconciler.round(spread=spread)
                failures = 0
                self.rounds["reconcile"] += 1
                wait = max(0.0, interval - (time.monotonic() - started))
                spread = interval * self.timing.spread
            except Exception as e:
                failures += 1
                wait = min(self.timing.retry_cap, self.timing.retry_base * 2 ** (failures - 1))
                log.warning("reconcile round failed (%s: %s); retry in %.0f s", type(e).__name__, e, wait)
            await asyncio.sleep(wait)

    async def _every(self, interval: float, name: str, fn: Callable[[], Awaitable[None]], *, first: float) -> None:
        await asyncio.sleep(first)
        while True:
            try:
                await fn()
                self.rounds[name] += 1
            except Exception:
                log.exception("%s failed; trying again in %g s", name, interval)
            await asyncio.sleep(interval)

    async def _prune(self) -> None:
        days = self.services.settings.store_retention_days
        pruned = await prune(self.services.db, retention=days * 86400)
        metrics = self.services.metrics
        if metrics is not None:
            for kind, n in dataclasses.asdict(pruned).items():
                if n:
                    metrics.store_pruned.labels(kind=kind).inc(n)
        if pruned.total():
            log.info("store pruned: %s", ", ".join(f"{n} {k}" for k, n in dataclasses.asdict(pruned).items() if n))


def start_recovery(services: "Core", timing: Timing | None = None) -> Recovery:
    """Start the loops; the caller keeps the Recovery (``Services.recovery``)."""
    recovery = Recovery(services, timing)
    recovery.start()
    return recovery


async def stop_recovery(recovery: Recovery | None) -> None:
    if recovery is not None:
        await recovery.stop()
