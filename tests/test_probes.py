"""Probes that keep the intake up, and a graceful stop.

(e) with the registry and the Hub down, liveness and readiness answer 200 and
webhooks are still accepted, while ``/health`` answers 503 and says why; readiness
fails only when the store cannot take a write. On SIGTERM ``serve`` stops listening,
finishes answering a webhook that was in flight, and exits well within the grace period.
"""
from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
import uuid

import pytest

from tests import payloads
from tests.test_crash import SECRET, Service, free_port


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hub/api"


async def test_e_registry_and_hub_down_probes_stay_green_and_webhooks_are_taken(prebuild_bot, registry_double):
    registry, _ = registry_double
    registry.down = True  # the registry answers 503 to everything
    bot = await prebuild_bot(jupyterhub_api_url=closed_url(), jupyterhub_api_token="t0ken")

    health = await bot.client.get("/health")
    assert health.status == 503
    checks = {c["name"]: c for c in (await health.json())["checks"]}
    assert checks["hub"]["ok"] is False and checks["hub"]["detail"]
    images_check = next(c for n, c in checks.items() if "image" in n or "registry" in n)
    assert images_check["ok"] is False and images_check["detail"]
    assert checks["store"]["ok"] is True

    for path in ("/health/live", "/health/ready"):
        resp = await bot.client.get(path)
        assert resp.status == 200, (path, await resp.text())
        assert (await resp.json())["ok"] is True

    sha = bot.commit("During the outage", branch="main")
    delivery = await bot.send("push", bot.push(sha, branch="main"))  # asserts 202
    assert (await bot.services.deliveries.get(delivery)) is not None


async def test_readiness_fails_when_the_store_cannot_take_a_write_liveness_does_not(prebuild_bot, monkeypatch):
    bot = await prebuild_bot()

    async def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(bot.services.db, "execute", disk_full)
    ready = await bot.client.get("/health/ready")
    assert ready.status == 503 and "disk is full" in (await ready.json())["detail"]
    assert (await bot.client.get("/health/live")).status == 200


async def test_stopping_finishes_the_webhook_in_flight_before_closing_the_store(fake_github, github_settings,
                                                                                tmp_path, monkeypatch,
                                                                                registry_double):
    """What SIGTERM triggers (aiohttp's runner cleanup): stop listening, wait for the request in
    the handler (its durable write), then stop the workers and close the store."""
    import aiohttp
    from aiohttp import web

    import bot.app
    from bot.appkeys import SERVICES
    from bot.cli import IN_FLIGHT_TIMEOUT
    from bot.recovery.service import Timing
    from tests.fake_builders import InstantBuilder

    from bot.store.replays import IntakeStore

    entered = asyncio.Event()
    real_add_many = IntakeStore.add_many

    async def slow_add_many(self, items):
        entered.set()
        await asyncio.sleep(1.0)  # the store is slow: the request is in flight when the stop begins
        return await real_add_many(self, items)

    monkeypatch.setattr(IntakeStore, "add_many", slow_add_many)
    from bot.registry import RegistryClient

    registry, registry_url = registry_double
    app = bot.app.create_app(github_settings(data_dir=tmp_path / "data"), builder=lambda s: InstantBuilder(registry),
                             images=lambda s: RegistryClient(s.session, registry_url),
                             recovery=Timing(start_delay=1e6, prune_every=1e6))
    runner = web.AppRunner(app, shutdown_timeout=IN_FLIGHT_TIMEOUT)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    services = app[SERVICES]
    headers, raw = payloads.signed("ping", payloads.load("ping"), fake_github.webhook_secret,
                                   delivery_id=str(uuid.uuid4()))
    async with aiohttp.ClientSession() as session:
        post = asyncio.ensure_future(session.post(f"http://127.0.0.1:{port}/webhooks/github", data=raw,
                                                  headers=headers))
        await asyncio.wait_for(entered.wait(), 10)
        stopping = asyncio.ensure_future(runner.cleanup())
        await asyncio.sleep(0.2)
        with pytest.raises(aiohttp.ClientConnectionError):  # no new connections once stopping
            await session.get(f"http://127.0.0.1:{port}/health/live")
        resp = await post
        assert resp.status == 200 and (await resp.json())["status"] == "pong"
        stored_before_close = await services.deliveries.get(headers["X-GitHub-Delivery"])
        await stopping
    assert stored_before_close is not None


async def test_sigterm_exits_cleanly_within_the_grace_period(tmp_path):
    from bot.cli import SHUTDOWN_BUDGET

    service = Service(tmp_path / "data", free_port(), tmp_path)
    await service.start()
    headers, raw = payloads.signed("ping", payloads.load("ping"), SECRET, delivery_id=str(uuid.uuid4()))
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{service.url}/webhooks/github", data=raw, headers=headers) as resp:
            assert resp.status == 200
    stopping = time.monotonic()
    service.proc.send_signal(__import__("signal").SIGTERM)
    code = await asyncio.get_running_loop().run_in_executor(None, service.proc.wait, SHUTDOWN_BUDGET)
    assert code == 0, service.log_tail()
    assert time.monotonic() - stopping < SHUTDOWN_BUDGET
    db = sqlite3.connect(tmp_path / "data" / "binder-prebuild.sqlite")
    assert db.execute("SELECT COUNT(*) FROM deliveries WHERE id=?", (headers["X-GitHub-Delivery"],)).fetchone()[0] == 1
