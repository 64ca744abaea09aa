"""Images without a registry: the local container engine is the truth (``<engine> image inspect``).

Answers True (present), False (the engine says there is no such image), or None
(unknown: the CLI is missing, the daemon does not answer, an unexpected error or
a timeout), so an engine that is down never looks like "missing".
The engine CLI inherits the environment, so ``DOCKER_HOST`` (docker) and
``CONTAINER_HOST`` (podman remote) select a remote engine as usual; the engine
setting may carry extra global flags (``"podman --root /srv/containers"``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
from collections.abc import Mapping

from bot.builders.base import ImageLookup
from bot.builders.engine_cli import run_engine_cli

log = logging.getLogger(__name__)

# what docker ("No such image", "No such object") and podman ("image not known") say for a missing image
_NOT_FOUND = re.compile(r"no such image|no such object|image not known|image not found", re.IGNORECASE)


def classify_inspect(returncode: int, stderr: str) -> bool | None:
    """Map ``image inspect``'s exit status and stderr to True / False / None."""
    if returncode == 0:
        return True
    if _NOT_FOUND.search(stderr):
        return False
    return None


class LocalImages(ImageLookup):
    """Image lookup in the local Docker or Podman (BUILDER=local with no REGISTRY_URL)."""

    def __init__(
        self,
        engine: str,
        *,
        timeout: float = 30.0,
        concurrency: int = 4,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = shlex.split(engine) or ["docker"]
        self.timeout = timeout
        self.env = dict(os.environ if env is None else env)
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Task[bool | None]] = {}

    async def exists(self, image: str) -> bool | None:
        task = self._inflight.get(image)
        if task is None:  # one inspect per image at a time
            task = asyncio.create_task(self._inspect(image))
            self._inflight[image] = task
            task.add_done_callback(lambda _t, image=image: self._inflight.pop(image, None))
        return await asyncio.shield(task)

    async def health(self) -> tuple[bool, str]:
        rc, _out, err = await self._run("version", timeout=min(self.timeout, 4.0))
        name = self.command[0]
        if rc == 0:
            return True, f"{name} ok"
        if rc is None:
            return False, f"{name}: {err}"
        return False, f"{name} version failed: {_last_line(err)}"

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _inspect(self, image: str) -> bool | None:
        if image.startswith("-"):
            log.error("image %s: not an image name", image)
            return None
        async with self._slots:
            rc, _out, err = await self._run("image", "inspect", "--format", "{{.Id}}", image)
        if rc is None:
            log.warning("image %s: %s", image, err)
            return None
        answer = classify_inspect(rc, err)
        if answer is None:
            log.warning("image %s: %s image inspect failed (exit %s): %s", image, self.command[0], rc, _last_line(err))
        return answer

    async def _run(self, *args: str, timeout: float | None = None) -> tuple[int | None, str, str]:
        """Run the engine CLI; (None, "", reason) when it cannot be run or does not finish."""
        return await run_engine_cli(self.command, args, env=self.env, timeout=timeout or self.timeout)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
