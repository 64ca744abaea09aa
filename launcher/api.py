"""BinderHub's launch API: ``GET /build/gh/{owner}/{repo}/{ref}``, an event stream for any client.

Thebe and thebe-core, Jupyter Book, the "trigger Binder build" actions and BinderHub's own
Python example read this stream. It launches exactly as the ``/v2/gh`` page's stream does
(attach to a running build, build on launch, quotas, one server per launch); the ``ready``
message carries the server's base ``url`` and its ``token`` apart, as BinderHub sends them.
``build_only=true`` builds or finds the image and ends with ``ready`` without a server.

API clients carry no cookie, so a reconnecting EventSource is recognised by its
``Last-Event-ID`` (``<launch id>.<n>``, sent only on this stream): it follows the same
launch, and once that launch has ended it is told to stop reconnecting (204) instead of
starting a second one. Old check-run links pointed here with a sha: a browser asking
for HTML (and not for an event stream) is sent to the build page that moved away.
"""
from __future__ import annotations

import logging
import re

from aiohttp import web

from bot.appkeys import SERVICES
from launcher import streams
from launcher.build_page import build_paths
from launcher.launch import Launch
from launcher.routes import Refused, count_outcome, launch_for, spec_from
from launcher.setup import LauncherState, state_of
from launcher.spec import RepoSpec, is_full_sha

log = logging.getLogger(__name__)

_EVENT_ID = re.compile(r"^([A-Za-z0-9_-]{8,64})\.([0-9]{1,12})$")


def wants_page(accept: str) -> bool:
    """A browser following a link (HTML asked for, no event stream): not an API client."""
    accept = accept.lower()
    return "text/html" in accept and "text/event-stream" not in accept


def build_only_asked(value: str | None) -> bool:
    """BinderHub's ``build_only`` query parameter: only ``true`` (any case) means yes."""
    return (value or "").strip().lower() == "true"


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """``<launch id>.<n>`` as this stream numbers its events; None for anything else."""
    m = _EVENT_ID.match((value or "").strip())
    return (m.group(1), int(m.group(2))) if m else None


def _resumed(state: LauncherState, spec: RepoSpec, last_event_id: str | None) -> tuple[Launch, int] | None:
    """The launch a reconnecting client was following, and where it stopped reading."""
    parsed = parse_event_id(last_event_id)
    if parsed is None:
        return None
    launch = state.launches.get(parsed[0])
    if launch is None or launch.client is not None \
            or launch.target.spec.full_name.lower() != spec.full_name.lower():
        return None
    return launch, min(parsed[1], launch.last_id)


async def build(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    state = state_of(services)
    ref = request.match_info["ref"]
    if wants_page(request.headers.get("Accept", "")) and is_full_sha(ref):
        page, _, _ = build_paths(request.match_info["owner"], request.match_info["repo"], ref.lower())
        raise web.HTTPFound(page, headers={"Vary": "Accept", "Cache-Control": "no-store"})
    try:
        spec = spec_from(request)
        resumed = _resumed(state, spec, request.headers.get("Last-Event-ID"))
        if resumed is not None:
            launch, after = resumed
            if launch.finished and after >= launch.last_id:
                return web.Response(status=204, headers={"Cache-Control": "no-store"})  # EventSource: stop
        else:
            launch = await launch_for(request, services, state, spec, None,
                                      build_only=build_only_asked(request.query.get("build_only")))
            after = 0
    except Refused as r:
        count_outcome(services, r.outcome)
        return streams.refused(r.message, r.status, r.retry_after, r.limit)
    state.launches.start(launch)
    log.info("launch %s: API stream for %s (after %d)", launch.id, spec.full_name, after)
    return await streams.follow(request, launch, after, state.launches.keepalive,
                                event_id=lambda seq: f"{launch.id}.{seq}")


async def other_provider(request: web.Request) -> web.Response:
    """BinderHub's other providers (gl, git, zenodo, ...): a clear ``failed`` event, not a bare 404."""
    provider = request.match_info["provider"][:40]
    if provider == "gh":
        return streams.refused("Not a launch link: the API is /build/gh/OWNER/REPO/REF (a branch, tag, "
                               "sha or HEAD).", 400)
    return streams.refused(f"No provider found for prefix {provider!r}: this service launches GitHub "
                           "repositories only (/build/gh/OWNER/REPO/REF).", 404)


def setup(app: web.Application) -> None:
    # no HEAD: a link checker's HEAD must not start anything
    app.router.add_get("/build/gh/{owner}/{repo}/{ref:.+}", build, allow_head=False)
    app.router.add_get("/build/{provider}/{spec:.+}", other_provider, allow_head=False)
