"""The launch routes: BinderHub's ``/v2/gh/...`` page, its event stream, and the status badge."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlencode

from aiohttp import web

from bot.appkeys import SERVICES
from bot.images import image_repository
from bot.services import Services
from launcher import badge as badges
from launcher import sse, streams
from launcher.client_ip import client_of
from launcher.guard import QuotaRefused, acting_for
from launcher.hub import HubError
from launcher.launch import Launch, LaunchTarget
from launcher.pages import error_page, html
from launcher.quotas import check_servers
from launcher.resolve import GitHubDown, NotServed, RefNotFound
from launcher.setup import close as close_launcher
from launcher.setup import state_of
from launcher.state import LauncherState
from launcher.spec import RepoSpec, SpecError, parse_spec, url_path_from_query
from launcher.visibility import require_visible

log = logging.getLogger(__name__)


@web.middleware
async def requester_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Charge what a request (and the launch it starts) asks of GitHub to its client."""
    services = request.app.get(SERVICES)
    trusted = services.settings.trusted_proxies if services is not None else ()
    with acting_for(client_of(request, trusted)):
        return await handler(request)

CLIENT_COOKIE = "binder_prebuild_client"
LAUNCH_QUERY = ("urlpath", "labpath", "filepath")


@dataclasses.dataclass
class Refused(Exception):
    """A request we answer with an error page (or, on the stream, a failed event)."""

    status: int
    title: str
    message: str
    outcome: str
    retry_after: int | None = None
    limit: str | None = None  # the launch limit reached (quotas.Limit), for API clients


def count_outcome(services: Services, outcome: str) -> None:
    metrics = services.metrics
    if metrics is not None:
        metrics.launches.labels(outcome=outcome).inc()


def spec_from(request: web.Request) -> RepoSpec:
    try:
        return parse_spec(request.match_info["owner"], request.match_info["repo"], request.match_info["ref"])
    except SpecError as e:
        raise Refused(400, "Not a launch link", str(e), "bad_request") from e


def _url_path(request: web.Request) -> str:
    return url_path_from_query(request.query)


def _refused_by(spec: RepoSpec, e: Exception) -> Refused:
    """The page (or failed event) for what the resolver or the guard refused."""
    if isinstance(e, QuotaRefused):
        return Refused(429, "Too many requests", str(e), "rate_limited", e.retry_after)
    if isinstance(e, NotServed):
        return Refused(404, "Repository not served here", str(e), "not_served")
    if isinstance(e, RefNotFound):
        return Refused(404, "No such branch, tag or commit", str(e), "not_found")
    return Refused(503, "GitHub is not answering", f"Could not resolve {spec.ref!r}: {e}. "
                   "Please try again in a minute.", "github_unavailable", 30)


async def _target(services: Services, state: LauncherState, spec: RepoSpec, build_only: bool = False
                  ) -> LaunchTarget:
    """Who is served, ref -> sha, image name; the refusals say why in words."""
    try:
        access = await state.resolver.access(spec)
        await require_visible(state.resolver, spec, access)  # before any byte about its builds
        sha = await state.resolver.resolve(spec, access)
    except (QuotaRefused, NotServed, RefNotFound, GitHubDown) as e:
        raise _refused_by(spec, e) from e
    assert services.scheduler is not None
    image = services.scheduler.image_for(spec.owner, spec.repo, sha)
    public = services.settings.public_url.rstrip("/") + "/"
    return LaunchTarget(spec=spec, sha=sha, image=image, access=access, repo=None, launch_host=public,
                        build_only=build_only)


async def _admit(services: Services, state: LauncherState, target: LaunchTarget, client_ip: str) -> None:
    """A new launch: the Hub is there, the limits allow it, and the image is (or may be) built."""
    if services.hub is None and not target.build_only:
        raise Refused(503, "No JupyterHub configured", "This service has no JupyterHub configured "
                      "(JUPYTERHUB_API_URL), so it cannot start servers.", "hub_unavailable")
    refusal = state.limiter.hit(client_ip)
    if refusal is not None:
        raise Refused(429, "Too many launches", refusal.message, "rate_limited", refusal.retry_after,
                      refusal.limit.value)
    s = services.settings
    if state.counter is not None and not target.build_only and (s.max_servers >= 0 or s.max_servers_per_repo >= 0):
        try:
            counts = await state.counter.counts(image_repository(target.image))
        except HubError as e:
            raise Refused(503, "JupyterHub is not reachable",
                          f"The launcher cannot reach JupyterHub right now ({e.message}). No server can be "
                          "started until it answers again; please try again in a few minutes.",
                          "hub_unavailable", 30) from e
        refusal = check_servers(counts, s.max_servers, s.max_servers_per_repo, target.spec.full_name)
        if refusal is not None:
            raise Refused(429, "Too many servers running", refusal.message, "quota", refusal.retry_after,
                          refusal.limit.value)
    if not services.settings.build_on_launch:
        assert services.scheduler is not None
        status = await services.scheduler.image_status(target.spec.owner, target.spec.repo, target.sha)
        if not (status.built or status.active):
            raise Refused(404, "Not prebuilt", f"{target.spec.full_name} at {target.spec.ref} has not been "
                          "prebuilt, and this service does not build on launch. Push to the repository "
                          "(or wait for its build to finish) and try again.", "not_built")


async def launch_for(request: web.Request, services: Services, state: LauncherState, spec: RepoSpec,
                     client: str | None, build_only: bool = False) -> Launch:
    """This client's launch of the ref's image: the one in progress, or a new one."""
    target = await _target(services, state, spec, build_only)
    existing = state.launches.for_client(client, target.image)
    if existing is not None:
        return existing
    await _admit(services, state, target, client_of(request, services.settings.trusted_proxies))
    return state.launches.create(target, client)


def events_url(spec: RepoSpec, query: Mapping[str, str]) -> str:
    """The page's stream: the same repository, ref and landing parameters (pure)."""
    params = [(k, query[k]) for k in LAUNCH_QUERY if k in query]
    path = f"/api/events/gh/{quote(spec.owner)}/{quote(spec.repo)}/{quote(spec.ref, safe='/')}"
    return f"{path}?{urlencode(params)}" if params else path


async def launch_page(request: web.Request) -> web.Response:
    """The progress page. Its GET does no work (no ref resolution, no Hub call, no reservation):
    link unfurlers and crawlers fetch these links. The launch starts when its stream connects."""
    services = request.app[SERVICES]
    state = state_of(services)
    client = request.cookies.get(CLIENT_COOKIE) or secrets.token_urlsafe(16)
    try:
        spec = spec_from(request)
        try:
            url_path = _url_path(request)
        except SpecError as e:
            raise Refused(400, "Not a launch link", str(e), "bad_request") from e
    except Refused as r:
        count_outcome(services, r.outcome)
        return error_page(state.templates, r.status, r.title, r.message, retry_after=r.retry_after,
                          spec=request.path, home=services.settings.public_url)
    stream = events_url(spec, request.query)
    resp = html(state.templates, "progress.html", spec=spec, events_url=stream,
                config={"events_url": stream, "url_path": url_path})
    resp.set_cookie(CLIENT_COOKIE, client, max_age=86400, httponly=True, samesite="Lax", path="/",
                    secure=services.settings.public_url.startswith("https:"))
    return resp


async def event_stream(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    state = state_of(services)
    client = request.cookies.get(CLIENT_COOKIE)
    try:
        spec = spec_from(request)
        try:
            _url_path(request)
        except SpecError as e:
            raise Refused(400, "Not a launch link", str(e), "bad_request") from e
        # this browser's launch of the image (a reload or a reconnect follows it), else a new one
        launch = await launch_for(request, services, state, spec, client)
    except Refused as r:
        count_outcome(services, r.outcome)
        return streams.refused(r.message, r.status, r.retry_after, r.limit)
    state.launches.start(launch)
    after = sse.parse_last_event_id(request.headers.get("Last-Event-ID"))
    if after > launch.last_id:  # an id from another launch (e.g. before a restart): replay all of this one
        after = 0
    # the same messages as BinderHub's API: the page composes the redirect from url, token and its urlpath
    return await streams.follow(request, launch, after, state.launches.keepalive)


async def badge(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    state = state_of(services)
    current = badges.BadgeState.UNKNOWN
    try:
        spec = spec_from(request)
        target = await _target(services, state, spec)
        assert services.scheduler is not None
        status = await services.scheduler.image_status(spec.owner, spec.repo, target.sha)
        current = badges.state_for(status.record.state if status.record else None, status.in_registry)
    except Refused:
        current = badges.BadgeState.UNKNOWN
    except Exception:  # a badge never breaks a README
        log.exception("badge for %s failed", request.path)
    svg = badges.render(current)
    tag = badges.etag(svg)
    headers = {"Cache-Control": badges.CACHE_CONTROL, "ETag": tag, "X-Content-Type-Options": "nosniff"}
    if tag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8", headers=headers)


async def _close_launches(app: web.Application) -> None:
    services = app.get(SERVICES)
    if services is None:
        return
    with contextlib.suppress(RuntimeError):
        await close_launcher(state_of(services))


def setup(app: web.Application) -> None:
    # no HEAD on these: a link checker's HEAD must not reserve or start anything
    app.router.add_get("/v2/gh/{owner}/{repo}/{ref:.+}", launch_page, allow_head=False)
    app.router.add_get("/api/events/gh/{owner}/{repo}/{ref:.+}", event_stream, allow_head=False)
    app.router.add_get(r"/badge/gh/{owner}/{repo}/{ref:.+}.svg", badge)
    app.on_shutdown.append(_close_launches)
    app.middlewares.append(requester_middleware)
