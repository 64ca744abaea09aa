"""Nothing accepted is given up: an outage or a used-up quota delays a delivery, never kills it.

The dispatcher sorts a handler's failure with bot.github.outage.classify: rate
limited (wait for the reset), a dependency down (back off, capped), or the
delivery's own fault (the only kind that counts towards 'dead').
"""
from __future__ import annotations

import asyncio
import time
from http import HTTPStatus

import aiohttp
import gidgethub
from gidgethub.routing import Router

from bot.github.outage import FailureKind, RateLimited, classify, retry_time
from tests.test_dispatcher import _is, new, outcomes, run, services, until  # noqa: F401 (fixtures)


# ------------------------------------------------------------------ the pure classifier

def test_classify_sorts_outages_from_content_failures():
    now = 1000.0
    assert classify(RateLimited(4600.0), now).until == 4600.0
    limited = gidgethub.BadRequest(403, "API rate limit exceeded",
                                   headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2000"})
    assert classify(limited, now).kind is FailureKind.RATE_LIMITED and classify(limited, now).until == 2001.0
    secondary = gidgethub.BadRequest(429, "slow down", headers={"Retry-After": "30"})
    assert classify(secondary, now).until == 1030.0
    for exc in (gidgethub.GitHubBroken(HTTPStatus(502)), aiohttp.ClientConnectionError("refused"), asyncio.TimeoutError(),
                ConnectionResetError()):
        assert classify(exc, now).kind is FailureKind.UNAVAILABLE, exc
    for exc in (gidgethub.BadRequest(404, "Not Found"), gidgethub.BadRequest(422, "Invalid"),
                gidgethub.BadRequest(403, "Resource not accessible by integration"), KeyError("sha"),
                ValueError("bad yaml")):
        assert classify(exc, now).kind is FailureKind.CONTENT, exc


def test_retry_time_waits_for_the_reset_else_backs_off_capped():
    now = 1000.0
    assert retry_time(classify(RateLimited(4600.0), now), 1, now, base=5, cap=900) == 4600.0
    unavailable = classify(ConnectionError(), now)
    assert retry_time(unavailable, 1, now, base=5, cap=900) == 1005.0
    assert retry_time(unavailable, 30, now, base=5, cap=900) == 1900.0  # capped, never given up


# ------------------------------------------------------------------ the dispatcher

async def test_an_outage_longer_than_max_attempts_delays_but_never_kills(services, run):
    router = Router()
    calls = []

    @router.register("push")
    async def down(event, gh, *, services):
        calls.append(1)
        if len(calls) <= 8:  # more failures than max_attempts allows for content errors
            raise gidgethub.GitHubBroken(HTTPStatus(503))

    d = new("push.branch")
    await services.deliveries.add_many([d])
    await run(router, max_attempts=3, backoff_base=0.01, backoff_cap=0.02)
    await until(lambda: _is(services, d.id, "done"))
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["delayed"] * 8 + ["done"]


async def test_a_rate_limited_delivery_waits_for_the_reset(services, run):
    router = Router()
    reset = time.time() + 3600

    @router.register("push")
    async def limited(event, gh, *, services):
        raise RateLimited(reset, "rate limited until the reset")

    d = new("push.branch")
    await services.deliveries.add_many([d])
    await run(router, max_attempts=1, backoff_base=0.01)
    await until(lambda: _is(services, d.id, "failed"))
    row = await services.db.fetchone("SELECT next_attempt_at, state FROM deliveries WHERE id=?", (d.id,))
    assert row["next_attempt_at"] >= reset  # not before the reset, and not dead despite max_attempts=1
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["delayed"]


async def test_content_failures_still_end_dead_after_outage_delays(services, run):
    router = Router()
    calls = []

    @router.register("push")
    async def handler(event, gh, *, services):
        calls.append(1)
        if len(calls) <= 3:
            raise aiohttp.ClientConnectionError("registry down")
        raise KeyError("a field the payload lacks")

    d = new("push.branch")
    await services.deliveries.add_many([d])
    await run(router, max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
    await until(lambda: _is(services, d.id, "dead"))
    assert outcomes(await services.deliveries.attempts_of(d.id)) == ["delayed"] * 3 + ["failed", "dead"]


async def test_an_outage_outlasting_the_delivery_relevance_ends_it(services, run):
    router = Router()

    @router.register("push")
    async def down(event, gh, *, services):
        raise ConnectionError("GitHub is down")

    d = new("push.branch")
    await services.deliveries.add_many([d])
    await services.db.execute("UPDATE deliveries SET received_at=? WHERE id=?", (time.time() - 4 * 86400, d.id))
    await run(router, max_attempts=5, backoff_base=0.01)
    await until(lambda: _is(services, d.id, "dead"))
    assert "no longer relevant" in (await services.deliveries.get(d.id))["error"]
