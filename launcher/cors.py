"""CORS for the launch API, the event streams and the badge (BinderHub's ``cors_allow_origin``).

With ``CORS_ALLOW_ORIGIN`` set (``*`` or one origin), pages on other sites may read
``/build/gh/...`` (thebe-core opens an EventSource there), the progress streams and
the badge; their preflight ``OPTIONS`` is answered. Without it, nothing is added and
browsers keep other sites out. Only these read-only routes get the headers: the
webhook, setup and status pages never do.
"""
from __future__ import annotations

import re

from aiohttp import web

from bot.appkeys import SERVICES

CORS_PREFIXES = ("/build/", "/api/events/", "/api/builds/", "/badge/")
DEFAULT_ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Xsrftoken"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MAX_AGE = 600


def applies(path: str) -> bool:
    return path.startswith(CORS_PREFIXES)


def allow_headers(allow_origin: str | None) -> dict[str, str]:
    """The headers a response of a CORS route carries (none when CORS is off)."""
    if not allow_origin:
        return {}
    return {"Access-Control-Allow-Origin": allow_origin}


def preflight_headers(allow_origin: str | None, requested: str | None) -> dict[str, str]:
    """The answer to a preflight: GET from the allowed origin, with the headers it asked for
    (plain header names only; anything else falls back to the usual ones)."""
    headers = allow_headers(allow_origin)
    if not headers:
        return {}
    names = [h.strip() for h in (requested or "").split(",") if h.strip()]
    ok = names and len(names) <= 20 and all(_HEADER_NAME.match(n) for n in names)
    headers.update({
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": ", ".join(names) if ok else DEFAULT_ALLOWED_HEADERS,
        "Access-Control-Max-Age": str(MAX_AGE),
    })
    return headers


def _vary(existing: str | None, value: str) -> str:
    parts = [p.strip() for p in (existing or "").split(",") if p.strip()]
    if value.lower() not in (p.lower() for p in parts):
        parts.append(value)
    return ", ".join(parts)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if not applies(request.path):
        return
    services = request.app.get(SERVICES)
    origin = services.settings.cors_allow_origin if services is not None else None
    for key, value in allow_headers(origin).items():
        response.headers[key] = value
    if origin and origin != "*":
        response.headers["Vary"] = _vary(response.headers.get("Vary"), "Origin")


async def preflight(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    headers = preflight_headers(services.settings.cors_allow_origin,
                                request.headers.get("Access-Control-Request-Headers"))
    return web.Response(status=204, headers=headers)


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_on_prepare)
    for prefix in CORS_PREFIXES:
        app.router.add_route("OPTIONS", prefix + "{tail:.*}", preflight)
