"""The JupyterHub REST API client: one wrapper for every call (timeout, retry 5xx, 404/409 mapped).

A thin shell over the app's one aiohttp session. Every call is timed (``calls``)
so the benchmark can subtract the Hub's share from a launch. Tokens never reach
the logs: only method, path and status are logged.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)


class HubError(Exception):
    """The Hub answered with an error (``status``) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HubUnavailable(HubError):
    """No answer, or 5xx after the retries: the Hub (or its proxy) is down."""


class HubNotFound(HubError):
    pass


class HubConflict(HubError):
    pass


@dataclasses.dataclass(frozen=True)
class HubCall:
    method: str
    path: str
    status: int
    started: float  # time.perf_counter()
    seconds: float


def retry_delays(retries: int, base: float, cap: float = 8.0) -> list[float]:
    """Exponential backoff between attempts: base, 2*base, 4*base ... (at most ``cap``)."""
    return [min(cap, base * 2**i) for i in range(max(0, retries - 1))]


def _message(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
    except ValueError:
        pass
    text = body.decode("utf-8", "replace").strip()
    return text[:300] or f"HTTP {status}"


def parse_sse_lines(buffer: str) -> tuple[list[dict[str, Any]], str]:
    """Split complete SSE events off ``buffer``; return their JSON ``data`` and the rest."""
    events: list[dict[str, Any]] = []
    while "\n\n" in buffer:
        block, buffer = buffer.split("\n\n", 1)
        data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
        if not data:
            continue  # keepalive or comment
        try:
            parsed = json.loads(data)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            events.append(parsed)
    return events, buffer


class HubClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        token: str | None,
        *,
        public_url: str | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 30.0,
        record_calls: int = 10_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.session = session
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.public_url = (public_url or _public_from_api(self.api_url)).rstrip("/")
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.calls: collections.deque[HubCall] = collections.deque(maxlen=record_calls)
        self._sleep = sleep  # the waits between retries (tests drive them instead of sleeping)

    def __repr__(self) -> str:  # never show the token
        return f"HubClient({self.api_url!r})"

    @property
    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self._token:
            h["Authorization"] = f"token {self._token}"
        return h

    async def close(self) -> None:
        """The session belongs to the app; nothing of our own to close."""

    def _record(self, method: str, path: str, status: int, started: float) -> None:
        self.calls.append(HubCall(method, path, status, started, time.perf_counter() - started))

    async def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, str] | None = None,
        retry_conflict_as_success: bool = False,
    ) -> tuple[int, Any]:
        """One API call: retries connection errors and 5xx with backoff; maps 404 and 409.

        ``retry_conflict_as_success``: a 409 on a retry means our earlier attempt
        did get through (BinderHub treats it so), for creations that are not idempotent.
        """
        url = self.api_url + path
        delays = retry_delays(self.retries, self.backoff)
        last: HubError | None = None
        for attempt in range(self.retries):
            started = time.perf_counter()
            status = 0
            try:
                async with self.session.request(
                    method, url, json=json_body, params=params, headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as resp:
                    status = resp.status
                    body = await resp.read()
                    from_hub = "json" in resp.headers.get("Content-Type", "")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                self._record(method, path, 0, started)
                last = HubUnavailable(0, f"JupyterHub did not answer ({type(e).__name__}: {e})")
                log.warning("hub: %s %s failed: %s (attempt %d)", method, path, type(e).__name__, attempt + 1)
            else:
                self._record(method, path, status, started)
                if status < 400:
                    if not body:
                        return status, None
                    try:
                        return status, json.loads(body)
                    except ValueError:
                        return status, body.decode("utf-8", "replace")
                message = _message(status, body)
                if status == 404 and not from_hub:
                    # not the Hub's API answering (its errors are JSON): a proxy without its routes yet
                    last = HubUnavailable(status, f"no JupyterHub API behind {self.api_url} ({message[:100]})")
                    log.warning("hub: %s %s -> 404 not from the Hub (attempt %d)", method, path, attempt + 1)
                elif status >= 500:
                    last = HubUnavailable(status, f"JupyterHub answered {status}: {message}")
                    log.warning("hub: %s %s -> %d (attempt %d)", method, path, status, attempt + 1)
                elif status == 409 and retry_conflict_as_success and attempt > 0:
                    log.info("hub: %s %s -> 409 on retry, treating as done", method, path)
                    return status, None
                elif status == 404:
                    raise HubNotFound(status, message)
                elif status == 409:
                    raise HubConflict(status, message)
                else:
                    raise HubError(status, message)
            if attempt < len(delays):
                await self._sleep(delays[attempt])
        assert last is not None
        raise last

    # -- the calls the launcher makes ----------------------------------------
    async def health(self) -> tuple[bool, str]:
        """``/hub/api/health`` (no token needed): for ``/health``."""
        started = time.perf_counter()
        try:
            async with self.session.get(self.api_url + "/health",
                                        timeout=aiohttp.ClientTimeout(total=5)) as resp:
                self._record("GET", "/health", resp.status, started)
                if resp.status == 200:
                    return True, f"JupyterHub at {self.public_url} answers"
                return False, f"JupyterHub health answered {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self._record("GET", "/health", 0, started)
            return False, f"JupyterHub at {self.api_url} is not reachable ({type(e).__name__})"

    async def create_user(self, name: str) -> None:
        await self.request("POST", f"/users/{quote(name, safe='')}", retry_conflict_as_success=True)

    async def delete_user(self, name: str, wait: float = 60.0) -> None:
        """Stop the user's server (interrupting a pending spawn), wait until it is gone, delete the user.

        JupyterHub refuses to delete a user whose server is still active, so the
        deletion waits for the user model to show no active server.
        """
        path = f"/users/{quote(name, safe='')}"
        await self.stop_server(name)
        deadline = time.monotonic() + wait
        while True:
            try:
                model = await self.user(name)
            except HubNotFound:
                return
            if not any(not s.get("stopped") for s in (model.get("servers") or {}).values()):
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        while True:
            try:
                await self.request("DELETE", path)
                return
            except HubNotFound:
                return
            except HubError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)

    async def delete_idle_user(self, name: str) -> None:
        """Delete a user that has no server (a spare never used); already gone is fine."""
        try:
            await self.request("DELETE", f"/users/{quote(name, safe='')}")
        except HubNotFound:
            pass

    async def stop_server(self, name: str, server_name: str = "") -> None:
        """Ask for the server to stop; no user, no server or already stopping is fine."""
        try:
            await self.request("DELETE", self._server_path(name, server_name))
        except HubNotFound:
            pass
        except HubError as e:
            if e.status != 400:
                raise

    @staticmethod
    def _server_path(name: str, server_name: str) -> str:
        path = f"/users/{quote(name, safe='')}/server"
        if server_name:
            path = f"/users/{quote(name, safe='')}/servers/{quote(server_name, safe='')}"
        return path

    async def start_server(self, name: str, user_options: dict[str, Any], server_name: str = "") -> str:
        """Ask for a server; returns "started" (201), "pending" (202) or "running"/"pending" (400 on retry).

        The body is the user_options object itself, which both JupyterHub 5 and 6 take.
        """
        path = self._server_path(name, server_name)
        try:
            status, _ = await self.request("POST", path, json_body=user_options)
        except HubError as e:
            if e.status == 400 and "is already running" in e.message:
                return "running"
            if e.status == 400 and "is pending spawn" in e.message:
                return "pending"
            raise
        return "started" if status == 201 else "pending"

    async def user(self, name: str) -> dict[str, Any]:
        _, data = await self.request("GET", f"/users/{quote(name, safe='')}")
        return data

    async def active_users(self, page_size: int = 200) -> list[dict[str, Any]]:
        """Every user with an active (pending or ready) server, all pages."""
        users: list[dict[str, Any]] = []
        offset = 0
        while True:
            _, data = await self.request(
                "GET", "/users", params={"state": "active", "offset": str(offset), "limit": str(page_size)})
            page = data.get("items", []) if isinstance(data, dict) else (data or [])
            users.extend(page)
            if len(page) < page_size:
                return users
            offset += len(page)

    async def progress(self, name: str, server_name: str = "", *, timeout: float | None = None
                       ) -> AsyncIterator[dict[str, Any]]:
        """The spawn's progress events (JupyterHub's SSE), ending with ready or failed.

        A 5xx or a dropped connection before the end is retried with backoff; the
        caller bounds the whole wait (``LAUNCH_TIMEOUT``).
        """
        path = self._server_path(name, server_name) + "/progress"
        delays = retry_delays(self.retries, self.backoff)
        attempt = 0
        while True:
            started = time.perf_counter()
            status = 0
            try:
                async with self.session.get(
                    self.api_url + path, headers={**self._headers, "Accept": "text/event-stream"},
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout),
                ) as resp:
                    status = resp.status
                    if status >= 400:
                        body = await resp.read()
                        self._record("GET", path, status, started)
                        if status < 500:
                            raise (HubNotFound if status == 404 else HubError)(status, _message(status, body))
                        raise HubUnavailable(status, f"JupyterHub answered {status}: {_message(status, body)}")
                    buffer = ""
                    async for chunk in resp.content.iter_any():
                        buffer += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
                        events, buffer = parse_sse_lines(buffer)
                        for event in events:
                            if event.get("ready") or event.get("failed"):
                                # timed before handing it over: the caller stops reading (closes this
                                # generator) at the terminal event, and the call is the Hub's time
                                self._record("GET", path, status, started)
                                yield event
                                return
                            yield event
                    self._record("GET", path, status, started)
                    raise HubUnavailable(status, "JupyterHub closed the progress stream early")
            except HubUnavailable:
                if attempt >= len(delays):
                    raise
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                self._record("GET", path, status, started)
                if attempt >= len(delays):
                    raise HubUnavailable(0, f"lost JupyterHub's progress stream ({type(e).__name__})") from e
            log.warning("hub: progress of %s interrupted, retrying", name)
            await self._sleep(delays[attempt])
            attempt += 1


def _public_from_api(api_url: str) -> str:
    """``http://hub/hub/api`` -> ``http://hub`` (when JUPYTERHUB_URL is not set)."""
    suffix = "/hub/api"
    return api_url[: -len(suffix)] if api_url.endswith(suffix) else api_url
