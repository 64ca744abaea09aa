"""A private repository's clone token: wait while GitHub is down, stop when it will never come.

The scheduler talks to FakeGitHub through the real GitHubApp, so the failures are
GitHub's real answers (404 uninstalled, 403 suspended, 422 repository removed, 5xx).
"""
from __future__ import annotations

import asyncio

import pytest

from bot.github.client import GitHubApp, RetryPolicy
from bot.model import BuildRequest, BuildState, Phase
from bot.build_rules import MAX_UNCLASSIFIED_RETRIES
from bot.scheduler import RETRY_SECONDS
from tests.fake_github import Fault, settings_for
from tests.test_scheduler import make_harness

SHA = "5" * 40
FAST = RetryPolicy(attempts=1, backoff=0.001, max_backoff=0.002, timeout=5.0, rate_retries=0, max_rate_wait=0.0)


@pytest.fixture
async def h(tmp_path, fake_github, registry_double):
    harness = await make_harness(tmp_path, registry_double)
    harness.services.github = GitHubApp(harness.services.session, settings_for(fake_github, tmp_path / "gh"),
                                        policy=FAST)
    yield harness
    await harness.close()


def private(inst_id: int, repo: str = "secret") -> BuildRequest:
    return BuildRequest(owner="octo", repo=repo, sha=SHA, clone_url=f"http://127.0.0.1:1/octo/{repo}.git",
                        branch="main", installation_id=inst_id, private=True)


async def token_requests(fake_github, inst_id: int, n: int, timeout: float = 10.0) -> None:
    """Until GitHub was asked ``n`` times for the installation's token."""
    async with asyncio.timeout(timeout):
        while len(fake_github.token_requests(inst_id)) < n:
            await asyncio.sleep(0.005)


async def waiting_to_retry(h, timeout: float = 10.0) -> None:
    """Until the scheduler waits on the clock for a retry (a deadline within the retry delay)."""
    async with asyncio.timeout(timeout):
        while not any(d <= h.clock.time() + RETRY_SECONDS for d in h.clock.waiting()):
            await asyncio.sleep(0.005)


async def finished(h, build_id: str, timeout: float = 10.0):
    async def _w():
        while not (rec := await h.services.builds.get(build_id)).state.finished:
            await asyncio.sleep(0.01)
        return rec
    return await asyncio.wait_for(_w(), timeout)


async def test_an_uninstalled_app_fails_the_build_once_and_says_why(h, fake_github):
    rec = await h.scheduler.submit(private(987_654))  # no such installation any more
    done = await finished(h, rec.id)
    assert done.state is BuildState.FAILED and "no longer installed" in done.reason
    assert h.builder.jobs == []
    for _ in range(10):  # ten retry periods: nothing asks again
        await h.clock.advance(RETRY_SECONDS)
    assert len(fake_github.token_requests(987_654)) == 1
    assert any(e.phase is Phase.FAILED and "no longer installed" in e.message for r, e in h.events if r.id == rec.id)


async def test_a_suspended_installation_or_a_removed_repository_stops(h, fake_github):
    suspended = fake_github.add_installation(["octo/secret"], suspended=True)
    rec = await h.scheduler.submit(private(suspended.id))
    assert "suspended" in (await finished(h, rec.id)).reason
    other = fake_github.add_installation(["octo/kept"])
    fake_github.add_repo("octo/gone")
    rec2 = await h.scheduler.submit(private(other.id, repo="gone"))
    assert "no longer part of the App's installation" in (await finished(h, rec2.id)).reason
    assert h.builder.jobs == []


async def test_github_down_waits_as_long_as_it_takes_then_builds(h, fake_github):
    inst = fake_github.add_installation(["octo/secret"])
    path = f"/app/installations/{inst.id}/access_tokens"
    downs = MAX_UNCLASSIFIED_RETRIES + 3  # more than any cap: transient failures are not capped
    fake_github.inject("POST", path, *[Fault.server_error(503) for _ in range(downs)])
    rec = await h.scheduler.submit(private(inst.id))
    for n in range(1, downs + 1):  # each failure waits the retry delay on the clock, then asks again
        await token_requests(fake_github, inst.id, n)
        await waiting_to_retry(h)
        await h.clock.advance(RETRY_SECONDS - 1)
        assert len(fake_github.token_requests(inst.id)) == n  # not before the delay
        await h.clock.advance(1)
    done = await finished(h, rec.id)
    assert done.state is BuildState.BUILT
    assert len(fake_github.token_requests(inst.id)) == downs + 1
    assert h.builder.jobs[0].clone_token  # the token GitHub finally gave
    waiting = [e.message for r, e in h.events if r.id == rec.id and e.phase is Phase.WAITING]
    assert any("GitHub answered 503" in m and "will retry" in m for m in waiting)


async def test_an_unclassified_failure_is_retried_a_bounded_number_of_times(h, fake_github):
    inst = fake_github.add_installation(["octo/secret"])
    fake_github.inject("POST", f"/app/installations/{inst.id}/access_tokens",
                       *[Fault(status=400, body={"message": "Problems parsing JSON"}) for _ in range(50)])
    rec = await h.scheduler.submit(private(inst.id))
    for n in range(1, MAX_UNCLASSIFIED_RETRIES):
        await token_requests(fake_github, inst.id, n)
        await waiting_to_retry(h)
        await h.clock.advance(RETRY_SECONDS)
    done = await finished(h, rec.id)
    assert done.state is BuildState.FAILED
    assert f"after {MAX_UNCLASSIFIED_RETRIES} tries" in done.reason and "GitHub answered 400" in done.reason
    assert len(fake_github.token_requests(inst.id)) == MAX_UNCLASSIFIED_RETRIES
    assert h.builder.jobs == []
