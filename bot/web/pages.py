"""``GET /``: first-run setup (register the GitHub App from app.yml) or the status page.

The setup page belongs to the operator. Without App credentials the service makes
a one-time setup token at start and logs the link that carries it (as Jupyter
does); only a browser that opened that link (an HttpOnly cookie holding the token)
sees the setup page, changes the App's name, owner or visibility (a POSTed form
carrying the token too, so no link from elsewhere can set them), gets a pending
registration ``state`` and completes the callback. Strangers get 403 and cannot
evict the operator's pending state.

The "Register GitHub App" form POSTs the manifest straight to GitHub with a
one-time ``state``; GitHub sends the browser back to
``/setup/callback?code=...&state=...``, where the token cookie and the state are
checked (issued here, unused, and matching this browser's cookie), the code
converted and the credentials stored in DATA_DIR, then applied to this process.
With credentials, ``/`` shows the App, its installations, and recent deliveries
and builds. No page shows a secret.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import secrets
from pathlib import Path
from urllib.parse import quote
from typing import Any

import cachetools
import jinja2
from aiohttp import web

from bot.appkeys import SERVICES
from bot.github import manifest as mf
from bot.services import Services

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
STATE_COOKIE = "binder_prebuild_setup"
TOKEN_COOKIE = "binder_prebuild_setup_token"
STATE_TTL = 3600  # GitHub's manifest codes last an hour too

JINJA = web.AppKey("jinja", jinja2.Environment)
SETUP_STATES = web.AppKey("setup_states", cachetools.TTLCache)
SETUP_TOKEN = web.AppKey("setup_token", list)  # [token] while unregistered, [] once used


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    return env


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def setup(app: web.Application) -> None:
    app[JINJA] = make_env()
    app[SETUP_STATES] = cachetools.TTLCache(maxsize=16, ttl=STATE_TTL)
    app[SETUP_TOKEN] = [secrets.token_urlsafe(32)]
    app.router.add_get("/", index)
    app.router.add_post("/setup", setup_form)
    app.router.add_get("/setup/callback", callback)
    app.on_startup.append(_announce_setup)


async def _announce_setup(app: web.Application) -> None:
    """Log the setup link with the one-time token (only the operator reads the service's log)."""
    services = app[SERVICES]
    if services.settings.has_app_credentials:
        app[SETUP_TOKEN].clear()
        return
    link = f"{services.settings.public_url.rstrip('/')}/?token={app[SETUP_TOKEN][0]}"
    log.warning("no GitHub App configured yet: register one at %s (a one-time setup token, "
                "valid until the App is registered or the service restarts)", link)


def setup_token_ok(request: web.Request, candidate: str | None) -> bool:
    """Does ``candidate`` match this run's unused setup token? (constant time)"""
    tokens = request.app[SETUP_TOKEN]
    return bool(tokens and candidate) and secrets.compare_digest(str(candidate).encode(), tokens[0].encode())


def _operator(request: web.Request) -> bool:
    return setup_token_ok(request, request.cookies.get(TOKEN_COOKIE))


def _forbidden(request: web.Request) -> web.Response:
    return render(request, "message.html", status=403, title="Setup needs the setup token",
                  message="This service has no GitHub App yet, and only its operator may register one: open "
                          "the setup link (with ?token=...) that the service printed in its log when it started.")


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    html = request.app[JINJA].get_template(template).render(**context)
    resp = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def launch_allow_links(public_url: str, patterns: tuple[str, ...]) -> list[dict[str, str | None]]:
    """LAUNCH_ALLOW entries for the page: a launch link (default branch) for each exact ``owner/repo``."""
    base = public_url.rstrip("/")
    out: list[dict[str, str | None]] = []
    for entry in (p.strip() for p in patterns):
        if not entry:
            continue
        exact = entry.count("/") == 1 and not any(c in entry for c in "*?[")
        url = f"{base}/v2/gh/{quote(entry, safe='/')}/HEAD" if exact else None
        out.append({"name": entry, "url": url})
    return out


# --- GET / ---------------------------------------------------------------------------------

async def index(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if services.settings.has_app_credentials:
        return await status_page(request, services)
    token = request.query.get("token")
    if token is not None:
        if not setup_token_ok(request, token):
            return _forbidden(request)
        # the token moves into a cookie, out of the address bar, history and Referer
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(TOKEN_COOKIE, token, max_age=STATE_TTL * 24, httponly=True, samesite="Lax",
                        secure=_https(services))
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        raise resp
    if not _operator(request):
        return _forbidden(request)
    return setup_page(request, services)  # the defaults: a link cannot choose name, owner or visibility


async def setup_form(request: web.Request) -> web.Response:
    """The operator's own choices (POST: a cross-site form carries neither the Lax cookie nor the token)."""
    services = request.app[SERVICES]
    if services.settings.has_app_credentials:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    if not _operator(request) or not setup_token_ok(request, str(form.get("token") or "")):
        return _forbidden(request)
    return setup_page(request, services, org=str(form.get("org") or "").strip() or None,
                      name=str(form.get("name") or "").strip() or None, public=form.get("public") == "on")


def _https(services: Services) -> bool:
    return services.settings.public_url.startswith("https://")


def setup_page(request: web.Request, services: Services, *, org: str | None = None, name: str | None = None,
               public: bool = False) -> web.Response:
    settings = services.settings
    error = None
    if org and not mf.valid_login(org):
        error, org = f"{org!r} is not a GitHub organization name.", None
    state = secrets.token_urlsafe(24)
    request.app[SETUP_STATES][state] = True
    data = mf.manifest(settings, name=name, public=public or None)
    resp = render(
        request, "setup.html", status=400 if error else 200, error=error, org=org or "", name=data["name"],
        public=bool(data.get("public")), action=mf.registration_url(settings, state=state, org=org),
        manifest_json=json.dumps(data), manifest=data, web_url=mf.web_url(settings.github_api_url),
        loopback=mf.loopback_public_url(settings), public_url=settings.public_url,
        token=request.app[SETUP_TOKEN][0],
        allowed=launch_allow_links(settings.public_url, settings.launch_allow),
    )
    resp.set_cookie(STATE_COOKIE, state, max_age=STATE_TTL, httponly=True, samesite="Lax",
                    secure=_https(services))
    return resp


async def _app_summary(services: Services) -> dict[str, Any]:
    """Name and link of the App: from what the manifest flow stored, else GET /app (briefly)."""
    app_id = str(services.settings.github_app_id)
    try:
        stored = mf.load_stored_credentials(services.settings.data_dir)
    except Exception:  # a broken file is reported by load_settings; the page still renders
        stored = None
    if stored and str(stored.get("id")) == app_id and stored.get("slug"):
        return mf.public_summary(stored)
    if services.github is not None:
        try:
            return mf.public_summary(await asyncio.wait_for(services.github.app_info(), 3))
        except Exception as e:
            log.info("status page: GET /app failed: %s", type(e).__name__)
    return {"id": app_id, "slug": None, "name": None, "html_url": None, "owner": None}


async def status_page(request: web.Request, services: Services) -> web.Response:
    app = await _app_summary(services)
    installs = await services.gh_state.installations()
    deliveries = await services.deliveries.recent(20)
    builds = await services.builds.recent(20)
    from launcher.shown import visible_repos  # the launcher's rule: private repositories stay private

    names = [f"{b.owner}/{b.repo}" for b in builds] + [str(d["repo"]) for d in deliveries if d.get("repo")]
    shown = await visible_repos(services, names)
    builds = [b for b in builds if f"{b.owner}/{b.repo}".lower() in shown]
    deliveries = [d for d in deliveries if not d.get("repo") or str(d["repo"]).lower() in shown]
    for d in deliveries:
        if d.get("error"):
            d["error"] = str(d["error"])[:300]
    return render(
        request, "status.html", app=app, installations=installs, deliveries=deliveries, builds=builds,
        webhook_secret_set=bool(services.settings.github_webhook_secret),
        webhook_url=f"{services.settings.public_url.rstrip('/')}/webhooks/github",
        install_url=f"{app['html_url']}/installations/new" if app.get("html_url") else None,
        public_url=services.settings.public_url.rstrip("/"),
        allowed=launch_allow_links(services.settings.public_url, services.settings.launch_allow),
    )


# --- GET /setup/callback -------------------------------------------------------------------

async def callback(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    if settings.has_app_credentials:
        return render(request, "message.html", status=409, title="Already configured",
                      message="This service already has GitHub App credentials; nothing was changed.")
    if not _operator(request):
        return _forbidden(request)
    code = request.query.get("code", "")
    state = request.query.get("state", "")
    states = request.app[SETUP_STATES]
    cookie = request.cookies.get(STATE_COOKIE, "")
    if not state or state not in states or not secrets.compare_digest(state, cookie):
        return render(request, "message.html", status=400, title="Registration not recognised",
                      message="This link does not match a registration started from this browser in the "
                              "last hour. Start again from the setup page.", restart=True)
    states.pop(state, None)  # one use only
    try:
        app = await mf.convert(services.session, settings, code)
    except mf.ManifestError as e:
        return render(request, "message.html", status=e.status, title="Registration failed",
                      message=str(e), restart=e.status != 409)
    env_secret = settings.github_webhook_secret
    request.app[SETUP_TOKEN].clear()  # one time: registered
    apply_credentials(services)
    resp = render(request, "registered.html", app=app, data_dir=str(settings.data_dir),
                  install_url=f"{app['html_url']}/installations/new" if app.get("html_url") else None,
                  secret_conflict=bool(env_secret))
    resp.del_cookie(STATE_COOKIE)
    resp.del_cookie(TOKEN_COOKIE)
    return resp


def apply_credentials(services: Services) -> bool:
    """Use the stored credentials in this process at once (the receiver and dispatcher read
    ``services.settings``/``services.github`` per delivery); a restart picks them up everywhere."""
    stored = mf.load_stored_credentials(services.settings.data_dir)
    if not stored:
        return False
    s = services.settings
    services.settings = dataclasses.replace(
        s, github_app_id=s.github_app_id or str(stored["id"]), github_private_key=s.github_private_key or stored["pem"],
        github_webhook_secret=s.github_webhook_secret or stored["webhook_secret"])
    if services.github is None and services.settings.has_app_credentials:
        from bot.github.client import GitHubApp
        from bot.github.installations import refresh_installations_soon

        services.github = GitHubApp(services.session, services.settings, metrics=services.metrics)
        refresh_installations_soon(services)
    return True
