"""Spare Hub users: a repository launched lately launches next time on one Hub call (a real JupyterHub)."""
from __future__ import annotations

import asyncio

import pytest

from launcher.setup import state_of

pytestmark = pytest.mark.hub


def user_of(url: str) -> str:
    return url.split("/user/", 1)[1].split("/", 1)[0]


def idle_users(hub, prefix: str = "octo-demo-") -> list[str]:
    """Hub users of ours without a server: the spares."""
    return sorted(u["name"] for u in hub.users()
                  if u["name"].startswith(prefix) and not any(not s.get("stopped") for s in (u.get("servers") or {}).values()))


async def until(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def launch(ln, path: str = "/build/gh/octo/demo/main") -> dict:
    status, _, events = await ln.events(path)
    assert status == 200 and events[-1]["phase"] == "ready", events[-1:]
    return events[-1]


def spares(ln) -> int:
    """Spares the launcher holds (made: the Hub answered)."""
    return len(state_of(ln.services).launches.spares)


def hub_calls_since(ln, n: int) -> list[str]:
    return [f"{c.method} {c.path}" for c in list(ln.services.hub.calls)[n:] if c.path != "/health"]


async def test_the_next_launch_of_a_repository_starts_its_server_on_one_hub_call(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo", "main")
    first = user_of((await launch(ln))["url"])
    assert first.startswith("octo-demo-")
    await until(lambda: spares(ln) == 1)  # made after the launch was ready, not before
    (spare,) = idle_users(hub)

    n = len(ln.services.hub.calls)
    ready = await launch(ln)
    assert user_of(ready["url"]) == spare  # named as any launch user: <owner>-<repo>-<random>
    assert hub_calls_since(ln, n)[0] == f"POST /users/{spare}/server"
    assert not any(c.startswith("POST /users/") and not c.endswith("/server") for c in hub_calls_since(ln, n)[:2])
    assert sorted(hub.running_servers()) == sorted([f"{first}/", f"{spare}/"])
    await until(lambda: len(idle_users(hub)) == 1 and idle_users(hub) != [spare])  # the next one
    assert state_of(ln.services).launches.spares.taken == 1


async def test_spares_are_bounded_expire_and_are_deleted_on_close(hub, launcher):
    ln = await launcher(hub=hub, spare_hub_users=1, attach_options={"spare_ttl": 1.5})
    await ln.install("octo/demo", "octo/other")
    await ln.prebuild("octo/demo", "main")
    await ln.prebuild("octo/other", "main")
    await launch(ln)
    await until(lambda: len(idle_users(hub)) == 1)
    await launch(ln, "/build/gh/octo/other/main")
    # one spare in all: the newer repository's; the older spare is deleted, not left to the culler
    await until(lambda: idle_users(hub, "octo-") and all(n.startswith("octo-other-") for n in idle_users(hub, "octo-")))
    assert len(idle_users(hub, "octo-")) == 1
    await until(lambda: idle_users(hub, "octo-") == [], timeout=10)  # older than the TTL: deleted

    await launch(ln)
    await until(lambda: len(idle_users(hub)) == 1)
    await state_of(ln.services).launches.close()  # the service stops: its spares go with it
    assert idle_users(hub) == []


async def test_a_spare_deleted_behind_our_back_is_made_again_on_the_launch(hub, launcher):
    ln = await launcher(hub=hub)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo", "main")
    await launch(ln)
    await until(lambda: len(idle_users(hub)) == 1)
    (spare,) = idle_users(hub)
    assert hub.api("DELETE", f"/users/{spare}")[0] == 204  # the idle culler (--cull-users) got it first
    ready = await launch(ln)
    assert user_of(ready["url"]) == spare
    assert f"{spare}/" in hub.running_servers()


async def test_a_refused_launch_keeps_the_spare_for_the_next(hub, launcher):
    ln = await launcher(hub=hub, max_servers_per_repo=1)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo", "main")
    first = user_of((await launch(ln))["url"])
    await until(lambda: len(idle_users(hub)) == 1)
    (spare,) = idle_users(hub)
    _, _, events = await ln.events("/build/gh/octo/demo/main")
    assert events[-1]["phase"] == "failed" and events[-1].get("limit") == "per-repository"
    assert idle_users(hub) == [spare]  # not used, not deleted
    hub.api("DELETE", f"/users/{first}/server")
    state_of(ln.services).counter.stopped(first)
    ready = await launch(ln)
    assert user_of(ready["url"]) == spare


async def test_without_spares_every_launch_makes_its_user(hub, launcher):
    ln = await launcher(hub=hub, spare_hub_users=0)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo", "main")
    await launch(ln)
    n = len(ln.services.hub.calls)
    ready = await launch(ln)
    user = user_of(ready["url"])
    assert hub_calls_since(ln, n)[:2] == [f"POST /users/{user}", f"POST /users/{user}/server"]
    assert idle_users(hub) == []
