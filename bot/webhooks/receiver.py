"""``POST /webhooks/github``: verify, store durably, answer. Nothing else.

The request path does no GitHub, Kubernetes or registry I/O: a delivery is
checked (size, content type, signature, headers, JSON: in that order), written
to the store through the group-commit writer, and answered 202 (200 for a ping
or a delivery id already accepted). The dispatcher, woken by an event, does
the work later. Bad input always gets a 4xx; only a store failure is a 503
(GitHub then shows the delivery as failed and it can be redelivered).

Unsigned requests cost little and hold nothing: the body must arrive within
``BODY_TIMEOUT`` (408 otherwise), and a request counts as in hand (the gauge
that makes the dispatcher yield to intake) only once its signature is verified.
A body already accepted under another delivery id is a replay: 200, not stored
(bot.store.replays).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bot.appkeys import SERVICES
from bot.logs import delivery_context
from bot.services import Services
from bot.store.deliveries import NewDelivery
from bot.store.replays import Intake, IntakeStore, SignedDelivery, digest_of
from bot.webhooks.signature import (
    MAX_BODY_BYTES,
    BadDelivery,
    Outcome,
    ParsedDelivery,
    media_type,
    parse_delivery,
    too_large,
)
from bot.webhooks.writer import DeliveryWriter

log = logging.getLogger(__name__)

ROUTE = "/webhooks/github"
_READ_CHUNK = 256 * 1024

BODY_TIMEOUT = web.AppKey("webhook_body_timeout", float)
DEFAULT_BODY_TIMEOUT = 10.0
"""Seconds a client has to send the whole body (GitHub itself gives up on a delivery after 10 s)."""


def setup(app: web.Application, *, body_timeout: float = DEFAULT_BODY_TIMEOUT) -> None:
    """Mount the route; the writer lives as long as the app (after the services exist)."""
    app[BODY_TIMEOUT] = body_timeout
    app.router.add_post(ROUTE, receive)
    app.cleanup_ctx.append(_writer_ctx)


async def _writer_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    writer = DeliveryWriter(IntakeStore(services.db))
    writer.start()
    services.delivery_writer = writer
    if not services.settings.github_webhook_secret:
        log.warning("GITHUB_WEBHOOK_SECRET is not set: %s refuses every delivery (401) until it is", ROUTE)
    from bot.web.health import add_check

    add_check(services, "webhooks", lambda: _health(services))
    try:
        yield
    finally:
        await writer.close()


async def _health(services: Services) -> tuple[bool, str]:
    if not services.settings.github_webhook_secret:
        return False, "GITHUB_WEBHOOK_SECRET not configured: webhooks are refused"
    return True, f"receiving on {ROUTE}"


async def receive(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    started = time.perf_counter()
    event = "unknown"  # a metrics label only once the signature proves GitHub sent it
    try:
        status, outcome, body, event = await _receive(request, services)
    except BadDelivery as e:
        status, outcome, body = e.status, e.outcome, {"error": e.message}
        log.info("refused webhook: %d %s", e.status, e.message,
                 extra={"delivery_id": _safe_id(request), "status": e.status})
    metrics = services.metrics
    if metrics is not None:
        _counter(metrics, event, outcome).inc()
        metrics.ack_latency.observe(time.perf_counter() - started)
    return _answer(body, status)


def _answer(body: dict[str, str], status: int) -> web.Response:
    """The JSON answer. Acknowledgements (the hot path) are formatted directly: their
    values are a checked delivery id, a checked event name and a fixed word, none of
    which needs escaping; anything else goes through the JSON encoder."""
    if body.keys() == _ACK_KEYS:
        text = '{"delivery": "%s", "event": "%s", "status": "%s"}' % (
            body["delivery"], body["event"], body["status"])
    else:
        text = json.dumps(body)
    return web.Response(text=text, status=status, content_type="application/json")


_ACK_KEYS = {"delivery", "event", "status"}


def _counter(metrics: Any, event: str, outcome: Outcome) -> Any:
    """The deliveries counter for (event, outcome), looked up once (labels() takes a lock)."""
    cache = metrics.__dict__.setdefault("_webhook_counters", {})
    child = cache.get((event, outcome))
    if child is None:
        child = cache[(event, outcome)] = metrics.deliveries.labels(event=event, outcome=outcome.value)
    return child


async def _receive(request: web.Request, services: Services) -> tuple[int, Outcome, dict[str, str], str]:
    secret = services.settings.github_webhook_secret
    # cheap refusals first, before a byte of the body is read
    if too_large(request.content_length):
        raise BadDelivery(413, Outcome.TOO_LARGE, f"payload larger than {MAX_BODY_BYTES} bytes")
    if not secret:
        raise BadDelivery(401, Outcome.NO_SECRET,
                          "webhook secret not configured; this service refuses unsigned webhooks")
    media_type(request.headers.get("Content-Type"))
    raw = await _read_in_time(request, request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT))
    parsed = parse_delivery(request.headers, raw, secret)
    # verified: from here on the request is GitHub's and counts as in hand
    gauge = services.ingest
    gauge.enter()
    try:
        return await _store(services, parsed, raw)
    finally:
        gauge.leave()


async def _store(services: Services, parsed: ParsedDelivery,
                 raw: bytes) -> tuple[int, Outcome, dict[str, str], str]:
    with delivery_context(parsed.delivery_id):
        writer = services.delivery_writer
        assert writer is not None  # made in setup's startup hook
        try:
            intake = await writer.add(SignedDelivery(NewDelivery(
                id=parsed.delivery_id, event=parsed.event, headers=parsed.headers, body=raw,
                action=parsed.action, installation_id=parsed.installation_id, repo=parsed.repo,
            ), digest_of(parsed.headers["x-hub-signature-256"])))
        except Exception as e:  # the store is down: a dependency failure, not bad input
            log.error("could not store %s delivery: %s", parsed.event, e)
            return 503, Outcome.UNAVAILABLE, {"error": "delivery store unavailable; retry later"}, parsed.event
        answer = {"delivery": parsed.delivery_id, "event": parsed.event}
        if intake is Intake.REPLAY:
            log.warning("%s delivery replays a body already accepted under another delivery id: not processed",
                        parsed.event)
            return 200, Outcome.REPLAY, {**answer, "status": "replay"}, parsed.event
        if intake is Intake.DUPLICATE:
            log.info("%s delivery already accepted", parsed.event)
            return 200, Outcome.DUPLICATE, {**answer, "status": "duplicate"}, parsed.event
        services.delivery_wakeup.set()
        if parsed.event == "ping":
            log.debug("ping received (zen: %s)", str(parsed.payload.get("zen", ""))[:100])
            return 200, Outcome.PING, {**answer, "status": "pong"}, parsed.event
        # DEBUG: the dispatcher's "processed" line (INFO) is the one per delivery operators read
        log.debug("accepted %s%s delivery for %s", parsed.event,
                 f".{parsed.action}" if parsed.action else "", parsed.repo or "-")
        return 202, Outcome.ACCEPTED, {**answer, "status": "accepted"}, parsed.event


async def _read_in_time(request: web.Request, timeout: float) -> bytes:
    """The body, or 408 if it does not arrive within ``timeout`` s (a held connection costs nothing)."""
    try:
        async with asyncio.timeout(timeout):
            return await _read_capped(request)
    except TimeoutError:
        raise BadDelivery(408, Outcome.BODY_TIMEOUT, f"request body not received within {timeout:g} s") from None


async def _read_capped(request: web.Request) -> bytes:
    """The raw body, never reading more than the cap (chunked bodies have no Content-Length)."""
    try:
        length = request.content_length
        if length is not None:  # already known to be within the cap: one read
            return await request.content.readexactly(length)
        buf = bytearray()
        while chunk := await request.content.read(_READ_CHUNK):
            buf += chunk
            if len(buf) > MAX_BODY_BYTES:
                raise BadDelivery(413, Outcome.TOO_LARGE, f"payload larger than {MAX_BODY_BYTES} bytes")
        return bytes(buf)
    except BadDelivery:
        raise
    except Exception as e:  # truncated or broken transfer: the client's fault
        raise BadDelivery(400, Outcome.BAD_REQUEST, f"could not read request body: {type(e).__name__}") from None


def _safe_id(request: web.Request) -> str | None:
    """The delivery header for a log line about a refused request (bounded, printable)."""
    v = request.headers.get("X-GitHub-Delivery")
    if not v:
        return None
    v = v[:64]
    return v if v.isprintable() else None
