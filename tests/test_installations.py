"""Installation events and the API refresh keep GitHubState current (real SQLite, FakeGitHub)."""
from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import gidgethub.sansio
import pytest

from bot.github import installations
from bot.github.client import GitHubApp, RetryPolicy
from bot.github.identity import token_key
from bot.github.installations import refresh_installations, refresh_installations_soon, stop_refresh
from tests.fake_github import Fault

PAYLOADS = Path(__file__).parent / "payloads"
INST = 52198374  # the installation in tests/payloads
FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02, timeout=2)


def payload(name: str) -> dict:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


async def deliver(services, name: str, data: dict | None = None, delivery_id: str = "d-1") -> None:
    data = data if data is not None else payload(name)
    event = gidgethub.sansio.Event(data, event=name.split(".")[0], delivery_id=delivery_id)
    await installations.router.dispatch(event, None, services=services)


async def repos_of(services, inst_id: int = INST) -> list[str]:
    return await services.gh_state.repos(inst_id)


@pytest.fixture
async def services(make_services):
    return await make_services()


async def test_created_stores_installation_and_repositories(services):
    await deliver(services, "installation.created")
    [inst] = await services.gh_state.installations()
    assert (inst["id"], inst["account"], inst["account_type"], inst["suspended"]) == \
        (INST, "binder-examples", "Organization", 0)
    assert await repos_of(services) == ["binder-examples/conda", "binder-examples/requirements"]
    assert await services.gh_state.installation_for("binder-examples/requirements") == INST
    assert await services.gh_state.installation_for("BINDER-EXAMPLES/Requirements") == INST
    assert await services.gh_state.installation_for("binder-examples/elsewhere") is None


async def test_redelivery_changes_nothing(services):
    await deliver(services, "installation.created")
    await deliver(services, "installation.created")
    assert len(await services.gh_state.installations()) == 1
    assert len(await repos_of(services)) == 2


async def test_repositories_added_and_removed(services):
    await deliver(services, "installation.created")
    await deliver(services, "installation_repositories.added")
    assert "binder-examples/julia-python" in await repos_of(services)
    await deliver(services, "installation_repositories.removed")
    assert "binder-examples/julia-python" not in await repos_of(services)
    assert len(await repos_of(services)) == 2


async def test_added_before_created_keeps_both(services):
    """Installation events carry no repository, so the dispatcher may run them out of order."""
    await deliver(services, "installation_repositories.added")
    await deliver(services, "installation.created")
    assert await repos_of(services) == ["binder-examples/conda", "binder-examples/julia-python",
                                        "binder-examples/requirements"]


async def test_suspend_and_unsuspend(services):
    await deliver(services, "installation.created")
    await deliver(services, "installation.suspend")
    assert await services.gh_state.installation_for("binder-examples/requirements") is None
    assert (await services.gh_state.installations())[0]["suspended"] == 1
    assert len(await repos_of(services)) == 2  # kept for when it comes back
    await deliver(services, "installation.unsuspend")
    assert await services.gh_state.installation_for("binder-examples/requirements") == INST


async def test_deleted_forgets_everything(services):
    await deliver(services, "installation.created")
    await deliver(services, "installation.deleted")
    assert await services.gh_state.installations() == []
    assert await services.gh_state.installation_for("binder-examples/requirements") is None


async def test_new_permissions_drop_cached_tokens(make_services, fake_github, github_settings):
    fake_github.add_installation(["binder-examples/requirements"], installation_id=INST)
    services = await make_services(**vars(github_settings()))
    services.github = GitHubApp(services.session, services.settings, policy=FAST)
    await services.github.installation_client(INST).getitem("/repos/binder-examples/requirements")
    data = copy.deepcopy(payload("installation.created"))
    data["action"] = "new_permissions_accepted"
    data.pop("repositories")
    await deliver(services, "installation", data)
    await services.github.installation_client(INST).getitem("/repos/binder-examples/requirements")
    assert len(fake_github.token_requests(INST)) == 2  # the old token had the old permissions


async def test_suspend_drops_cached_tokens(make_services, fake_github, github_settings):
    fake_github.add_installation(["binder-examples/requirements"], installation_id=INST)
    services = await make_services(**vars(github_settings()))
    services.github = GitHubApp(services.session, services.settings, policy=FAST)
    await services.github.installation_token(INST)
    await deliver(services, "installation.suspend")
    assert services.github.identity.cached(token_key(INST)) is None


# --- refresh from the API ------------------------------------------------------------------

async def test_refresh_makes_the_store_match_github(make_services, fake_github, github_settings):
    fake_github.add_installation([f"org/repo{i}" for i in range(130)], installation_id=11, account="org",
                                 account_type="Organization")
    fake_github.add_installation(["sleepy/one"], installation_id=12, suspended=True)
    services = await make_services(**vars(github_settings()))
    # the store knows a stale installation, a stale repo, and the suspended one's repo
    await services.gh_state.upsert_installation(99, "gone")
    await services.gh_state.add_repos(99, [("gone/repo", False)])
    await services.gh_state.upsert_installation(11, "org")
    await services.gh_state.add_repos(11, [("org/removed-while-down", False)])
    await services.gh_state.upsert_installation(12, "sleepy")
    await services.gh_state.add_repos(12, [("sleepy/one", True)])
    github = GitHubApp(services.session, services.settings, policy=FAST)

    result = await refresh_installations(github, services.gh_state)

    assert (result.installations, result.repositories, result.removed, result.failed) == (2, 130, 1, [])
    insts = {i["id"]: i for i in await services.gh_state.installations()}
    assert set(insts) == {11, 12}
    assert insts[11]["account_type"] == "Organization" and insts[12]["suspended"] == 1
    assert len(await services.gh_state.repos(11)) == 130  # two pages of /installation/repositories
    assert "org/removed-while-down" not in await services.gh_state.repos(11)
    assert await services.gh_state.repos(12) == ["sleepy/one"]
    assert len(fake_github.calls("GET", "/installation/repositories")) == 2
    assert fake_github.token_requests(12) == []  # no token for a suspended installation


async def test_one_failing_installation_does_not_stop_the_others(make_services, fake_github, github_settings):
    fake_github.add_installation(["a/one"], installation_id=21)
    fake_github.add_installation(["b/two"], installation_id=22)
    fake_github.inject("POST", "/app/installations/21/access_tokens", Fault.not_found())
    services = await make_services(**vars(github_settings()))
    await services.gh_state.upsert_installation(21, "a")
    await services.gh_state.add_repos(21, [("a/one", False)])
    result = await refresh_installations(GitHubApp(services.session, services.settings, policy=FAST),
                                         services.gh_state)
    assert result.failed == [21]
    assert await services.gh_state.repos(21) == ["a/one"]  # kept
    assert await services.gh_state.repos(22) == ["b/two"]


async def test_background_refresh_retries_until_it_works(make_services, fake_github, github_settings):
    fake_github.add_installation(["a/one"], installation_id=31)
    fake_github.inject("GET", "/app/installations", *[Fault.server_error(503)] * 5)  # 2 attempts per try
    services = await make_services(**vars(github_settings()))
    services.github = GitHubApp(services.session, services.settings, policy=FAST)
    task = refresh_installations_soon(services, retry_base=0.01, retry_cap=0.05, interval=None)
    assert task is not None
    assert refresh_installations_soon(services) is task  # one at a time
    await asyncio.wait_for(task, 10)
    assert await services.gh_state.repos(31) == ["a/one"]
    assert fake_github.pending_faults() == 0


async def test_background_refresh_is_stoppable(make_services, fake_github, github_settings):
    fake_github.inject("GET", "/app/installations", *[Fault.server_error(503)] * 100)
    services = await make_services(**vars(github_settings()))
    services.github = GitHubApp(services.session, services.settings, policy=FAST)
    task = refresh_installations_soon(services, retry_base=0.01, retry_cap=0.02)
    await asyncio.sleep(0.2)
    assert not task.done()  # failing, retrying, not crashing
    await stop_refresh(services)
    assert task.cancelled()


async def test_no_credentials_no_refresh(services):
    assert refresh_installations_soon(services) is None


# --- through the real receiver and dispatcher -------------------------------------------------

async def test_signed_installation_deliveries_update_the_store(make_services, webhook_client, webhook_secret,
                                                               fake_github, github_settings):
    from gidgethub.routing import Router

    from bot.webhooks.dispatcher import Dispatcher
    from tests import payloads

    services = await make_services(**vars(github_settings(github_webhook_secret=webhook_secret)))
    services.github = GitHubApp(services.session, services.settings, policy=FAST)
    client = await webhook_client(services)
    dispatcher = Dispatcher(services, Router(installations.router), idle_poll=0.05)
    await dispatcher.start()
    try:
        for name in ("installation.created", "installation_repositories.added", "installation.suspend"):
            headers, raw = payloads.signed(name.split(".")[0], payload(name), webhook_secret)
            resp = await client.post("/webhooks/github", data=raw, headers=headers)
            assert resp.status == 202, await resp.text()
            delivery = headers["X-GitHub-Delivery"]
            for _ in range(200):
                row = await services.deliveries.get(delivery)
                if row["state"] == "done":
                    break
                await asyncio.sleep(0.02)
            assert row["state"] == "done", row
    finally:
        await dispatcher.stop(grace=1)
    assert len(await repos_of(services)) == 3
    assert (await services.gh_state.installations())[0]["suspended"] == 1
    assert fake_github.requests == []  # installation events need no GitHub call
