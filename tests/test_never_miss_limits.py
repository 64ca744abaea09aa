"""Never miss a push, under GitHub's rate limits.

(c) during recovery GitHub answers 403 with ``x-ratelimit-remaining: 0`` and a reset,
and 429 with ``Retry-After``: the service waits, resumes and finishes, and never sends
a request for a limited identity before its reset;
(d) a push processed while GitHub says "rate limited, resets in an hour" is delayed,
not dropped, and built once the (driven) clock passes the reset.
"""
from __future__ import annotations

import asyncio
import time

import bot.github.client as client_module
import bot.store.deliveries as deliveries_module
import bot.webhooks.dispatcher as dispatcher_module
from tests.fake_github import Fault
from tests.feedback_harness import REPO
from tests.test_never_miss import FAST, bot_runs, send_while_down


class ShiftedTime:
    """``time`` for the modules that decide when to retry, with a clock the test moves forward."""

    def __init__(self) -> None:
        self.shift = 0.0

    def time(self) -> float:
        return time.time() + self.shift

    def __getattr__(self, name: str):  # monotonic, perf_counter, sleep: the real ones
        return getattr(time, name)


def identity(rec) -> str:
    scheme = (rec.auth or "").split(" ", 1)[0].lower()
    return "app" if scheme == "bearer" else "installation" if scheme in ("token",) else "none"


def assert_never_sent_while_limited(fake) -> int:
    """After a rate-limited answer, the request is not sent again before the reset / Retry-After."""
    limited = 0
    for i, rec in enumerate(fake.requests):
        if rec.status not in (403, 429) or rec.fault is None:
            continue
        headers = {k.lower(): v for k, v in rec.fault.headers.items()}
        if "retry-after" in headers:
            not_before = rec.at + float(headers["retry-after"])
        elif "x-ratelimit-reset" in headers:
            not_before = float(headers["x-ratelimit-reset"])
        else:
            continue
        limited += 1
        # the same request again (requests of that identity already in flight when the limit was
        # answered may still arrive; tests/test_github_client.py checks the shared gate holds the rest)
        later = [r for r in fake.requests[i + 1:]
                 if identity(r) == identity(rec) and (r.method, r.route) == (rec.method, rec.route)]
        assert not later or later[0].at >= not_before - 0.05, (rec.method, rec.path, rec.status,
                                                               later[0].path, later[0].at - not_before)
    return limited


async def test_c_recovery_waits_out_rate_limits_and_finishes(fake_github, prebuild_bot):
    fake = fake_github
    inst = fake.add_installation([REPO])
    shas, guids = await send_while_down(fake, inst)
    fake.inject("GET", "/app/hook/deliveries", Fault.secondary_rate_limit(retry_after=1, status=429))
    fake.inject("POST", "/app/hook/deliveries/{delivery_id}/attempts", Fault.primary_rate_limit(reset_in=1))
    bot = await prebuild_bot(inst=inst, recovery=FAST)
    fake.hook_url = str(bot.client.make_url("/webhooks/github"))
    await bot.until(lambda: all(bot_runs(fake, s) and bot_runs(fake, s)[-1]["status"] == "completed"
                                for s in shas.values()) and bot.comments(), timeout=60)
    await bot.settle()
    for sha in shas.values():
        assert len(bot_runs(fake, sha)) == 1
    assert len(bot.comments(7)) == 1
    assert [r.status for r in fake.calls("GET", "/app/hook/deliveries")][:2] == [429, 200]
    assert fake.pending_faults() == 0
    assert assert_never_sent_while_limited(fake) == 2


async def test_c_reconcile_pauses_on_a_low_quota_and_resumes_after_the_reset(fake_github, prebuild_bot):
    fake = fake_github
    names = [f"octo/r{i}" for i in range(4)]
    for n in names:
        fake.add_repo(n)
    inst = fake.add_installation(names)
    bot = await prebuild_bot(inst=inst)
    reset = time.time() + 2
    quota = fake.set_quota(inst.id, remaining=6, reset=reset, limit=40)  # reserve 10 % = 4 requests
    result = await bot.services.recovery.reconciler.round()
    await bot.settle()
    assert result.paused >= 1 and result.errors == 0
    assert result.submitted == len(names)
    for n in names:
        assert len(bot_runs(fake, fake.repo(n).branches["main"], n)) == 1
    # the installation never ran its quota into the ground: no request was refused
    assert [r for r in fake.requests if r.status == 403] == []
    assert quota.reset > reset  # a new hour began: the round went on after the reset


async def test_d_a_push_during_an_hour_long_rate_limit_is_built_after_the_reset(fake_github, prebuild_bot,
                                                                                 monkeypatch):
    fake = fake_github
    bot = await prebuild_bot()
    clock = ShiftedTime()
    for module in (client_module, dispatcher_module, deliveries_module):
        monkeypatch.setattr(module, "time", clock)
    fake.clock = clock.time
    reset = clock.time() + 3600
    mark = len(fake.requests)
    fake.set_quota(bot.inst.id, remaining=0, reset=reset)
    sha = bot.commit("Add plots", branch="main")
    delivery = await bot.send("push", bot.push(sha, branch="main"))

    store = bot.services.deliveries

    async def delayed():
        return await store.count_attempts(delivery, "delayed") >= 1

    await bot.until(delayed)
    row = await store.get(delivery)
    assert row["state"] == "failed"  # waiting, not dead
    due = (await bot.services.db.fetchone("SELECT next_attempt_at FROM deliveries WHERE id=?",
                                          (delivery,)))["next_attempt_at"]
    assert due >= reset

    def limited():  # the installation's requests since its quota ran out
        return [r for r in fake.requests[mark:] if identity(r) == "installation"]

    # the first refused request (the handler's, or the installations refresh's if it came first)
    # blocks the installation: nothing more is sent for it before the reset
    sent = len(limited())
    assert 1 <= sent <= 2 and all(r.status == 403 for r in limited()), [(r.path, r.status) for r in limited()]
    await bot.until(lambda: bot.services.dispatcher._loop_task is not None)
    bot.services.delivery_wakeup.set()  # the dispatcher looks again: the delivery is not due before the reset
    await asyncio.sleep(0.3)
    assert len(limited()) == sent
    assert bot_runs(fake, sha) == [] and bot.builder.jobs == []

    clock.shift += 3601 + 2  # the hour passes
    bot.services.delivery_wakeup.set()
    await bot.until(lambda: bot_runs(fake, sha) and bot_runs(fake, sha)[-1]["status"] == "completed")
    await bot.settle()
    assert (await store.get(delivery))["state"] == "done"
    assert len(bot_runs(fake, sha)) == 1 and bot_runs(fake, sha)[0]["conclusion"] == "success"
    assert [j.request.sha for j in bot.builder.jobs] == [sha]


async def test_a_check_run_update_is_not_given_up_while_github_is_down(fake_github, prebuild_bot):
    """More failed sends than the feedback's retry bound, all GitHub's fault: the run still arrives."""
    from bot.feedback.pacing import MAX_RETRIES

    fake = fake_github
    bot = await prebuild_bot()
    attempts = bot.services.github.policy.attempts
    fake.inject("POST", "/repos/{owner}/{repo}/check-runs", *[Fault.server_error(502)] * (attempts * (MAX_RETRIES + 2)))
    sha = bot.commit("During a GitHub outage", branch="main")
    await bot.send("push", bot.push(sha, branch="main"))
    await bot.settle(timeout=60)  # fires the feedback's retry timers early (Pacer.drain)
    assert fake.pending_faults() == 0
    [run] = bot_runs(fake, sha)
    assert run["conclusion"] == "success"
