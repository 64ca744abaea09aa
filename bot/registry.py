"""Docker Registry HTTP API v2 client: "is this image's manifest there?".

The registry is the truth for built images, so the answer must be honest:
True (found), False (the registry said 404), or None (unknown: down, 5xx,
timeouts, auth refused). None never becomes False, because a wrong "missing"
would trigger rebuilds in a loop. Answers are cached (found: long, missing:
short, unknown: never). Auth follows the registry's ``WWW-Authenticate``
challenge: anonymous, Basic, or Bearer tokens from its token endpoint, with
credentials from a docker ``config.json``.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cachetools import TLRUCache, TTLCache

from bot.builders.base import ImageLookup
from bot.images import split_registry

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])

DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
DOCKER_HUB_API = "https://registry-1.docker.io"


class RegistryUnavailable(Exception):
    """The registry gave no usable answer (down, 5xx, timeouts) after retries."""


# ---------------------------------------------------------------- pure helpers


@dataclasses.dataclass(frozen=True)
class Credentials:
    username: str
    password: str = dataclasses.field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_registry_url(url: str) -> str:
    """The API base (scheme://host[:port]) for a REGISTRY_URL as people write it.

    No scheme means https, except for loopback hosts (plain http, like Docker's
    own rule for insecure local registries). Docker Hub's names map to its API host.
    """
    url = url.strip().rstrip("/")
    if "://" not in url:
        host = urlsplit("//" + url).hostname or ""
        url = ("http://" if _is_loopback(host) else "https://") + url
    parts = urlsplit(url)
    if (parts.hostname or "").lower() in DOCKER_HUB_ALIASES:
        return DOCKER_HUB_API
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def registry_host_key(value: str) -> str:
    """A docker config ``auths`` key or a registry URL reduced to ``host[:port]``."""
    value = value.strip()
    if "://" not in value:
        value = "//" + value
    netloc = urlsplit(value).netloc.lower()
    host = netloc.rsplit("@", 1)[-1]
    if host.split(":")[0] in DOCKER_HUB_ALIASES:
        return "docker.io"
    return host


def parse_docker_config(data: Mapping[str, Any]) -> dict[str, Credentials]:
    """``{"auths": {host: {"auth": b64(user:pass)} | {"username","password"}}}`` -> host -> creds."""
    out: dict[str, Credentials] = {}
    auths = data.get("auths") if isinstance(data, Mapping) else None
    if not isinstance(auths, Mapping):
        return out
    for key, entry in auths.items():
        if not isinstance(entry, Mapping):
            continue
        creds: Credentials | None = None
        if entry.get("auth"):
            try:
                user, sep, pw = base64.b64decode(str(entry["auth"])).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                log.warning("docker config: unreadable 'auth' for %s, ignored", key)
                continue
            if sep:
                creds = Credentials(user, pw)
        elif entry.get("username") and entry.get("password") is not None:
            creds = Credentials(str(entry["username"]), str(entry["password"]))
        if creds is not None:
            out[registry_host_key(str(key))] = creds
    return out


def docker_config_path(configured: str | None, env: Mapping[str, str] | None = None) -> Path:
    """settings.docker_config (a file or a directory), else $DOCKER_CONFIG/config.json, else ~/.docker."""
    env = os.environ if env is None else env
    if configured:
        p = Path(configured).expanduser()
        return p / "config.json" if p.is_dir() else p
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]).expanduser() / "config.json"
    return Path.home() / ".docker" / "config.json"


def load_docker_credentials(path: Path) -> dict[str, Credentials]:
    """Read a docker config.json; a missing or broken file means anonymous access."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.error("docker config %s unreadable (%s); using anonymous registry access", path, type(e).__name__)
        return {}
    if isinstance(data, Mapping) and (data.get("credsStore") or data.get("credHelpers")):
        log.warning("docker config %s: credential helpers are not supported; only 'auths' entries are used", path)
    return parse_docker_config(data)


_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def manifest_reference(image: str, docker_hub: bool = False) -> tuple[str, str]:
    """Full image reference (``host:port/path:tag`` or ``...@sha256:...``) -> (repository path, reference).

    The host part is dropped: the client asks its own registry. Docker Hub's
    one-component names live under ``library/``.
    """
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    _host, name, tag = split_registry(image)
    if docker_hub and "/" not in name:
        name = f"library/{name}"
    return name, digest or tag


def backoff_delays(attempts: int, base: float, cap: float = 10.0) -> list[float]:
    """Exponential delays between ``attempts`` tries (``attempts - 1`` of them), with jitter."""
    return [min(cap, base * 2**i) * (0.5 + random.random() / 2) for i in range(max(0, attempts - 1))]


# ---------------------------------------------------------------- the client


@dataclasses.dataclass
class _Reply:
    status: int
    headers: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class _Token:
    value: str = dataclasses.field(repr=False)
    ttl: float


class RegistryClient(ImageLookup):
    """One registry; thin I/O over the pure helpers above. Safe to share across tasks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry_url: str,
        docker_config: str | None = None,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        found_ttl: float = 6 * 3600,
        missing_ttl: float = 15.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.base_url = normalize_registry_url(registry_url)
        self.host = registry_host_key(self.base_url)
        self.docker_hub = self.base_url == DOCKER_HUB_API
        self.credentials: Credentials | None = load_docker_credentials(
            docker_config_path(docker_config)).get(self.host)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._found: TTLCache[str, bool] = TTLCache(cache_size, found_ttl, timer=clock)
        self._missing: TTLCache[str, bool] = TTLCache(cache_size, missing_ttl, timer=clock)
        self._tokens: TLRUCache[str, _Token] = TLRUCache(256, ttu=lambda _k, v, now: now + v.ttl, timer=clock)
        self._challenge: tuple[str, dict[str, str]] | None = None  # learnt from the first 401
        self._inflight: dict[str, asyncio.Task[bool | None]] = {}
        log.info("registry %s (%s)", self.base_url, "with credentials" if self.credentials else "anonymous")

    # -- public API

    async def exists(self, image: str) -> bool | None:
        """True if the manifest is there, False if the registry says 404, None if unknown."""
        if image in self._found:
            return True
        if image in self._missing:
            return False
        task = self._inflight.get(image)
        if task is None:  # one lookup per image at a time; others wait for its answer
            task = asyncio.create_task(self._lookup(image))
            self._inflight[image] = task
            task.add_done_callback(lambda _t, image=image: self._inflight.pop(image, None))
        return await asyncio.shield(task)

    def forget(self, image: str) -> None:
        """Drop a cached answer (say, right after pushing that image)."""
        self._found.pop(image, None)
        self._missing.pop(image, None)

    async def health(self) -> tuple[bool, str]:
        """GET /v2/ once: 200 or 401 means the registry answers."""
        url = f"{self.base_url}/v2/"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return False, f"{self.base_url} unreachable ({type(e).__name__})"
        if status == 200:
            return True, f"{self.base_url} ok"
        if status == 401:
            return True, f"{self.base_url} ok (authentication required)"
        return False, f"{self.base_url} answered HTTP {status}"

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- lookup

    async def _lookup(self, image: str) -> bool | None:
        try:
            name, ref = manifest_reference(image, self.docker_hub)
        except ValueError:
            log.error("image %s: not a valid image reference", image)
            return None
        path = f"/v2/{name}/manifests/{ref}"
        try:
            reply = await self._authorized("HEAD", path, name, image)
            if reply.status in (405, 501):  # HEAD not supported: GET says the same
                reply = await self._authorized("GET", path, name, image)
        except RegistryUnavailable as e:
            log.warning("image %s: registry %s unavailable: %s", image, self.base_url, e)
            return None
        except Exception:  # an unknown answer, never a crash in the scheduler
            log.exception("image %s: registry lookup failed", image)
            return None
        if reply.status == 200:
            self._missing.pop(image, None)
            self._found[image] = True
            return True
        if reply.status == 404:
            self._missing[image] = True
            return False
        log.warning("image %s: registry %s answered HTTP %s; status unknown", image, self.base_url, reply.status)
        return None

    async def _authorized(self, method: str, path: str, name: str, image: str) -> _Reply:
        """One request with whatever auth the registry asked for, re-authenticating once on 401."""
        scope = f"repository:{name}:pull"
        headers = {"Accept": MANIFEST_ACCEPT}
        auth = await self._auth_header(scope)
        if auth:
            headers["Authorization"] = auth
        reply = await self._request(method, self.base_url + path, headers)
        if reply.status != 401:
            return reply
        challenge = reply.headers.get("WWW-Authenticate", "")
        self._challenge = parse_www_authenticate(challenge) if challenge else None
        self._tokens.pop(self._token_key(scope), None)
        auth2 = await self._auth_header(scope)
        if not auth2 or auth2 == auth:
            log.warning("image %s: registry %s refused access (%s credentials)", image, self.base_url,
                        "with" if self.credentials else "no")
            return reply
        headers["Authorization"] = auth2
        return await self._request(method, self.base_url + path, headers)

    async def _auth_header(self, scope: str) -> str | None:
        if self._challenge is None:
            return None
        scheme, params = self._challenge
        if scheme == "basic":
            return self.credentials.basic() if self.credentials else None
        if scheme != "bearer" or not params.get("realm"):
            return None
        token = await self._token(scope)
        return f"Bearer {token}" if token else None

    def _token_key(self, scope: str) -> str:
        _scheme, params = self._challenge or ("", {})
        return f"{params.get('realm', '')}|{params.get('service', '')}|{scope}"

    async def _token(self, scope: str) -> str | None:
        """A bearer token for ``scope``, from the cache or the challenge's realm."""
        key = self._token_key(scope)
        cached = self._tokens.get(key)
        if cached is not None:
            return cached.value
        _scheme, params = self._challenge or ("", {})
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        reply_body = await self._request_json(params["realm"], query, headers)
        if reply_body is None:
            return None
        value = reply_body.get("token") or reply_body.get("access_token")
        if not isinstance(value, str) or not value:
            log.warning("registry %s: token endpoint gave no token", self.base_url)
            return None
        try:
            expires = float(reply_body.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires = 60.0
        ttl = max(1.0, expires - min(30.0, expires * 0.1))  # renew a little before it expires
        self._tokens[key] = _Token(value, ttl)
        return value

    async def _request_json(self, url: str, query: dict[str, str], headers: dict[str, str]) -> dict | None:
        """GET the token endpoint (with retries); None when it refuses us."""
        delays = backoff_delays(self.attempts, self.backoff)
        for attempt in range(self.attempts):
            try:
                async with self.session.get(url, params=query, headers=headers, timeout=self.timeout) as resp:
                    if resp.status < 500 and resp.status != 429:
                        if resp.status != 200:
                            log.warning("registry %s: token endpoint answered HTTP %s", self.base_url, resp.status)
                            return None
                        body = await resp.json(content_type=None)
                        return body if isinstance(body, dict) else None
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                problem = type(e).__name__
            if attempt < len(delays):
                await asyncio.sleep(delays[attempt])
        raise RegistryUnavailable(f"token endpoint: {problem}")

    async def _request(self, method: str, url: str, headers: dict[str, str]) -> _Reply:
        """The one request wrapper: timeout, retries with backoff on 5xx, 429 and network errors."""
        delays = backoff_delays(self.attempts, self.backoff)
        problem = "no attempt"
        for attempt in range(self.attempts):
            wait = None
            try:
                async with self.session.request(
                    method, url, headers=headers, timeout=self.timeout, allow_redirects=True
                ) as resp:
                    if resp.status < 500 and resp.status != 429:
                        if method != "HEAD":
                            await resp.read()
                        return _Reply(resp.status, dict(resp.headers))
                    problem = f"HTTP {resp.status}"
                    wait = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                problem = type(e).__name__
            if attempt < len(delays):
                await asyncio.sleep(max(delays[attempt], wait or 0.0))
            log.debug("registry %s: %s %s failed (%s), attempt %d", self.base_url, method, url, problem, attempt + 1)
        raise RegistryUnavailable(f"{problem} after {self.attempts} attempts")


def _retry_after(value: str | None, cap: float = 30.0) -> float | None:
    try:
        return min(cap, max(0.0, float(value))) if value else None
    except ValueError:
        return None
