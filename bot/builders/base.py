"""What every builder backend provides, so the scheduler treats them alike."""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.model import BuildJob, BuildOutcome, ProgressEvent

if TYPE_CHECKING:
    from bot.config import Settings

Emit = Callable[[ProgressEvent], Awaitable[None]]


DEADLINE_GRACE = 60  # seconds: what each outer timer adds to the one inside it


@dataclasses.dataclass(frozen=True)
class BuildDeadlines:
    """The one definition of how long a build may take, from which every timer derives.

    - ``start``: from the build pod's creation until its container runs (scheduling,
      image pull, volume mounts). The kubelet cannot enforce this part: a pod that is
      never scheduled has no ``startTime``, so ``activeDeadlineSeconds`` never fires.
    - ``run``: ``activeDeadlineSeconds``, counted by the kubelet from the pod's
      ``startTime`` (when the node acknowledged it, before the image pull).
    - ``pod``: the cleaner's backstop from creation: start + run + grace.
    - ``backstop``: the scheduler's, from the start of ``run()``: strictly after the
      builder's own deadlines, so it never stops a pod before they could fire.
    """

    start: int
    run: int

    @property
    def pod(self) -> int:
        return self.start + self.run + DEADLINE_GRACE

    @property
    def backstop(self) -> int:
        return self.pod + DEADLINE_GRACE


def build_deadlines(settings: "Settings") -> BuildDeadlines:
    return BuildDeadlines(start=int(settings.build_start_timeout), run=int(settings.build_timeout))


class BuildDeferred(Exception):
    """The backend cannot take this build now (API back-pressure, a used-up quota, an outage).

    Not a failure of the build: the scheduler puts it back in the queue, waits
    (``retry_after`` seconds if the backend knows), and shows ``message`` meanwhile.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class Builder(abc.ABC):
    """Runs repo2docker for one BuildJob at a time per call; many calls may run at once.

    ``run`` either starts the build or, when one for ``job.build_id`` is already
    running (a restart), re-attaches to it. It emits progress events (phases
    fetching, building, pushing; log lines as message-only events with the current
    phase) and returns the outcome: BUILT means repo2docker reported success; the
    scheduler still confirms the image exists before telling anyone.

    Stopping a build on purpose (superseded, PR closed) is ``cancel(build_id)``,
    which stops it and cleans up after it (pod and secret deleted; local process
    stopped and its leftovers removed); the scheduler calls it, then cancels the
    task running ``run``. Cancelling that task alone means "this process is going
    away": a backend whose builds outlive the process (Kubernetes pods) leaves
    them running so a restart re-attaches; a backend whose builds cannot outlive
    it (a local child process) stops them.
    """

    name: str = "builder"

    async def start(self) -> None:
        """Open clients, start shared watches. Called once by the app on startup."""

    async def close(self) -> None:
        """Release everything ``start`` opened."""

    @abc.abstractmethod
    async def run(self, job: BuildJob, emit: Emit) -> BuildOutcome: ...

    async def cancel(self, build_id: str) -> None:
        """Stop the build ``build_id`` and clean up after it (also one this process only re-attached to)."""

    async def health(self) -> tuple[bool, str]:
        """(ok, detail) for /health."""
        return True, "ok"

    def known_builds(self) -> dict[str, object]:
        """Builds that run outside this process now (Kubernetes pods), by build id; for reaping orphans."""
        return {}


class ImageLookup(abc.ABC):
    """Where built images are the truth: a registry, or the local engine without one."""

    @abc.abstractmethod
    async def exists(self, image: str) -> bool | None:
        """True if present, False if certainly missing, None if the answer is unknown (down)."""

    async def health(self) -> tuple[bool, str]:
        return True, "ok"

    async def close(self) -> None:
        pass
