"""The one request wrapper for Kubernetes calls (a thin shell over kubernetes_asyncio).

Every call goes through ``KubeAPI._call``: a timeout, retries with backoff on
5xx, 429 and connection errors, and errors turned into meaning: 404 is
``KubeNotFound`` (gone), 409 is ``KubeConflict`` (already exists). Bodies are read
as plain JSON (dicts), not models: the builder only needs a few fields, and
deserializing every pod of a busy watch into models costs time and memory.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


MAX_RETRY_AFTER = 60.0  # the longest Retry-After we sleep on inside one call


class KubeError(Exception):
    """The API answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Back-pressure or an outage (wait and try again), not a refusal that will stand."""
        return is_transient(self.status, self.message)

    def explain(self) -> str:
        """What a person should be told (check run, progress page)."""
        if self.status == 403 and not self.transient:
            return forbidden_hint(self.message)
        if self.status == 403:
            return f"the namespace's resource quota is used up ({self.message}); the build waits for room"
        if self.status == 429:
            return "the Kubernetes API is overloaded (429 Too Many Requests); the build waits"
        if self.status == 0:
            return f"the Kubernetes API cannot be reached ({self.reason}); the build waits"
        return f"the Kubernetes API answered {self.status} {self.reason}; the build waits"


def is_transient(status: int, message: str) -> bool:
    """Pure: 429, 5xx, no answer, and a quota 403 pass; RBAC 403 and other 4xx do not."""
    if status in RETRY_STATUSES or status == 0:
        return True
    return status == 403 and "exceeded quota" in message


def forbidden_hint(message: str) -> str:
    """Pure: an RBAC 403 -> which permission the service account lacks, and where."""
    m = re.search(r'User "([^"]+)" cannot (\w+) resource "([^"]+)"(?: in API group "([^"]*)")?'
                  r'(?: in the namespace "([^"]+)")?', message)
    if not m:
        return f"the Kubernetes API refused the request (403 Forbidden): {message}"
    user, verb, resource, _group, ns = m.groups()
    where = f' in namespace "{ns}"' if ns else ""
    return (f'the service account {user} may not {verb} {resource}{where}: grant "{verb}" on "{resource}" '
            f"in its Role (k8s/base/role.yaml)")


def parse_retry_after(value: str | None) -> float | None:
    """Pure: Retry-After in seconds (the API server sends whole seconds); None if absent or odd."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class KubeNotFound(KubeError):
    """404: the object is gone."""


class KubeConflict(KubeError):
    """409: the object already exists."""


def _error(status: int, body: bytes, retry_after: float | None = None) -> KubeError:
    reason, message = "", body[:500].decode("utf-8", "replace")
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            reason, message = str(data.get("reason", "")), str(data.get("message", ""))
    except ValueError:
        pass
    cls = KubeNotFound if status == 404 else KubeConflict if status == 409 else KubeError
    return cls(status, reason or "Error", message, retry_after)


async def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In-cluster service account config, else a kubeconfig (``KUBECONFIG`` or ~/.kube/config)."""
    conf = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
        try:
            config.load_incluster_config(client_configuration=conf)
            return conf
        except ConfigException as e:
            log.warning("in-cluster config unusable (%s); trying a kubeconfig", e)
    await config.load_kube_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"),
                                  client_configuration=conf)
    return conf


class KubeAPI:
    """Pods, Secrets and DaemonSets of one namespace, plus the version endpoint."""

    def __init__(
        self, configuration: client.Configuration, namespace: str, *, timeout: float = 30.0,
        retries: int = 4, backoff: float = 0.5, pool_size: int = 100,
    ) -> None:
        configuration.connection_pool_maxsize = pool_size
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.version_api = client.VersionApi(self.api_client)
        self.namespace = namespace
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.requests = 0
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    async def close(self) -> None:
        await self.api_client.close()

    async def _call(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                    _stream: bool = False, _timeout: Any = None, _retries: int | None = None,
                    **kwargs: Any) -> Any:
        """Run one API call with retries; JSON body as dict, or the open response when ``_stream``.

        429 waits what Retry-After says (capped); 5xx, 429, no answer and a quota 403 are
        retried with backoff, then raised as transient (``KubeError.transient``): the
        caller puts the build back in the queue instead of failing it.
        """
        delay = self.backoff
        retries = self.retries if _retries is None else _retries
        for attempt in range(retries + 1):
            self.requests += 1
            resp = None
            try:
                resp = await fn(*args, _preload_content=False, _request_timeout=_timeout or self.timeout, **kwargs)
                if 200 <= resp.status < 300:
                    if _stream:
                        return resp
                    body = await resp.read()
                    resp.release()
                    return json.loads(body) if body else {}
                body = await resp.read()
                resp.release()
                err = _error(resp.status, body, parse_retry_after(resp.headers.get("Retry-After")))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                if resp is not None:
                    resp.release()
                err = KubeError(0, type(e).__name__, str(e))
            if not err.transient or attempt == retries:
                raise err
            wait = delay if err.retry_after is None else min(MAX_RETRY_AFTER, max(delay, err.retry_after))
            log.warning("kubernetes %s failed (%s); retry %d in %.1fs", what, err, attempt + 1, wait)
            await self.sleep(wait)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    # -- pods ---------------------------------------------------------------
    async def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(f"create pod {(body.get('metadata') or {}).get('name')}", self.core.create_namespaced_pod, self.namespace, body)

    async def get_pod(self, name: str) -> dict[str, Any]:
        return await self._call(f"get pod {name}", self.core.read_namespaced_pod, name, self.namespace)

    async def delete_pod(self, name: str, grace_seconds: int | None = None) -> bool:
        """True if deleted now, False if it was already gone."""
        kwargs: dict[str, Any] = {"propagation_policy": "Background"}
        if grace_seconds is not None:
            kwargs["grace_period_seconds"] = grace_seconds
        try:
            await self._call(f"delete pod {name}", self.core.delete_namespaced_pod, name, self.namespace, **kwargs)
            return True
        except KubeNotFound:
            return False

    async def list_pods(self, label_selector: str) -> dict[str, Any]:
        return await self._call("list pods", self.core.list_namespaced_pod, self.namespace,
                                label_selector=label_selector)

    async def watch_pods(self, label_selector: str, resource_version: str, timeout_seconds: int) -> Any:
        """An open watch response (JSON lines); the caller reads and releases it."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout,
                                        sock_read=timeout_seconds + 30)
        return await self._call(
            "watch pods", self.core.list_namespaced_pod, self.namespace, label_selector=label_selector,
            watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds, _stream=True, _timeout=timeout)

    async def pod_events(self, name: str) -> list[dict[str, Any]]:
        """The core/v1 Events about one pod (scheduling, mounts, image pulls)."""
        data = await self._call(f"events of pod {name}", self.core.list_namespaced_event, self.namespace,
                                field_selector=f"involvedObject.name={name}", _retries=1)
        return list(data.get("items") or [])

    async def pod_log(self, name: str, container: str, since_seconds: int | None = None, *,
                      follow: bool = True, read_timeout: float | None = None) -> Any:
        """An open log stream of one container, with timestamps.

        ``read_timeout``: how long the stream may stay silent before the read fails (a
        half-open connection otherwise freezes the log until the pod ends).
        """
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout,
                                        sock_read=read_timeout)
        kwargs: dict[str, Any] = {"follow": follow, "timestamps": True, "container": container}
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        return await self._call(f"log of pod {name}", self.core.read_namespaced_pod_log, name, self.namespace,
                                _stream=True, _timeout=timeout, **kwargs)

    # -- secrets --------------------------------------------------------------
    async def create_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(f"create secret {(body.get('metadata') or {}).get('name')}", self.core.create_namespaced_secret, self.namespace, body)

    async def get_secret(self, name: str) -> dict[str, Any]:
        return await self._call(f"get secret {name}", self.core.read_namespaced_secret, name, self.namespace)

    async def patch_secret(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(f"patch secret {name}", self.core.patch_namespaced_secret, name, self.namespace, body)

    async def delete_secret(self, name: str) -> bool:
        try:
            await self._call(f"delete secret {name}", self.core.delete_namespaced_secret, name, self.namespace)
            return True
        except KubeNotFound:
            return False

    async def list_secrets(self, label_selector: str) -> dict[str, Any]:
        return await self._call("list secrets", self.core.list_namespaced_secret, self.namespace,
                                label_selector=label_selector)

    # -- daemonsets (the image puller, in the user servers' namespace) ----------------
    async def create_daemonset(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(f"create daemonset {(body.get('metadata') or {}).get('name')}",
                                self.apps.create_namespaced_daemon_set, self.namespace, body)

    async def get_daemonset(self, name: str) -> dict[str, Any]:
        return await self._call(f"get daemonset {name}", self.apps.read_namespaced_daemon_set, name, self.namespace)

    async def replace_daemonset(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT: with ``metadata.resourceVersion`` set, a concurrent change gives KubeConflict (409)."""
        return await self._call(f"replace daemonset {name}", self.apps.replace_namespaced_daemon_set,
                                name, self.namespace, body)

    async def version(self) -> dict[str, Any]:
        return await self._call("version", self.version_api.get_code, _timeout=5.0, _retries=1)
