"""POST /webhooks/github against abuse: held bodies cost nothing, replayed bodies are not processed."""
from __future__ import annotations

import asyncio
import json

from aiohttp import web
from gidgethub.routing import Router

from bot.store.deliveries import NewDelivery
from bot.store.replays import Intake, IntakeStore, SignedDelivery, digest_of
from bot.webhooks.dispatcher import Dispatcher
from tests import payloads

URL = "/webhooks/github"


async def stored(services) -> list[dict]:
    return [dict(r) for r in await services.db.fetchall("SELECT * FROM deliveries ORDER BY rowid")]


def _entered_middleware(entered: asyncio.Event):
    @web.middleware
    async def mw(request, handler):
        entered.set()  # the handler then runs, in this same step, until it waits for the body
        return await handler(request)

    return mw


async def _hold_body(client, headers: dict[str, str], announced: int, sent: bytes):
    head = f"POST {URL} HTTP/1.1\r\nHost: test\r\nContent-Length: {announced}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head.encode() + sent)
    await writer.drain()
    return reader, writer


async def test_an_unsigned_post_that_holds_its_body_does_not_slow_the_dispatcher(make_services, webhook_client):
    """Issue 11 item 6: the request is not counted in hand before it is verified."""
    services = await make_services()
    entered = asyncio.Event()
    client = await webhook_client(services, middlewares=[_entered_middleware(entered)], body_timeout=600)
    dispatcher = Dispatcher(services, Router(), concurrency=8)
    reader, writer = await _hold_body(client, {"Content-Type": "application/json", "X-GitHub-Event": "push",
                                               "X-GitHub-Delivery": "held-1"}, 1000, b'{"zen": ')
    try:
        await asyncio.wait_for(entered.wait(), 30)
        assert services.ingest.active == 0
        assert dispatcher._limit() == 8  # processing keeps its full concurrency
    finally:
        writer.close()


async def test_a_body_that_never_arrives_is_answered_408(make_services, webhook_client, webhook_secret):
    """Issue 11 item 6: the body read is bounded (the timeout is an option so the test need not wait 10 s)."""
    services = await make_services()
    client = await webhook_client(services, body_timeout=0.2)
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    reader, writer = await _hold_body(client, headers, len(raw), raw[:20])
    try:
        answer = await asyncio.wait_for(reader.read(), 30)  # without a bound this never returns
    finally:
        writer.close()
    assert answer.split(b" ", 2)[1] == b"408", answer[:200]
    assert b"not received within" in answer
    assert await stored(services) == []
    assert services.ingest.active == 0


async def test_a_verified_delivery_counts_as_in_hand_while_it_is_stored(make_services, webhook_client,
                                                                        webhook_secret):
    services = await make_services()
    client = await webhook_client(services)
    seen = []
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    delivery_writer = services.delivery_writer  # made when the app started
    original = delivery_writer.add

    async def add(item):
        seen.append(services.ingest.active)
        return await original(item)

    delivery_writer.add = add
    assert (await client.post(URL, data=raw, headers=headers)).status == 202
    assert seen == [1] and services.ingest.active == 0


# ------------------------------------------------------------------ replays (item 15)


async def test_a_replayed_body_under_a_new_delivery_id_is_acknowledged_not_processed(
        make_services, webhook_client, webhook_secret):
    services = await make_services()
    client = await webhook_client(services)
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    first = await client.post(URL, data=raw, headers=headers)
    assert first.status == 202
    for i in range(3):
        replay = dict(headers, **{"X-GitHub-Delivery": f"attacker-{i}"})
        resp = await client.post(URL, data=raw, headers=replay)
        assert resp.status == 200
        assert await resp.json() == {"delivery": f"attacker-{i}", "event": "push", "status": "replay"}
    assert [r["id"] for r in await stored(services)] == [headers["X-GitHub-Delivery"]]
    # GitHub's own redelivery (same id, same body) is still the ordinary duplicate
    again = await client.post(URL, data=raw, headers=headers)
    assert (again.status, (await again.json())["status"]) == (200, "duplicate")
    m = services.metrics
    assert m.registry.get_sample_value("binder_prebuild_deliveries_total",
                                       {"event": "push", "outcome": "replay"}) == 3


async def test_replays_in_one_burst_store_one_delivery(make_services, webhook_client, webhook_secret):
    services = await make_services()
    client = await webhook_client(services)
    headers, raw = payloads.signed("push", payloads.load("push.tag"), webhook_secret)
    resps = await asyncio.gather(*(client.post(URL, data=raw, headers=dict(headers, **{"X-GitHub-Delivery": f"d-{i}"}))
                                   for i in range(20)))
    assert sorted(r.status for r in resps) == [200] * 19 + [202]
    assert len(await stored(services)) == 1


async def test_a_different_body_is_not_a_replay(make_services, webhook_client, webhook_secret):
    services = await make_services()
    client = await webhook_client(services)
    body = payloads.load("push.branch")
    h1, raw1 = payloads.signed("push", body, webhook_secret)
    h2, raw2 = payloads.signed("push", dict(body, after="1" * 40), webhook_secret)
    assert (await client.post(URL, data=raw1, headers=h1)).status == 202
    assert (await client.post(URL, data=raw2, headers=h2)).status == 202
    assert len(await stored(services)) == 2


def _signed(delivery_id: str, raw: bytes, secret: str) -> SignedDelivery:
    headers, _ = payloads.signed("push", raw, secret, delivery_id=delivery_id)
    return SignedDelivery(NewDelivery(id=delivery_id, event="push", headers={}, body=raw),
                          digest_of(headers["X-Hub-Signature-256"]))


async def test_the_replay_window_is_githubs_delivery_window_then_pruned(make_services, webhook_secret):
    """Driven clock: within 3 days a replay is refused; after, the digest is pruned and it is new again."""
    services = await make_services()
    now = [1_000_000.0]
    store = IntakeStore(services.db, clock=lambda: now[0])
    raw = json.dumps({"zen": "Keep it logically awesome."}).encode()
    assert await store.add_many([_signed("a", raw, webhook_secret)]) == [Intake.NEW]
    now[0] += 3 * 24 * 3600 - 1
    assert await store.add_many([_signed("b", raw, webhook_secret), _signed("a", raw, webhook_secret)]) == [
        Intake.REPLAY, Intake.DUPLICATE]
    now[0] += 2
    assert await store.add_many([_signed("c", raw, webhook_secret)]) == [Intake.NEW]
    now[0] += 3 * 24 * 3600 + 3600
    await store.add_many([_signed("d", b"{}", webhook_secret)])  # an hourly prune runs with this batch
    rows = await services.db.fetchall("SELECT delivery_id FROM delivery_bodies ORDER BY delivery_id")
    assert [r["delivery_id"] for r in rows] == ["d"]
