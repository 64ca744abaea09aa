"""POST /webhooks/github: every answer class of the contract, and what gets stored."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random

import pytest

from bot.logs import setup_logging
from bot.webhooks.signature import (
    MAX_BODY_BYTES,
    BadDelivery,
    MediaType,
    decode_payload,
    parse_delivery,
    sign,
    verify_signature,
)
from tests import payloads

URL = "/webhooks/github"


async def stored(services) -> list[dict]:
    rows = await services.db.fetchall("SELECT * FROM deliveries ORDER BY rowid")
    return [dict(r) for r in rows]


@pytest.fixture
async def env(make_services, webhook_client):
    services = await make_services()
    client = await webhook_client(services)
    return services, client


# ------------------------------------------------------------------ pure checks


def test_signature_matches_githubs_documented_example():
    # docs.github.com "Validating webhook deliveries" test values
    sig = sign(b"Hello, World!", "It's a Secret to Everybody")
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify_signature(b"Hello, World!", sig, "It's a Secret to Everybody")


@pytest.mark.parametrize("header", [
    None, "", "sha256=", "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0", "sha256=zz",
    "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
    "sha256=\u00e9\u00e9",
])
def test_bad_signature_headers_do_not_verify(header):
    assert not verify_signature(b"Hello, World!", header, "It's a Secret to Everybody")


def test_parse_delivery_checks_content_type_before_signature_before_headers():
    body = b"not json"
    with pytest.raises(BadDelivery) as e:
        parse_delivery({"content-type": "text/plain"}, body, "s")
    assert e.value.status == 415
    with pytest.raises(BadDelivery) as e:
        parse_delivery({"content-type": "application/json"}, body, "s")
    assert e.value.status == 401
    with pytest.raises(BadDelivery) as e:
        parse_delivery({"content-type": "application/json", "x-hub-signature-256": sign(body, "s")}, body, "s")
    assert (e.value.status, e.value.message) == (400, "missing X-GitHub-Event header")


@pytest.mark.parametrize("body", [b"payload=%7B%7D&payload=%7B%7D", b"other=1", b"payload=%5B1%5D", b"\xff\xfe"])
def test_form_bodies_without_exactly_one_object_payload_are_400(body):
    with pytest.raises(BadDelivery) as e:
        decode_payload(MediaType.FORM, body)
    assert e.value.status == 400


def test_deeply_nested_json_is_400_not_a_crash():
    with pytest.raises(BadDelivery) as e:
        decode_payload(MediaType.JSON, b"[" * 100000 + b"]" * 100000)
    assert e.value.status == 400


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("body", [
    b'{"n": NaN, "i": Infinity}',  # the stdlib reads these; orjson refuses them
    b'{"s": "\\ud800"}',  # a lone surrogate escape: orjson refuses it
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins, as in json.loads
    b'  {"x": [1.5e3, -0.0, "\\u00e9", 9223372036854775807, null, true]} ',
])
def test_json_bodies_decode_as_the_stdlib_does(body, fast):
    """Whichever parser the receiver's check uses, it accepts and reads what json.loads does."""
    got = decode_payload(MediaType.JSON, body, fast=fast)
    assert repr(got) == repr(json.loads(body))


def test_handlers_get_integers_beyond_64_bits_exactly():
    """The dispatcher's reading (the default) is the stdlib's: no integer turns into a float."""
    body = b'{"n": [123456789012345678901234567890, -9223372036854775809]}'
    assert decode_payload(MediaType.JSON, body) == {"n": [123456789012345678901234567890, -9223372036854775809]}


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("body", [b'{"a": 1', b"{'a': 1}", b'{"a": 1} x', b"[1, 2]", b'"s"', b"\xff{}",
                                  b"[" * 100000 + b"]" * 100000])
def test_json_bodies_the_stdlib_refuses_are_400(body, fast):
    with pytest.raises(BadDelivery) as e:
        decode_payload(MediaType.JSON, body, fast=fast)
    assert e.value.status == 400


# ------------------------------------------------------------------ accepted


@pytest.mark.parametrize("name", [n for n in payloads.names() if n != "ping"])
async def test_signed_delivery_is_stored_then_answered_202(env, webhook_secret, name):
    services, client = env
    body = payloads.load(name)
    headers, raw = payloads.signed(payloads.event_of(name), body, webhook_secret)
    resp = await client.post(URL, data=raw, headers=headers)
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    assert answer == {"delivery": headers["X-GitHub-Delivery"], "event": payloads.event_of(name),
                      "status": "accepted"}
    [row] = await stored(services)
    assert row["id"] == headers["X-GitHub-Delivery"]
    assert row["event"] == payloads.event_of(name)
    assert row["action"] == body.get("action")
    assert row["state"] == "pending"
    assert bytes(row["body"]) == raw
    assert row["installation_id"] == (body.get("installation") or {}).get("id")
    assert row["repo"] == (body.get("repository") or {}).get("full_name")


async def test_form_encoded_delivery_is_accepted_with_the_raw_body_stored(env, webhook_secret):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret, form=True)
    assert raw.startswith(b"payload=")
    resp = await client.post(URL, data=raw, headers=headers)
    assert resp.status == 202
    [row] = await stored(services)
    assert bytes(row["body"]) == raw  # the bytes the signature covers
    assert row["repo"] == "binder-examples/requirements"
    assert json.loads(row["headers"])["content-type"] == "application/x-www-form-urlencoded"


async def test_ping_answers_200_and_is_stored(env, webhook_secret):
    services, client = env
    headers, raw = payloads.signed("ping", payloads.load("ping"), webhook_secret)
    resp = await client.post(URL, data=raw, headers=headers)
    assert resp.status == 200
    assert (await resp.json())["status"] == "pong"
    assert [r["event"] for r in await stored(services)] == ["ping"]


async def test_redelivery_of_an_accepted_id_answers_200_and_stores_nothing_new(env, webhook_secret):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    first = await client.post(URL, data=raw, headers=headers)
    again = await client.post(URL, data=raw, headers=headers)
    assert (first.status, again.status) == (202, 200)
    assert (await again.json())["status"] == "duplicate"
    assert len(await stored(services)) == 1


async def test_concurrent_duplicates_store_one_row_and_answer_one_202(env, webhook_secret):
    import asyncio

    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    resps = await asyncio.gather(*(client.post(URL, data=raw, headers=headers) for _ in range(20)))
    assert sorted(r.status for r in resps) == [200] * 19 + [202]
    assert len(await stored(services)) == 1


async def test_accepting_a_delivery_wakes_the_dispatcher(env, webhook_secret):
    services, client = env
    ev = services.delivery_wakeup
    ev.clear()
    headers, raw = payloads.signed("push", payloads.load("push.tag"), webhook_secret)
    assert (await client.post(URL, data=raw, headers=headers)).status == 202
    assert ev.is_set()


async def test_only_github_headers_are_stored(env, webhook_secret):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    headers |= {"Authorization": "Bearer proxy-token", "Cookie": "session=abc"}
    assert (await client.post(URL, data=raw, headers=headers)).status == 202
    kept = json.loads((await stored(services))[0]["headers"])
    assert kept["x-github-event"] == "push"
    assert kept["x-hub-signature-256"] == headers["X-Hub-Signature-256"]
    assert "authorization" not in kept and "cookie" not in kept


async def test_request_path_does_no_outside_io(make_services, webhook_client, webhook_secret):
    """No GitHub client, and a closed HTTP session: storing and answering needs neither."""

    class NoGitHub:
        def __getattr__(self, name):
            raise AssertionError(f"receiver touched services.github.{name}")

    services = await make_services()
    services.github = NoGitHub()
    await services.session.close()
    client = await webhook_client(services)
    headers, raw = payloads.signed("pull_request", payloads.load("pull_request.opened"), webhook_secret)
    assert (await client.post(URL, data=raw, headers=headers)).status == 202


# ------------------------------------------------------------------ refused: 401


async def refused(services, client, status, *, data, headers):
    resp = await client.post(URL, data=data, headers=headers)
    assert resp.status == status, await resp.text()
    assert "error" in await resp.json()
    assert await stored(services) == []
    return resp


async def test_missing_signature_is_401(env, webhook_secret):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), None)
    resp = await refused(services, client, 401, data=raw, headers=headers)
    assert "missing X-Hub-Signature-256" in (await resp.json())["error"]


async def test_signature_with_the_wrong_secret_is_401(env):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), "not the secret")
    await refused(services, client, 401, data=raw, headers=headers)


async def test_tampered_body_is_401(env, webhook_secret):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    await refused(services, client, 401, data=raw.replace(b"refs/heads/main", b"refs/heads/evil"), headers=headers)


async def test_sha1_signature_alone_is_401(env, webhook_secret):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    del headers["X-Hub-Signature-256"]
    assert headers["X-Hub-Signature"].startswith("sha1=")
    await refused(services, client, 401, data=raw, headers=headers)


async def test_without_a_configured_secret_every_delivery_is_refused(make_services, webhook_client):
    services = await make_services(github_webhook_secret=None)
    client = await webhook_client(services)
    headers, raw = payloads.signed("push", payloads.load("push.branch"), "whatever")
    resp = await refused(services, client, 401, data=raw, headers=headers)
    assert "webhook secret not configured" in (await resp.json())["error"]
    health = await client.get("/health")
    assert health.status == 503
    webhooks = next(c for c in (await health.json())["checks"] if c["name"] == "webhooks")
    assert webhooks["ok"] is False and "GITHUB_WEBHOOK_SECRET" in webhooks["detail"]


async def test_health_lists_webhooks_ok_with_a_secret(env):
    _, client = env
    resp = await client.get("/health")
    checks = {c["name"]: c["ok"] for c in (await resp.json())["checks"]}
    assert checks["webhooks"] is True and resp.status == 200


# ------------------------------------------------------------------ refused: 400


def _signed_raw(raw: bytes, secret: str, **extra) -> dict[str, str]:
    headers, _ = payloads.signed("push", raw, secret)
    headers["X-Hub-Signature-256"] = sign(raw, secret)
    headers.update(extra)
    return {k: v for k, v in headers.items() if v is not None}


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"a": 1', b"\xff\xfe{}", b"null", b"[1, 2]", b'"text"'])
async def test_malformed_or_non_object_json_is_400(env, webhook_secret, raw):
    services, client = env
    await refused(services, client, 400, data=raw, headers=_signed_raw(raw, webhook_secret))


@pytest.mark.parametrize("missing", ["X-GitHub-Event", "X-GitHub-Delivery"])
async def test_missing_github_header_is_400(env, webhook_secret, missing):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    del headers[missing]
    resp = await refused(services, client, 400, data=raw, headers=headers)
    assert missing in (await resp.json())["error"]


@pytest.mark.parametrize("header,value", [
    ("X-GitHub-Delivery", "x" * 500), ("X-GitHub-Delivery", "a b"), ("X-GitHub-Delivery", "../../etc"),
    ("X-GitHub-Event", "Push Event"), ("X-GitHub-Event", "x" * 100),
])
async def test_malformed_github_header_is_400(env, webhook_secret, header, value):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    headers[header] = value
    await refused(services, client, 400, data=raw, headers=headers)


@pytest.mark.parametrize("raw", [b"payload=", b"nothing=here", b"payload=%7Bbroken", b"payload=1&payload=2"])
async def test_bad_form_payload_is_400(env, webhook_secret, raw):
    services, client = env
    headers = _signed_raw(raw, webhook_secret, **{"Content-Type": "application/x-www-form-urlencoded"})
    await refused(services, client, 400, data=raw, headers=headers)


# ------------------------------------------------------------------ refused: 413, 415


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "multipart/form-data; boundary=x", None])
async def test_unsupported_content_type_is_415(env, webhook_secret, ctype):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    if ctype is None:
        del headers["Content-Type"]
        data = raw  # aiohttp adds application/octet-stream to a bytes body
    else:
        headers["Content-Type"] = ctype
        data = raw
    await refused(services, client, 415, data=data, headers=headers)


async def test_json_content_type_with_charset_is_accepted(env, webhook_secret):
    _, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    headers["Content-Type"] = "application/json; charset=utf-8"
    assert (await client.post(URL, data=raw, headers=headers)).status == 202


async def test_content_type_is_checked_before_the_signature(env):
    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), None)
    headers["Content-Type"] = "text/plain"
    await refused(services, client, 415, data=raw, headers=headers)


def _padded_json(size: int) -> bytes:
    head, tail = b'{"pad": "', b'"}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


async def test_body_above_25_mib_is_413(env, webhook_secret):
    services, client = env
    raw = _padded_json(MAX_BODY_BYTES + 1)
    await refused(services, client, 413, data=raw, headers=_signed_raw(raw, webhook_secret))


async def test_size_is_checked_before_content_type_and_signature(env):
    services, client = env
    raw = b"x" * (MAX_BODY_BYTES + 1)
    await refused(services, client, 413, data=raw, headers={"Content-Type": "text/plain"})


async def test_chunked_body_above_25_mib_is_413_without_reading_it_all(env):
    """A chunked body (no Content-Length) is refused once it passes the cap: the 413 arrives
    while the client has sent only 1 MiB past it and is still holding the rest back.
    A receiver that reads the whole body first never answers here (it waits for the rest)."""
    services, client = env
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(f"POST {URL} HTTP/1.1\r\nHost: {client.server.host}\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: chunked-1\r\n"
                     f"X-Hub-Signature-256: sha256={'0' * 64}\r\n\r\n".encode())
        block = b"a" * (1024 * 1024)
        sent = 0
        for data in [b'{"pad": "'] + [block] * (MAX_BODY_BYTES // len(block) + 1):
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            sent += len(data)
        assert MAX_BODY_BYTES < sent <= MAX_BODY_BYTES + len(block) + 16
        # the body is not finished (no last chunk): only a receiver that stopped at the cap answers now
        async with asyncio.timeout(30):
            status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert await stored(services) == []


async def test_body_of_exactly_25_mib_is_not_refused_for_size(env, webhook_secret):
    services, client = env
    raw = _padded_json(MAX_BODY_BYTES)
    resp = await client.post(URL, data=raw, headers=_signed_raw(raw, webhook_secret))
    assert resp.status == 202
    assert len(bytes((await stored(services))[0]["body"])) == MAX_BODY_BYTES


# ------------------------------------------------------------------ never a 5xx for bad input


async def test_random_garbage_never_gets_a_5xx(env, webhook_secret):
    services, client = env
    rng = random.Random(1234)
    ctypes = ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "application/json; x"]
    for i in range(150):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        if i % 3 == 0:
            raw = b"payload=" + raw
        headers = {"Content-Type": rng.choice(ctypes)}
        if i % 2:
            headers["X-Hub-Signature-256"] = sign(raw, webhook_secret)
        if rng.random() < 0.7:
            headers["X-GitHub-Event"] = rng.choice(["push", "", "x" * 70, "pull_request", "ping"])
        if rng.random() < 0.7:
            headers["X-GitHub-Delivery"] = rng.choice([f"id-{i}", "", "\t", "a" * 200])
        resp = await client.post(URL, data=raw, headers=headers)
        assert resp.status < 500, (i, headers, raw, await resp.text())


async def test_store_failure_is_503(env, webhook_secret):
    services, client = env
    await services.db.close()
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    resp = await client.post(URL, data=raw, headers=headers)
    assert resp.status == 503
    assert "retry" in (await resp.json())["error"]


# ------------------------------------------------------------------ metrics and logs


async def test_metrics_count_deliveries_by_event_and_outcome(env, webhook_secret):
    services, client = env
    m = services.metrics
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    await client.post(URL, data=raw, headers=headers)
    await client.post(URL, data=raw, headers=headers)
    bad, raw2 = payloads.signed("push", payloads.load("push.tag"), "wrong")
    await client.post(URL, data=raw2, headers=bad)

    def count(event, outcome):
        return m.registry.get_sample_value("binder_prebuild_deliveries_total",
                                           {"event": event, "outcome": outcome}) or 0

    assert count("push", "accepted") == 1
    assert count("push", "duplicate") == 1
    assert count("unknown", "bad_signature") == 1  # unsigned input does not pick metric labels
    assert m.registry.get_sample_value("binder_prebuild_webhook_ack_seconds_count") == 3


async def test_log_lines_are_json_with_the_delivery_id_and_no_secret(env, webhook_secret):
    services, client = env
    out = io.StringIO()
    handler = setup_logging("DEBUG", stream=out, secrets=[webhook_secret])
    try:
        headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
        assert (await client.post(URL, data=raw, headers=headers)).status == 202
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    accepted = [r for r in lines if r["logger"] == "bot.webhooks.receiver" and "accepted" in r["msg"]]
    assert accepted and accepted[0]["delivery_id"] == headers["X-GitHub-Delivery"]
    assert webhook_secret not in out.getvalue()


async def test_body_shorter_than_its_content_length_is_400(env, webhook_secret):
    """A client that announces more bytes than it sends, then stops sending."""
    import asyncio
    import socket

    services, client = env
    headers, raw = payloads.signed("push", payloads.load("push.branch"), webhook_secret)
    head = f"POST {URL} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(raw) + 100}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head.encode() + raw)
    await writer.drain()
    writer.transport.get_extra_info("socket").shutdown(socket.SHUT_WR)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer else None
    assert status is None or 400 <= status < 500, answer[:200]  # never a 5xx; the server may just hang up
    assert await stored(services) == []
