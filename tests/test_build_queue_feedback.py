"""Honest waiting through the whole App (issue 14): a queued build's check run, its build
page stream and /metrics say where it stands, and update as the queue moves."""
from __future__ import annotations

import asyncio

from bot.queue_order import waiting_message
from launcher.build_page import build_paths
from tests.feedback_harness import REPO
from tests.test_build_page import read_events


async def test_check_run_build_page_and_metrics_say_where_a_queued_build_stands(prebuild_bot):
    bot = await prebuild_bot(max_concurrent_builds=1)
    bot.builder.hold = True
    shas = []
    for branch in ("one", "two", "three"):
        sha = bot.commit(branch=branch)
        shas.append(sha)
        await bot.send("push", bot.push(sha, branch=branch))
    await bot.builder.wait_held(1)
    last = shas[2]

    def summary(sha: str) -> str:
        runs = bot.runs(sha)
        return runs[-1]["output"]["summary"] if runs else ""

    async def says(sha: str, text: str) -> bool:
        await bot.reporter.drain()
        return text in summary(sha)

    await bot.until(lambda: says(last, waiting_message(1)))
    assert bot.run(last)["status"] == "queued"
    owner, repo = REPO.split("/")
    _, stream_path, _ = build_paths(owner, repo, last)
    resp = await bot.client.get(stream_path)
    first = await read_events(resp, "waiting")
    assert first[-1]["message"] == waiting_message(1)  # a new viewer is told at once

    metrics = await (await bot.client.get("/metrics")).text()
    assert f'binder_prebuild_queue_length{{installation="{bot.inst.id}"}} 2.0' in metrics

    running = next(iter(bot.builder.held))
    bot.builder.release(running)
    await bot.until(lambda: says(last, waiting_message(0)))
    more = await read_events(resp, "waiting")
    assert more[-1]["message"] == waiting_message(0)  # the open stream heard the move
    resp.close()
    bot.builder.hold = False
    bot.builder.release()
    await bot.settle()
    assert bot.run(last)["conclusion"] == "success"
    metrics = await (await bot.client.get("/metrics")).text()
    assert 'binder_prebuild_queue_wait_seconds_count{priority="push"} 3.0' in metrics
    assert "binder_prebuild_queue_length{" not in metrics  # emptied queues leave no stale series
    await asyncio.sleep(0)
