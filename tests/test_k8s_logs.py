"""Following a build pod's log through what real clusters do to log streams.

Sidecars (``container=`` required), streams that end, go silent or drop the last
lines at container exit, lines over 4 MiB, reconnects measured on our own clock.
"""
from __future__ import annotations

import asyncio

from bot.builders.k8s_logs import LogCursor as _LogCursor
from bot.builders.r2d_logs import LogReader
from bot.model import Phase
from tests.fake_k8s import r2d_line
from tests.test_kubernetes_builder import R2D_SUCCESS, make_job, start_run


async def _built(task) -> None:
    outcome = await asyncio.wait_for(task, 15)
    assert outcome.phase is Phase.BUILT, outcome.reason


async def test_an_injected_sidecar_does_not_break_log_reads(fake_k8s, k8s_builder):
    fake_k8s.inject_sidecar = True  # a mesh puts istio-proxy first: a read without container= is a 400
    builder = await k8s_builder()
    task, name, events = await start_run(builder, fake_k8s, make_job(21))
    fake_k8s.set_running(name)
    fake_k8s.log(name, *R2D_SUCCESS)
    await fake_k8s.wait_for(lambda: any(e.phase is Phase.PUSHING for e in events.items))
    fake_k8s.succeed(name)
    await _built(task)
    assert all("container=builder" in p for m, p in fake_k8s.requests if p.split("?")[0].endswith("/log"))


async def test_a_line_over_4_mib_is_cut_and_the_log_goes_on(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, events = await start_run(builder, fake_k8s, make_job(22))
    fake_k8s.set_running(name)
    fake_k8s.log(name, R2D_SUCCESS[0], "x" * (5 * 1024 * 1024), *R2D_SUCCESS[1:])
    await fake_k8s.wait_for(lambda: any(e.phase is Phase.PUSHING for e in events.items))
    fake_k8s.succeed(name)
    await _built(task)


async def test_a_silent_half_open_stream_is_reopened(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    builder.log_read_timeout = 0.3
    fake_k8s.silent_logs = True
    task, name, events = await start_run(builder, fake_k8s, make_job(23))
    fake_k8s.set_running(name)
    await fake_k8s.wait_for(lambda: fake_k8s.open_logs == 1)
    fake_k8s.silent_logs = False  # the connection we hold stays dead; a new one works
    fake_k8s.log(name, *R2D_SUCCESS[:3])
    await fake_k8s.wait_for(lambda: any(e.phase is Phase.BUILDING for e in events.items), timeout=10)
    fake_k8s.log(name, *R2D_SUCCESS[3:])
    fake_k8s.succeed(name)
    await _built(task)


async def test_lines_cut_off_by_a_reset_at_exit_are_read_afterwards(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, events = await start_run(builder, fake_k8s, make_job(24))
    fake_k8s.set_running(name)
    fake_k8s.log(name, *R2D_SUCCESS[:3])
    await fake_k8s.wait_for(lambda: any(e.phase is Phase.BUILDING for e in events.items))
    # the stream resets as the container exits: its last lines never reached the open stream
    fake_k8s.cut_logs()
    fake_k8s.log(name, r2d_line("the last words of the build\n", "pushing"))
    fake_k8s.succeed(name)
    await _built(task)
    assert any("the last words of the build" in m for m in events.messages)


async def test_only_consecutive_empty_reconnects_give_up(fake_k8s, k8s_builder):
    builder = await k8s_builder()
    task, name, events = await start_run(builder, fake_k8s, make_job(25))
    fake_k8s.set_running(name)
    for i in range(12):  # a load balancer that cuts the stream often, while lines keep coming
        fake_k8s.log(name, r2d_line(f"Step {i}\n", "building"))
        await fake_k8s.wait_for(lambda i=i: any(f"Step {i}" in m for m in events.messages))
        fake_k8s.cut_logs()
    fake_k8s.log(name, r2d_line("Step final\n", "building"))
    await fake_k8s.wait_for(lambda: any("Step final" in m for m in events.messages))
    fake_k8s.succeed(name)
    await _built(task)


def test_reconnects_ask_for_what_our_own_clock_says_was_missed():
    cursor = _LogCursor()
    reader = LogReader(10)
    assert cursor.since(0.0) is None  # nothing read: from the start
    # the node's clock is an hour ahead of ours: its stamps must not enter the arithmetic
    cursor.feed(b"2099-01-01T01:00:00.000000001Z hello\n", 100.0, reader)
    assert cursor.since(130.0) == 32
    assert cursor.feed(b"2099-01-01T01:00:00.000000001Z hello\n", 131.0, reader) is None  # a repeat
    assert cursor.lines == 1
