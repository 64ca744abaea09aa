"""``GET /health`` (one entry per dependency), the probes, and ``GET /metrics`` (Prometheus text).

The probes are deliberately narrower than ``/health``: a registry, Hub or GitHub outage
must neither take the receiver out of its Service (webhooks would be refused and lost)
nor restart a process that is fine.
- ``GET /health/live`` (liveness): the process answers. No dependency is checked.
- ``GET /health/ready`` (readiness): the store accepts a write, so webhooks can be taken.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from cachetools import TTLCache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.appkeys import SERVICES
from bot.core import Core, HealthCheck

log = logging.getLogger(__name__)

def add_check(services: Core, name: str, check: HealthCheck) -> None:
    """Register a dependency; every module that brings one adds its check here."""
    services.health_checks.append((name, check))


CHECK_TTL = 5.0  # probes may come every second; engine checks spawn processes


async def _run(name: str, check: HealthCheck, timeout: float, cache: TTLCache | None = None) -> dict[str, object]:
    if cache is not None and name in cache:
        return cache[name]
    try:
        ok, detail = await asyncio.wait_for(check(), timeout)
    except asyncio.TimeoutError:
        ok, detail = False, f"no answer within {timeout:g} s"
    except Exception as e:  # a failing check is a result, not a crash
        ok, detail = False, f"{type(e).__name__}: {e}"
    result = {"name": name, "ok": bool(ok), "detail": detail}
    if cache is not None:
        cache[name] = result
    return result


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]

    async def store() -> tuple[bool, str]:
        await services.db.ping()
        depth = await services.deliveries.depth()
        return True, f"sqlite ok, {depth} deliveries pending"

    checks: list[tuple[str, HealthCheck]] = [("store", store)]
    checks += services.health_checks
    if services.health_cache is None:
        services.health_cache = TTLCache(maxsize=64, ttl=CHECK_TTL)
    cache = services.health_cache
    # the store is checked every time (cheap, and the one thing a probe must see at once)
    results = await asyncio.gather(*(_run(n, c, 5.0, None if n == "store" else cache) for n, c in checks))
    ok = all(r["ok"] for r in results)
    return web.json_response({"ok": ok, "checks": list(results)}, status=200 if ok else 503)


READY_TIMEOUT = 3.0


async def live(request: web.Request) -> web.Response:
    """Liveness: answering at all is the whole check."""
    return web.json_response({"ok": True})


async def ready(request: web.Request) -> web.Response:
    """Readiness: a real write goes through the store (the same path a webhook's 202 waits for)."""
    services = request.app[SERVICES]
    try:
        await asyncio.wait_for(services.db.execute(
            "INSERT INTO checkpoints (name, value, updated_at) VALUES ('readiness', 'ok', strftime('%s','now'))"
            " ON CONFLICT(name) DO UPDATE SET updated_at=excluded.updated_at"), READY_TIMEOUT)
    except Exception as e:  # the store cannot take a delivery now
        detail = "no answer" if isinstance(e, asyncio.TimeoutError) else f"{type(e).__name__}: {e}"
        log.warning("readiness: the store does not accept writes: %s", detail)
        return web.json_response({"ok": False, "detail": f"store does not accept writes: {detail}"}, status=503)
    return web.json_response({"ok": True, "detail": "store accepts writes"})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    m = services.metrics
    assert m is not None  # bot/app.py makes it with the services
    try:
        m.queue_depth.set(await services.deliveries.depth())
    except Exception:  # the gauge keeps its last value when the store is busy
        log.warning("could not read queue depth for /metrics")
    body = generate_latest(m.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def setup(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
