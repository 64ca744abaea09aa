"""First-run registration: the GitHub App Manifest flow, and the credentials it leaves in DATA_DIR.

1. The setup page POSTs ``manifest(settings)`` (app.yml with PUBLIC_URL filled in) to
   ``{web}/settings/apps/new`` (or ``{web}/organizations/{org}/settings/apps/new``).
2. GitHub creates the App and redirects to ``redirect_url`` with a one-hour ``code``.
3. ``convert`` exchanges it (``POST /app-manifests/{code}/conversions``, no auth) for the
   App's id, private key and webhook secret, stored in ``DATA_DIR/github-app.json`` and
   ``DATA_DIR/github-app.pem`` (both mode 0600); ``load_settings`` reads them at the next start.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import gidgethub
import yaml

from bot.config import CREDENTIALS_FILE, KEY_FILE, load_stored_credentials  # noqa: F401 (part of this module's surface)

if TYPE_CHECKING:
    import aiohttp

    from bot.config import Settings

log = logging.getLogger(__name__)

SECRET_FIELDS = frozenset({"pem", "webhook_secret", "client_secret"})
_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")


class ManifestError(Exception):
    """The registration cannot go on; ``str(e)`` is safe to show to the user."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- URLs --------------------------------------------------------------------------

def web_url(api_url: str) -> str:
    """GitHub's web host for an API base: api.github.com → github.com; GHES https://h/api/v3 → https://h.

    Anything else (a test server) is its own web host.
    """
    parts = urlsplit(api_url.rstrip("/"))
    host, path = parts.netloc, parts.path
    if host.lower() == "api.github.com" and path in ("", "/"):
        return urlunsplit((parts.scheme, "github.com", "", "", ""))
    if host.lower().startswith("api.") and path in ("", "/"):  # GHE.com data residency: api.octo.ghe.com
        return urlunsplit((parts.scheme, host[4:], "", "", ""))
    if path.rstrip("/").endswith("/api/v3"):
        return urlunsplit((parts.scheme, host, path.rstrip("/")[: -len("/api/v3")], "", ""))
    return urlunsplit((parts.scheme, host, path, "", ""))


def valid_login(name: str) -> bool:
    return bool(_LOGIN_RE.match(name)) and "--" not in name and not name.endswith("-")


def registration_url(settings: "Settings", *, state: str, org: str | None = None) -> str:
    """Where the manifest form posts: a personal account's or an organization's new-App page."""
    base = web_url(settings.github_api_url)
    if org:
        if not valid_login(org):
            raise ManifestError(f"{org!r} is not a GitHub organization name")
        path = f"/organizations/{quote(org)}/settings/apps/new"
    else:
        path = "/settings/apps/new"
    return f"{base}{path}?state={quote(state)}"


# --- the manifest -----------------------------------------------------------------------

def _template_path() -> Path:
    here = Path(__file__).resolve().parent.parent  # bot/
    for candidate in (here / "app.yml", here.parent / "app.yml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("app.yml (the GitHub App manifest) is missing from the installation")


def load_template(path: Path | None = None) -> dict[str, Any]:
    data = yaml.safe_load((path or _template_path()).read_text())
    if not isinstance(data, dict):
        raise ValueError("app.yml must be a mapping")
    return data


def _fill(value: Any, public_url: str) -> Any:
    if isinstance(value, str):
        return value.replace("{PUBLIC_URL}", public_url)
    if isinstance(value, list):
        return [_fill(v, public_url) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, public_url) for k, v in value.items()}
    return value


def manifest(settings: "Settings", *, name: str | None = None, public: bool | None = None,
             template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """app.yml with ``{PUBLIC_URL}`` replaced; ``name``/``public`` override it (from the setup form)."""
    data = _fill(dict(template if template is not None else load_template()), settings.public_url.rstrip("/"))
    if name:
        data["name"] = name.strip()[:34]  # GitHub's limit for App names
    if public is not None:
        data["public"] = bool(public)
    return data


def loopback_public_url(settings: "Settings") -> bool:
    """GitHub cannot deliver webhooks to a loopback PUBLIC_URL (worth a warning on the page)."""
    host = (urlsplit(settings.public_url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


# --- stored credentials ------------------------------------------------------------------

def _write_private(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def store_credentials(data_dir: Path, app: Mapping[str, Any], *, api_url: str | None = None,
                      overwrite: bool = False) -> Path:
    """Save a conversion's answer: the key in github-app.pem, the rest in github-app.json (both 0600)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    if path.exists() and not overwrite:
        raise ManifestError("App credentials are already stored in DATA_DIR; remove github-app.json "
                            "and github-app.pem to register a new App", status=409)
    for field in ("id", "pem", "webhook_secret"):
        if not app.get(field):
            raise ManifestError(f"GitHub's answer has no {field}; register again", status=502)
    _write_private(data_dir / KEY_FILE, str(app["pem"]))
    record = {
        "id": app["id"], "slug": app.get("slug"), "name": app.get("name"), "html_url": app.get("html_url"),
        "owner": (app.get("owner") or {}).get("login"), "client_id": app.get("client_id"),
        "client_secret": app.get("client_secret"), "webhook_secret": app["webhook_secret"],
        "private_key_path": KEY_FILE, "github_api_url": api_url, "created_at": int(time.time()),
    }
    _write_private(path, json.dumps(record, indent=2) + "\n")
    return path


def public_summary(app: Mapping[str, Any]) -> dict[str, Any]:
    """What may be shown on a page: never the key or a secret."""
    owner = app.get("owner")
    if isinstance(owner, Mapping):
        owner = owner.get("login")
    return {"id": app.get("id"), "slug": app.get("slug"), "name": app.get("name"),
            "html_url": app.get("html_url"), "owner": owner}


# --- conversion ----------------------------------------------------------------------------

async def convert(session: "aiohttp.ClientSession", settings: "Settings", code: str, *,
                  policy: Any = None) -> dict[str, Any]:
    """Exchange the redirect's ``code`` for the App's credentials and store them in DATA_DIR.

    Returns the App's public summary (id, slug, name, html_url, owner).
    """
    from bot.github.client import GitHubClient, describe_error

    if not code or not _CODE_RE.match(code):
        raise ManifestError("the code from GitHub is missing or malformed")
    if (Path(settings.data_dir) / CREDENTIALS_FILE).exists():
        raise ManifestError("App credentials are already stored in DATA_DIR", status=409)
    gh = GitHubClient(session, base_url=settings.github_api_url, policy=policy, label="manifest")
    try:
        app = await gh.post("/app-manifests/{code}/conversions", {"code": code}, data=b"")
    except gidgethub.BadRequest as e:
        if e.status_code in (404, 422):
            raise ManifestError("GitHub does not know this code: it is used or expired (codes last one "
                                "hour). Register the App again.") from None
        raise ManifestError(f"GitHub refused the conversion: {describe_error(e)}", status=502) from None
    except gidgethub.GitHubException as e:
        raise ManifestError(f"GitHub did not complete the conversion: {describe_error(e)}", status=502) from None
    if not isinstance(app, dict):
        raise ManifestError("GitHub's answer to the conversion is not an App", status=502)
    path = store_credentials(settings.data_dir, app, api_url=settings.github_api_url)
    log.info("GitHub App %s (id %s) registered; credentials stored in %s", app.get("slug"), app.get("id"), path)
    return public_summary(app)
