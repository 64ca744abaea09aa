"""The shared stand-in for a builder backend (no engine).

``InstantBuilder`` walks a build through fetching/building/pushing and reports
success; it "pushes" by calling ``push(image)`` on its registry double,
``tests.fake_registry.FakeRegistry``, which the service reads through the real
``RegistryClient`` (its cache included). Tests steer it: hold builds until
released, make them fail, or make the push go nowhere.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Protocol

from bot.builders.base import Builder, Emit
from bot.model import BuildJob, BuildOutcome, Phase, ProgressEvent


class PushTarget(Protocol):
    def push(self, image: str) -> object: ...


class InstantBuilder(Builder):
    name = "instant"

    def __init__(self, images: PushTarget) -> None:
        self.images = images
        self.jobs: list[BuildJob] = []
        self.running: dict[str, BuildJob] = {}
        self.cancelled: list[str] = []
        self.hold = False  # when True, builds wait for release(build_id)
        self.fail_with: str | None = None
        self.push = True  # False: report success without the image arriving
        self.log_lines = ["Step 1/3 : FROM base", "Step 2/3 : COPY . .", "Successfully built"]
        self._gates: dict[str, asyncio.Event] = {}
        self.emits: dict[str, Emit] = {}  # a running build's emit: tests add log lines while it is held
        self.held: set[str] = set()  # builds that sent their log lines and wait for release()
        self.build_seconds = 0.0  # how long each build takes (a crash can then land inside one)

    def release(self, build_id: str | None = None) -> None:
        for bid, gate in self._gates.items():
            if build_id is None or bid == build_id:
                gate.set()

    async def wait_running(self, n: int, timeout: float = 10) -> None:
        async def _w() -> None:
            while len(self.running) < n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_w(), timeout)

    async def wait_held(self, n: int, timeout: float = 10) -> None:
        """Until ``n`` held builds have emitted all their log lines and wait for ``release()``."""
        async def _w() -> None:
            while len(self.held) < n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_w(), timeout)

    async def run(self, job: BuildJob, emit: Emit) -> BuildOutcome:
        self.jobs.append(job)
        self.running[job.build_id] = job
        self.emits[job.build_id] = emit
        gate = self._gates.setdefault(job.build_id, asyncio.Event())
        try:
            await emit(ProgressEvent(Phase.FETCHING, f"cloning {job.request.clone_url}"))
            await emit(ProgressEvent(Phase.BUILDING, "building"))
            for line in self.log_lines:
                await emit(ProgressEvent(Phase.BUILDING, line))
            if self.build_seconds:
                await asyncio.sleep(self.build_seconds)
            if self.hold:
                self.held.add(job.build_id)
                await gate.wait()
                self.held.discard(job.build_id)
            if self.fail_with:
                return BuildOutcome(Phase.FAILED, self.fail_with, tuple(self.log_lines))
            await emit(ProgressEvent(Phase.PUSHING, f"pushing {job.image}"))
            if self.push:
                pushed = self.images.push(job.image)
                if inspect.isawaitable(pushed):  # a push over HTTP (tests/crash_serve.py)
                    await pushed
            return BuildOutcome(Phase.BUILT, "", tuple(self.log_lines))
        finally:
            self.running.pop(job.build_id, None)
            self.held.discard(job.build_id)
            self.emits.pop(job.build_id, None)
            self._gates.pop(job.build_id, None)

    async def cancel(self, build_id: str) -> None:
        self.cancelled.append(build_id)
