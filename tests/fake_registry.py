"""The shared registry test double: a Docker Registry HTTP API v2 server in aiohttp.

It speaks the real wire format for what binder-prebuild uses (``/v2/``,
manifest HEAD/GET with content negotiation on ``Accept``, ``WWW-Authenticate``
challenges, a token endpoint) and lets tests inject faults: 5xx bursts, slow
answers (timeouts), a registry that is down, no HEAD support, revoked tokens.
The real registry (Debian's docker-registry) is the ``registry`` fixture; use
this one for auth flows and faults the real one cannot produce on demand.

    fake = FakeRegistry(auth="bearer", users={"alice": "s3cret"})
    server = await aiohttp_server(fake.app())
    fake.add_image("binder-prebuild/foo-abc123", "0123abcd")
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SERVICE = "fake-registry"


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclasses.dataclass
class _Fault:
    kind: str  # "status", "slow" or "hang"
    where: str  # "any", "manifests", "token", "v2"
    status: int = 503
    seconds: float = 0.0


@dataclasses.dataclass
class _Token:
    user: str | None
    repos: set[str]
    expires_at: float


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return web.json_response(body, status=status, headers=headers)


def manifest_url(registry_url: str, image: str) -> str:
    """Where a push of ``image`` (a full reference) PUTs its manifest on the registry at ``registry_url``."""
    name, tag = _repository_and_tag(image)
    return f"{registry_url.rstrip('/')}/v2/{name}/manifests/{tag}"


def _repository_and_tag(image: str) -> tuple[str, str]:
    """``[host[:port]/]path[:tag]`` -> (path, tag): the registry's own names, the host part dropped."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        name, tag = image, "latest"
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name, tag


class FakeRegistry:
    """State plus an aiohttp app; tests mutate the state between calls."""

    def __init__(
        self,
        *,
        auth: str = "none",
        users: dict[str, str] | None = None,
        anonymous_pull: bool = False,
        token_expires_in: int | None = 300,
        token_valid_for: float = 3600.0,
    ) -> None:
        if auth not in ("none", "basic", "bearer"):
            raise ValueError(f"auth must be none, basic or bearer, not {auth!r}")
        self.auth = auth
        self.users = dict(users or {})
        self.anonymous_pull = anonymous_pull
        self.token_expires_in = token_expires_in
        self.token_valid_for = token_valid_for
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.requests: list[Recorded] = []
        self.token_requests: list[Recorded] = []
        self.tokens: dict[str, _Token] = {}
        self.faults: list[_Fault] = []
        self.down = False
        self.head_supported = True
        self.hung = 0  # requests held by hang_next so far
        self._release = asyncio.Event()

    # -- test controls

    def add_image(self, name: str, tag: str, media_type: str = OCI_MANIFEST) -> str:
        """Store a manifest of ``media_type`` under name:tag (and its digest); returns the digest."""
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": {}, "layers": []}).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(name, tag)] = (media_type, body)
        self.manifests[(name, digest)] = (media_type, body)
        return digest

    def push(self, image: str) -> str:
        """What a finished ``docker push`` of a full image reference leaves behind; returns the digest."""
        return self.add_image(*_repository_and_tag(image))

    def has(self, image: str) -> bool:
        """Is ``image`` (a full reference, as pushed) stored here?"""
        return _repository_and_tag(image) in self.manifests

    def fail_next(self, n: int, status: int = 503, where: str = "any") -> None:
        self.faults += [_Fault("status", where, status=status) for _ in range(n)]

    def slow_next(self, n: int, seconds: float, where: str = "any") -> None:
        self.faults += [_Fault("slow", where, seconds=seconds) for _ in range(n)]

    def hang_next(self, n: int, where: str = "any") -> None:
        """The next ``n`` requests get no answer until ``release()`` (a client's timeout must give up)."""
        self._release.clear()
        self.faults += [_Fault("hang", where) for _ in range(n)]

    def release(self) -> None:
        """Let the requests held by ``hang_next`` go on to their normal answer."""
        self._release.set()

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def manifest_requests(self) -> list[Recorded]:
        return [r for r in self.requests if "/manifests/" in r.path]

    def write_docker_config(self, path: Path, host: str, user: str, *, style: str = "auth") -> Path:
        """A docker config.json holding ``user``'s password for ``host`` (``auth`` base64 or plain fields)."""
        password = self.users[user]
        if style == "auth":
            entry: dict[str, Any] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        else:
            entry = {"username": user, "password": password}
        path.write_text(json.dumps({"auths": {host: entry}}))
        return path

    # -- the server

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_faults])
        app.router.add_get("/v2/", self._base)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{ref}", self._manifest)
        app.router.add_get("/token", self._token)
        return app

    @web.middleware
    async def _record_and_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        rec = Recorded(request.method, request.path, dict(request.query), dict(request.headers))
        where = "token" if request.path == "/token" else "manifests" if "/manifests/" in request.path else "v2"
        (self.token_requests if where == "token" else self.requests).append(rec)
        if self.down:
            return _error(503, "UNAVAILABLE", "registry is down")
        for i, fault in enumerate(self.faults):
            if fault.where in ("any", where):
                del self.faults[i]
                if fault.kind == "slow":
                    await asyncio.sleep(fault.seconds)
                    break
                if fault.kind == "hang":
                    self.hung += 1
                    await self._release.wait()
                    break
                return _error(fault.status, "UNAVAILABLE", f"injected HTTP {fault.status}")
        return await handler(request)

    def _challenge(self, request: web.Request, scope: str | None) -> dict[str, str]:
        if self.auth == "basic":
            return {"WWW-Authenticate": f'Basic realm="{SERVICE}"'}
        value = f'Bearer realm="http://{request.host}/token",service="{SERVICE}"'
        if scope:
            value += f',scope="{scope}"'
        return {"WWW-Authenticate": value}

    def _basic_user(self, header: str) -> str | None:
        """The user named by a valid ``Basic`` header, else None."""
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user if user in self.users and secrets.compare_digest(self.users[user], password) else None

    def _authorized(self, request: web.Request, repo: str | None) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth == "none":
            return True
        if self.auth == "basic":
            return self._basic_user(header) is not None
        if not header.startswith("Bearer "):
            return False
        token = self.tokens.get(header[7:])
        if token is None or token.expires_at < time.monotonic():
            return False
        return repo is None or repo in token.repos

    async def _base(self, request: web.Request) -> web.Response:
        headers = {"Docker-Distribution-API-Version": "registry/2.0"}
        if not self._authorized(request, None):
            return _error(401, "UNAUTHORIZED", "authentication required", {**headers, **self._challenge(request, None)})
        return web.json_response({}, headers=headers)

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        name, ref = request.match_info["name"], request.match_info["ref"]
        if request.method == "PUT":
            return await self._put_manifest(request, name, ref)
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "manifests are read with GET or HEAD and pushed with PUT")
        if request.method == "HEAD" and not self.head_supported:
            return web.Response(status=405)
        if not self._authorized(request, name):
            return _error(401, "UNAUTHORIZED", "authentication required",
                          self._challenge(request, f"repository:{name}:pull"))
        stored = self.manifests.get((name, ref))
        accepted = {a.split(";")[0].strip() for h in request.headers.getall("Accept", []) for a in h.split(",")}
        if stored is None or stored[0] not in accepted:
            # like docker/distribution: a manifest the client cannot accept is "unknown"
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, body = stored
        headers = {
            "Content-Type": media_type,
            "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "Content-Length": str(len(body)),
        }
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=body, headers=headers)

    async def _put_manifest(self, request: web.Request, name: str, ref: str) -> web.Response:
        """The last step of a push: the manifest under its tag (blobs are not modelled: no layers here)."""
        if self.auth != "none":
            return _error(401, "UNAUTHORIZED", "pushes are modelled without auth only")
        media_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            return _error(400, "MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}")
        body = await request.read()
        try:
            json.loads(body)
        except ValueError:
            return _error(400, "MANIFEST_INVALID", "manifest is not JSON")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(name, ref)] = (media_type, body)
        self.manifests[(name, digest)] = (media_type, body)
        return web.Response(status=201, headers={"Location": f"/v2/{name}/manifests/{digest}",
                                                 "Docker-Content-Digest": digest})

    async def _token(self, request: web.Request) -> web.Response:
        if self.auth != "bearer":
            return _error(404, "NOT_FOUND", "no token endpoint")
        if request.query.get("service") != SERVICE:
            return _error(400, "INVALID", f"service must be {SERVICE}")
        header = request.headers.get("Authorization", "")
        user = self._basic_user(header)
        if header and user is None:
            return _error(401, "UNAUTHORIZED", "bad credentials")
        if user is None and not self.anonymous_pull:
            return _error(401, "UNAUTHORIZED", "credentials required")
        repos: set[str] = set()
        for scope in request.query.getall("scope", []):
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if kind != "repository" or not repo or "pull" not in actions.split(","):
                return _error(400, "INVALID", f"bad scope {scope!r}")
            repos.add(repo)
        value = secrets.token_urlsafe(16)
        self.tokens[value] = _Token(user, repos, time.monotonic() + self.token_valid_for)
        body: dict[str, Any] = {"token": value, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.token_expires_in is not None:
            body["expires_in"] = self.token_expires_in
        return web.json_response(body)
