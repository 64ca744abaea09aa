"""HTML pages of the launcher: the progress page and the error pages (Jinja2, autoescaped)."""
from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("launcher", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )


def html(env: jinja2.Environment, template: str, status: int = 200, headers: dict[str, str] | None = None,
         **context: Any) -> web.Response:
    body = env.get_template(template).render(**context)
    resp = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def error_page(env: jinja2.Environment, status: int, title: str, message: str, *, retry_after: int | None = None,
               spec: str | None = None, home: str | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return html(env, "error.html", status=status, headers=headers, title=title, message=message,
                retry_after=retry_after, spec=spec, status_code=status, home=home)
