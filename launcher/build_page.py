"""A build's own progress page, for the check run's "Details" link.

Unlike the launch page it starts nothing: it shows the build of one commit
(phase, progress, log lines as they stream) and, once the image is built, a
link to launch it. ``GET /builds/gh/{owner}/{repo}/{sha}`` is the page and
``GET /api/builds/gh/{owner}/{repo}/{sha}`` its event stream. (It used to live under
``/build/gh/``, which is BinderHub's launch API: launcher/api.py sends browsers that
open an old link here.)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from urllib.parse import quote

from aiohttp import web

from bot.appkeys import SERVICES
from bot.model import BuildState, Phase, ProgressEvent
from bot.store.builds import BuildRecord
from launcher import sse
from launcher.pages import environment, error_page, html
from launcher.shown import visible_repos

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{40}$")
KEEPALIVE_SECONDS = 15.0
_ENV = web.AppKey("build_page_env", object)


def build_paths(owner: str, repo: str, sha: str) -> tuple[str, str, str]:
    """(page, stream, launch) paths for one commit."""
    tail = f"{quote(owner, safe='')}/{quote(repo, safe='')}/{sha}"
    return f"/builds/gh/{tail}", f"/api/builds/gh/{tail}", f"/v2/gh/{tail}"


def initial_messages(record: BuildRecord, live_tail: list[str], waiting: str | None = None
                     ) -> list[dict[str, object]]:
    """What a new viewer sees first: the current phase (for a queued build, ``waiting``:
    where it stands in the queue), then the log so far (pure)."""
    phase = Phase(record.state.value) if record.state.finished and record.state != BuildState.SKIPPED \
        else record.phase
    lines = live_tail if live_tail else list(record.log_tail)
    # replayed lines never carry a terminal phase: clients stop reading at built/failed/cancelled
    line_phase = Phase.BUILDING if phase.terminal_for_build else phase
    out: list[dict[str, object]] = [{"phase": line_phase.value, "message": line} for line in lines]
    final = {"phase": phase.value, "message": _summary(record)}
    if record.state.finished:
        out.append(final)
    elif not out:
        out.append({"phase": phase.value, "message": waiting if record.state == BuildState.QUEUED and waiting else ""})
    return out


def _summary(record: BuildRecord) -> str:
    if record.state == BuildState.BUILT:
        return "image built" + (" (found in the registry)" if record.from_cache else "")
    return record.reason or record.state.value


async def _record(request: web.Request) -> tuple[BuildRecord | None, str, str, str]:
    owner, repo, sha = (request.match_info[k] for k in ("owner", "repo", "sha"))
    sha = sha.lower()
    if not _SHA.match(sha):
        return None, owner, repo, sha
    services = request.app[SERVICES]
    record = await services.builds.latest_for_sha(owner, repo, sha)
    # a private repository's build is "no build" to anyone it would not be launched for
    name = f"{record.owner}/{record.repo}" if record is not None else ""
    if record is not None and name.lower() not in await visible_repos(services, [name]):
        return None, owner, repo, sha
    return record, owner, repo, sha


async def page(request: web.Request) -> web.Response:
    env = request.app[_ENV]
    record, owner, repo, sha = await _record(request)
    if record is None:
        return error_page(env, 404, "No build for this commit",
                          f"binder-prebuild has no build of {owner}/{repo} at {sha[:40]!r}.")
    page_path, stream_path, launch_path = build_paths(record.owner, record.repo, record.sha)
    return html(env, "build.html", record=record, stream_url=stream_path, launch_url=launch_path,
                config={"events_url": stream_path, "launch_url": launch_path})


async def stream(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    record, owner, repo, sha = await _record(request)
    if record is None:
        raise web.HTTPNotFound(text=f"no build of {owner}/{repo} at {sha}")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    async with services.bus.subscribe(record.image) as queue:
        # read again after subscribing, so an ending between the two reads is not missed
        record = await services.builds.get(record.id) or record
        tail = services.scheduler.log_tail(record.job_id) if services.scheduler is not None else []
        waiting = services.scheduler.waiting_message(record.job_id) if services.scheduler is not None else None
        for msg in initial_messages(record, tail, waiting):
            await resp.write(sse.format_event(msg))
        if record.state.finished:
            return resp
        while True:
            try:
                event: ProgressEvent = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                await resp.write(sse.KEEPALIVE)
                continue
            await resp.write(sse.format_event({"phase": event.phase.value, "message": event.message}))
            if event.phase.terminal_for_build:
                break
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


def setup(app: web.Application) -> None:
    app[_ENV] = environment()
    app.router.add_get("/builds/gh/{owner}/{repo}/{sha}", page, allow_head=False)
    app.router.add_get("/api/builds/gh/{owner}/{repo}/{sha}", stream, allow_head=False)
