"""Which GitHub failures pass and which do not: the real client's exceptions, from FakeGitHub's real answers."""
from __future__ import annotations

import time

import aiohttp
import pytest

from bot.github.client import GitHubApp, RetryPolicy
from bot.github.errors import ErrorKind, classify_github_error
from bot.github.identity import AppIdentity
from tests.fake_github import Fault, settings_for

FAST = RetryPolicy(attempts=2, backoff=0.001, max_backoff=0.002, timeout=2.0, rate_retries=0, max_rate_wait=0.0)


@pytest.fixture
async def app(fake_github, tmp_path):
    async with aiohttp.ClientSession() as session:
        settings = settings_for(fake_github, tmp_path)
        identity = AppIdentity(settings.github_app_id, settings.github_private_key, clock=time.time)

        async def no_sleep(_: float) -> None:
            return None

        yield GitHubApp(session, settings, policy=FAST, identity=identity, sleep=no_sleep)


async def token_error(app: GitHubApp, inst_id: int, repo: str = "repo") -> BaseException:
    with pytest.raises(Exception) as info:
        await app.installation_token(inst_id, repositories=[repo], permissions={"contents": "read"})
    return info.value


async def test_uninstalled_app_is_permanent(app, fake_github):
    e = await token_error(app, 999_999)
    c = classify_github_error(e, asking_for_token=True)
    assert c.kind is ErrorKind.PERMANENT
    assert "no longer installed" in c.reason


async def test_suspended_installation_is_permanent(app, fake_github):
    inst = fake_github.add_installation(["octo/repo"], suspended=True)
    c = classify_github_error(await token_error(app, inst.id), asking_for_token=True)
    assert c.kind is ErrorKind.PERMANENT
    assert "suspended" in c.reason


async def test_repository_removed_from_installation_is_permanent(app, fake_github):
    inst = fake_github.add_installation(["octo/other"])
    fake_github.add_repo("octo/repo")
    c = classify_github_error(await token_error(app, inst.id), asking_for_token=True)
    assert c.kind is ErrorKind.PERMANENT
    assert "no longer part of the App's installation" in c.reason


async def test_github_down_is_transient(app, fake_github):
    inst = fake_github.add_installation(["octo/repo"])
    path = f"/app/installations/{inst.id}/access_tokens"
    fake_github.inject("POST", path, Fault.server_error(502), Fault.server_error(503))
    assert classify_github_error(await token_error(app, inst.id), asking_for_token=True).kind is ErrorKind.TRANSIENT
    fake_github.inject("POST", path, Fault.connection_drop(), Fault.connection_drop())
    assert classify_github_error(await token_error(app, inst.id), asking_for_token=True).kind is ErrorKind.TRANSIENT


async def test_rate_limits_are_transient(app, fake_github):
    inst = fake_github.add_installation(["octo/repo"])
    path = f"/app/installations/{inst.id}/access_tokens"
    fake_github.inject("POST", path, Fault.primary_rate_limit(reset_in=3600))
    assert classify_github_error(await token_error(app, inst.id), asking_for_token=True).kind is ErrorKind.TRANSIENT
    fake_github.inject("POST", path, Fault.secondary_rate_limit(retry_after=3600))
    assert classify_github_error(await token_error(app, inst.id), asking_for_token=True).kind is ErrorKind.TRANSIENT


async def test_other_answers_are_unknown(app, fake_github):
    inst = fake_github.add_installation(["octo/repo"])
    fake_github.inject("POST", f"/app/installations/{inst.id}/access_tokens",
                       Fault(status=400, body={"message": "Problems parsing JSON"}))
    assert classify_github_error(await token_error(app, inst.id), asking_for_token=True).kind is ErrorKind.UNKNOWN
    assert classify_github_error(RuntimeError("boom")).kind is ErrorKind.UNKNOWN
