"""Ask GitHub to redeliver the webhooks it could not deliver to us.

GitHub does not retry a failed delivery by itself. The App's deliveries API lists
every attempt (newest first); a GUID whose attempts all failed (no answer, or a 5xx
/ 429 from us), that the store never received, is asked for again with
``POST /app/hook/deliveries/{id}/attempts``. A redelivery keeps its GUID, so the
store's dedupe keeps processing exactly once.

The scan goes back to a checkpoint in the store (the newest delivery id a finished
round saw; on the first run, as far as GitHub keeps deliveries). A round asks for at
most ``limit`` redeliveries, spaced by ``pace`` seconds; a round cut short (the
limit, a rate limit, an error) keeps the old checkpoint, and what it already asked
for is remembered in the store, so a crash or a restart resumes without asking twice.
Our own deliberate 4xx answers (bad signature, malformed) are not redelivered: they
would fail again.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import gidgethub

from bot.github.outage import RateLimited

if TYPE_CHECKING:
    from bot.github.client import GitHubApp
    from bot.metrics import Metrics
    from bot.store.checkpoints import Checkpoints
    from bot.store.deliveries import DeliveryStore

log = logging.getLogger(__name__)

CHECKPOINT = "hook_deliveries"
MAX_REQUESTS_PER_GUID = 5  # a delivery our service keeps refusing with a 5xx is not asked for forever


@dataclasses.dataclass(frozen=True)
class HookDelivery:
    """One attempt as GitHub's deliveries API lists it."""

    id: int
    guid: str
    status_code: int
    status: str = ""
    redelivery: bool = False
    event: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def retriable(self) -> bool:
        """No answer (status_code 0: refused, timed out), a 5xx or a 429: worth another attempt."""
        return self.status_code == 0 or self.status_code >= 500 or self.status_code in (408, 429)


def parse_hook_delivery(raw: Mapping[str, Any]) -> HookDelivery | None:
    try:
        return HookDelivery(id=int(raw["id"]), guid=str(raw["guid"]), status_code=int(raw.get("status_code") or 0),
                            status=str(raw.get("status") or ""), redelivery=bool(raw.get("redelivery")),
                            event=raw.get("event"))
    except (KeyError, TypeError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class RedeliveryPlan:
    redeliver: tuple[HookDelivery, ...]  # the newest failed attempt of each GUID to ask for, oldest first
    failed: int  # GUIDs whose every attempt failed (received by us or not)
    truncated: bool  # more were due than ``limit`` allows this round
    exhausted: tuple[str, ...] = ()  # GUIDs asked for MAX_REQUESTS_PER_GUID times already


def plan_redeliveries(scanned: Iterable[HookDelivery], received: set[str],
                      requested: Mapping[str, tuple[int, int]], *, limit: int,
                      max_per_guid: int = MAX_REQUESTS_PER_GUID) -> RedeliveryPlan:
    """Which GUIDs to ask GitHub for again, from one scan of its deliveries (pure).

    - any successful attempt of a GUID settles it (attempts are listed newest first,
      so a later success is always in the scan);
    - a GUID the store has was received, whatever GitHub recorded (e.g. we answered
      after GitHub's 10 s);
    - a GUID whose newest attempt is the one we already asked to redeliver is in flight;
    - only failures another attempt could fix (see ``HookDelivery.retriable``).
    """
    by_guid: dict[str, list[HookDelivery]] = {}
    for d in scanned:
        by_guid.setdefault(d.guid, []).append(d)
    due: list[HookDelivery] = []
    exhausted: list[str] = []
    failed = 0
    for guid, attempts in by_guid.items():
        if any(a.ok for a in attempts):
            continue
        failed += 1
        newest = max(attempts, key=lambda a: a.id)
        if guid in received or not newest.retriable:
            continue
        asked = requested.get(guid)
        if asked is not None and asked[0] >= newest.id:
            continue  # asked for this very attempt: its redelivery has not been recorded yet
        if asked is not None and asked[1] >= max_per_guid:
            exhausted.append(guid)
            continue
        due.append(newest)
    due.sort(key=lambda d: d.id)  # oldest first: closest to the order GitHub sent them
    return RedeliveryPlan(tuple(due[:limit]), failed, len(due) > limit, tuple(exhausted))


@dataclasses.dataclass
class RoundResult:
    scanned: int = 0
    failed: int = 0
    requested: int = 0
    errors: int = 0
    complete: bool = True  # the checkpoint moved on
    rate_limited_until: float | None = None


Sleep = Callable[[float], Awaitable[None]]


async def redeliver_round(github: "GitHubApp", deliveries: "DeliveryStore", checkpoints: "Checkpoints", *,
                          limit: int = 100, pace: float = 1.0, metrics: "Metrics | None" = None,
                          sleep: Sleep = asyncio.sleep) -> RoundResult:
    """One pass: scan back to the checkpoint, ask for what is missing, move the checkpoint."""
    result = RoundResult()
    checkpoint = int(await checkpoints.get(CHECKPOINT) or 0)
    app = github.app_client()
    scanned: list[HookDelivery] = []
    async for raw in app.getiter("/app/hook/deliveries?per_page=100"):
        d = parse_hook_delivery(raw) if isinstance(raw, Mapping) else None
        if d is None:
            continue
        if d.id <= checkpoint:
            break
        scanned.append(d)
    result.scanned = len(scanned)
    guids = list(dict.fromkeys(d.guid for d in scanned))
    plan = plan_redeliveries(scanned, await deliveries.known(guids), await checkpoints.redelivery_requests(guids),
                             limit=limit)
    result.failed = plan.failed
    if metrics is not None and plan.redeliver:
        metrics.redelivery_failed_found.inc(len(plan.redeliver))
    for guid in plan.exhausted:
        log.error("delivery %s: asked GitHub to redeliver it %d times and it still failed; not asking again",
                  guid, MAX_REQUESTS_PER_GUID)
    for i, d in enumerate(plan.redeliver):
        if i:
            await sleep(pace)  # GitHub asks for at least a second between mutating requests
        outcome = await _ask(app, d, checkpoints, result)
        if metrics is not None:
            metrics.redelivery_requests.labels(outcome=outcome).inc()
        if outcome == "rate_limited":
            break
    result.complete = not plan.truncated and result.errors == 0 and result.rate_limited_until is None
    if result.complete and scanned:
        await checkpoints.set(CHECKPOINT, str(max(d.id for d in scanned)))
    return result


async def _ask(app: Any, d: HookDelivery, checkpoints: "Checkpoints", result: RoundResult) -> str:
    try:
        await app.post(f"/app/hook/deliveries/{d.id}/attempts", data={})
    except RateLimited as e:
        result.rate_limited_until = e.until
        log.warning("delivery %s: redelivery request held: %s", d.guid, e)
        return "rate_limited"
    except gidgethub.BadRequest as e:
        if int(e.status_code) in (404, 422):  # GitHub no longer has it: nothing more to ask for
            log.warning("delivery %s: GitHub cannot redeliver it (%s)", d.guid, e)
            await checkpoints.record_redelivery(d.guid, d.id)
            return "gone"
        result.errors += 1
        log.warning("delivery %s: redelivery request failed: %s", d.guid, e)
        return "error"
    except Exception as e:  # GitHub down: the next round asks again
        result.errors += 1
        log.warning("delivery %s: redelivery request failed: %s: %s", d.guid, type(e).__name__, e)
        return "error"
    await checkpoints.record_redelivery(d.guid, d.id)
    result.requested += 1
    log.info("delivery %s: asked GitHub to redeliver %s (attempt %d failed: %s)", d.guid, d.event, d.id,
             d.status or d.status_code)
    return "accepted"
