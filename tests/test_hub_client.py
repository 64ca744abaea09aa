"""HubClient against a real JupyterHub: conflicts, already-running servers, progress, 5xx retries."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal

import aiohttp
import pytest

from launcher.hub import (HubClient, HubConflict, HubError, HubNotFound, HubUnavailable, parse_sse_lines,
                         retry_delays)
from tests.real_hub import start_hub

pytestmark = pytest.mark.hub


def options(hub, token=None):
    return {"image": hub.prefix + "octo-2ddemo-3d037c:" + "b" * 40, "token": token or secrets.token_urlsafe(32)}


def test_backoff_doubles_and_is_capped():
    assert retry_delays(4, 0.5) == [0.5, 1.0, 2.0]
    assert retry_delays(8, 1.0, cap=8.0) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert retry_delays(1, 0.5) == []


def test_sse_parsing_keeps_partial_events():
    events, rest = parse_sse_lines('data: {"progress": 10}\n\n\n\ndata: {"ready": true, "url": "/u/"}\n\ndata: {"x"')
    assert events == [{"progress": 10}, {"ready": True, "url": "/u/"}]
    assert rest == 'data: {"x"'


async def test_users_servers_conflicts_and_progress(hub):
    async with aiohttp.ClientSession() as session:
        client = HubClient(session, hub.api_url, hub.token, public_url=hub.url)
        assert (await client.health())[0] is True
        name = "client-" + secrets.token_hex(4)
        await client.create_user(name)
        with pytest.raises(HubConflict):  # a first attempt's 409 is a real conflict
            await client.create_user(name)
        with pytest.raises(HubError) as e:  # the Hub side refuses a foreign image
            await client.start_server(name, {"image": "docker.io/library/python:3", "token": "t" * 43})
        assert e.value.status == 400 and "not allowed" in e.value.message
        assert await client.start_server(name, options(hub)) in ("started", "pending")
        assert await client.start_server(name, options(hub)) in ("running", "pending")
        events = [e async for e in client.progress(name, timeout=60)]
        assert events[-1]["ready"] is True and events[-1]["url"] == f"/user/{name}/"
        users = await client.active_users()
        assert name in {u["name"] for u in users}
        assert repr(client) == f"HubClient({hub.api_url!r})" and hub.token not in repr(client)
        await client.delete_user(name)
        with pytest.raises(HubNotFound):
            await client.user(name)
        with pytest.raises(HubNotFound):
            [e async for e in client.progress(name)]
        await client.delete_user(name)  # deleting twice is fine


async def test_5xx_from_the_proxy_is_retried_until_the_hub_is_back(tmp_path):
    """The Hub dies behind its proxy (which answers 5xx): a call spends its retry budget
    and says the Hub is unavailable; a call waiting to retry when the Hub restarts gets
    its answer. The waits between retries are driven by the test, so how long the
    restart takes on a loaded machine does not matter."""
    hub = await asyncio.to_thread(start_hub, tmp_path / "hub")
    try:
        async with aiohttp.ClientSession() as session:
            instant: list[float] = []

            async def no_wait(delay: float) -> None:
                instant.append(delay)

            budget = HubClient(session, hub.api_url, hub.token, retries=3, backoff=0.5, sleep=no_wait)
            waits: list[float] = []
            waiting, back = asyncio.Event(), asyncio.Event()

            async def until_back(delay: float) -> None:
                waits.append(delay)
                waiting.set()
                await back.wait()  # the retry delay "passes" once the Hub is back

            client = HubClient(session, hub.api_url, hub.token, retries=3, backoff=0.5, sleep=until_back)
            assert (await client.active_users()) == []
            os.kill(hub.proc.pid, signal.SIGKILL)  # the proxy, its own process, stays up
            hub.proc.wait()
            async with session.get(hub.api_url + "/users") as resp:
                assert resp.status >= 500  # what a client sees now

            with pytest.raises(HubUnavailable):  # the whole budget: 3 attempts, 2 waits, then an honest error
                await budget.active_users()
            assert instant == [0.5, 1.0]
            assert [c.status >= 500 for c in budget.calls] == [True, True, True]

            call = asyncio.create_task(client.active_users())
            await asyncio.wait_for(waiting.wait(), 60)
            assert not call.done() and waits == [0.5]
            assert await asyncio.to_thread(_restart, hub)
            back.set()
            assert await asyncio.wait_for(call, 60) == []
            statuses = [c.status for c in client.calls]
            assert statuses[0] == 200 and statuses[1] >= 500 and statuses[2:] == [200]
            assert waits == [0.5]
    finally:
        hub.stop()
        _kill_proxy(hub)


def _restart(hub) -> bool:
    import subprocess
    import sys
    import time
    from pathlib import Path
    import urllib.request

    bindir = Path(sys.executable).parent
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with open(hub.log_path, "ab") as log:
        hub.proc = subprocess.Popen([str(bindir / "jupyterhub"), "-f", str(hub.root / "jupyterhub_config.py")],
                                    cwd=hub.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(hub.api_url + "/health", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _kill_proxy(hub) -> None:
    pid_file = hub.root / "proxy.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
