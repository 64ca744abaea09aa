"""The HTTP side of the fake Kubernetes API (tests/fake_k8s.py): routes, handlers, streams.

The real REST paths and JSON for pods (create, get, list, watch with
resourceVersion, delete, log with follow and timestamps), secrets (create, get,
list, patch, delete), apps/v1 DaemonSets (tests/fake_k8s_apps.py) and /version; errors as ``Status`` objects; a watch from a
resourceVersion older than the retained history gets an ERROR event carrying a
410 Status. Every request is recorded; ``fail_next`` injects HTTP errors.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fake_k8s_apps import DaemonSetRoutes
from tests.fake_k8s_store import KubeStore, _Watcher
from tests.fake_k8s_validation import api_version, validate
from tests.fake_k8s_wire import matches, merge_patch, parse_selector, status, status_response

_TRUE = {"1", "true", "True", "TRUE"}


@dataclasses.dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    reason: str | None = None
    message: str | None = None
    retry_after: int | None = None

    def response(self) -> web.Response:
        reason = self.reason or ("InternalError" if self.status >= 500 else
                                 "TooManyRequests" if self.status == 429 else "Fault")
        resp = status_response(self.status, reason, self.message or "injected fault")
        if self.retry_after is not None:
            resp.headers["Retry-After"] = str(self.retry_after)
        return resp


def quota_forbidden(name: str = "build-x") -> dict[str, Any]:
    """fail_next keywords for a ResourceQuota refusal (the API server's words): transient."""
    return {"reason": "Forbidden", "message": (
        f'pods "{name}" is forbidden: exceeded quota: compute-resources, requested: limits.memory=4Gi, '
        "used: limits.memory=30Gi, limited: limits.memory=32Gi")}


def rbac_forbidden(verb: str = "create", resource: str = "pods", namespace: str = "binder") -> dict[str, Any]:
    """fail_next keywords for an RBAC refusal (the API server's words): permanent."""
    return {"reason": "Forbidden", "message": (
        f'{resource} is forbidden: User "system:serviceaccount:{namespace}:binder-prebuild" cannot {verb} '
        f'resource "{resource}" in API group "" in the namespace "{namespace}"')}


class KubeRoutes(DaemonSetRoutes, KubeStore):
    """The store behind an aiohttp application speaking the Kubernetes API."""

    def __init__(self, **store: Any) -> None:
        super().__init__(**store)
        self._faults: list[_Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[str] = []
        self.invalid: list[tuple[str, list[str]]] = []
        self.open_watches = 0
        self.max_open_watches = 0
        self.watch_requests = 0
        self.expired_watches = 0
        self.open_logs = 0
        self.autopilot: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.instant: list[str] | None = None  # pods run, print these lines and succeed on creation
        self.rules: list[dict[str, Any]] | None = None  # a Role's rules: enforce them (403), as RBAC does
        # Latency, as a busy API server has it: a LIST answers this late with the snapshot it took
        # when the request arrived; a create is admitted (stored) this late, even if the client left.
        self.list_delay = 0.0
        self.create_delay = 0.0
        self.lists_received = 0
        self.throttle = 0.0  # this share of API calls get 429 Too Many Requests (priority and fairness)
        self.throttle_retry_after = 1
        self.throttled = 0
        self.silent_logs = False  # True: log streams opened now stay silent (half-open connections)
        self.inject_sidecar = False  # True: created pods get a sidecar container first (service meshes)
        self.watch_close_after: float | None = None  # a proxy that ends every watch this soon (0: at once)
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- server ---------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        ns = "/api/v1/namespaces/{ns}"
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/version/", self._version)
        r.add_post(ns + "/pods", self._create_pod)
        r.add_get(ns + "/pods", self._list("Pod"))
        r.add_get(ns + "/pods/{name}", self._get("Pod"))
        r.add_delete(ns + "/pods/{name}", self._delete("Pod"))
        r.add_get(ns + "/pods/{name}/log", self._pod_log)
        r.add_get(ns + "/events", self._list_events)
        r.add_post(ns + "/secrets", self._create_secret)
        r.add_get(ns + "/secrets", self._list("Secret"))
        r.add_get(ns + "/secrets/{name}", self._get("Secret"))
        r.add_delete(ns + "/secrets/{name}", self._delete("Secret"))
        r.add_patch(ns + "/secrets/{name}", self._patch_secret)
        self.add_apps_routes(r)  # apps/v1 DaemonSets (tests/fake_k8s_apps.py)
        r.add_get("/_fake/stats", self._stats)
        return app

    def stats(self) -> dict[str, int]:
        return {"open_watches": self.open_watches, "max_open_watches": self.max_open_watches,
                "watch_requests": self.watch_requests, "expired_watches": self.expired_watches,
                "requests": len(self.requests), "pods": len(self.pods), "secrets": len(self.secrets),
                "invalid": len(self.invalid), "lists": self.lists_received, "throttled": self.throttled}

    async def _stats(self, request: web.Request) -> web.Response:
        """Counters, for a client in another process (the benchmark); ``?reset=1`` restarts the maximum."""
        stats = self.stats()
        if request.query.get("reset") in _TRUE:
            self.max_open_watches = self.open_watches
        return web.json_response(stats)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.rules is not None and not rbac_allows(self.rules, request.method, request.path, request.query):
            return status_response(403, "Forbidden", f"{request.method} {request.path} is forbidden by the Role",
                                   kind="forbidden")
        if request.can_read_body:
            self.bodies.append((await request.read()).decode("utf-8", "replace"))
        if self.throttle and not request.path.startswith("/_fake") and random.random() < self.throttle:
            self.throttled += 1
            return _Fault(request.method, re.compile(""), 429, 1, retry_after=self.throttle_retry_after).response()
        for f in self._faults:
            if f.times > 0 and f.method in (request.method, "*") and f.pattern.search(request.path):
                f.times -= 1
                return f.response()
        return await handler(request)

    # -- faults ------------------------------------------------------------------
    def fail_next(self, method: str, path_regex: str, status: int = 500, times: int = 1, *,
                  reason: str | None = None, message: str | None = None, retry_after: int | None = None) -> None:
        """The next ``times`` matching requests get ``status`` (a Status body; 429 may carry Retry-After)."""
        self._faults.append(_Fault(method, re.compile(path_regex), status, times, reason, message, retry_after))

    # -- request bodies ------------------------------------------------------------
    async def _body(self, request: web.Request, kind: str) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return status_response(400, "BadRequest", "the body is not JSON")
        if not isinstance(body, dict):
            return status_response(400, "BadRequest", "the body is not an object")
        if body.get("kind", kind) != kind or body.get("apiVersion", api_version(kind)) != api_version(kind):
            return status_response(400, "BadRequest", f"expected {api_version(kind)} {kind}")
        ns = request.match_info["ns"]
        if body.get("metadata", {}).get("namespace", ns) != ns:
            return status_response(400, "BadRequest", "the namespace of the object does not match the request")
        return body

    def _invalid(self, kind: str, name: str, errors: list[str]) -> web.Response:
        self.invalid.append((name, errors))
        return status_response(422, "Invalid", f"{kind} {name!r} is invalid: " + "; ".join(errors),
                               name=name, kind=kind.lower() + "s")

    # -- handlers ----------------------------------------------------------------
    async def _version(self, request: web.Request) -> web.Response:
        major, minor = self.version.split(".")[:2]
        return web.json_response({"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0",
                                  "platform": "linux/amd64"})

    async def _create_pod(self, request: web.Request) -> web.Response:
        body = await self._body(request, "Pod")
        if isinstance(body, web.Response):
            return body
        if self.create_delay:  # admission webhooks, priority and fairness: the create still happens
            return await asyncio.shield(self._admit_pod(request, body))
        return await self._admit_pod(request, body)

    async def _admit_pod(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        ns = request.match_info["ns"]
        name = body.get("metadata", {}).get("name", "")
        errors = validate(body, "Pod", self.version)
        if errors:
            return self._invalid("Pod", name, errors)
        if ("Pod", ns, name) in self.objects:
            return status_response(409, "AlreadyExists", f'pods "{name}" already exists', name=name, kind="pods")
        obj = self._new_object("Pod", ns, body)
        if self.inject_sidecar:  # a service mesh's mutating webhook
            obj["spec"]["containers"].insert(0, {"name": "istio-proxy", "image": "istio/proxyv2:1.22.0"})
        obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        obj = self._store("Pod", obj, "ADDED")
        self.logs[obj["metadata"]["uid"]] = []
        self._changed[obj["metadata"]["uid"]] = asyncio.Event()
        if self.instant is not None:
            self.set_running(name, ns)
            self.log(name, *self.instant, namespace=ns)
            self.succeed(name, ns)
        if self.autopilot is not None:
            task = asyncio.create_task(self.autopilot(copy.deepcopy(obj)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(obj, status=201)

    async def _create_secret(self, request: web.Request) -> web.Response:
        body = await self._body(request, "Secret")
        if isinstance(body, web.Response):
            return body
        ns = request.match_info["ns"]
        name = body.get("metadata", {}).get("name", "")
        errors = validate(body, "Secret", self.version)
        if errors:
            return self._invalid("Secret", name, errors)
        if ("Secret", ns, name) in self.objects:
            return status_response(409, "AlreadyExists", f'secrets "{name}" already exists', name=name,
                                   kind="secrets")
        obj = self._new_object("Secret", ns, body)
        self._fold_string_data(obj)
        obj = self._store("Secret", obj, "ADDED")
        return web.json_response(obj, status=201)

    async def _patch_secret(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        ctype = request.headers.get("Content-Type", "")
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return status_response(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")
        current = self.objects.get(("Secret", ns, name))
        if current is None:
            return status_response(404, "NotFound", f'secrets "{name}" not found', name=name, kind="secrets")
        try:
            patch = await request.json()
        except ValueError:
            return status_response(400, "BadRequest", "the patch is not JSON")
        merged = merge_patch(current, patch)
        errors = validate(merged, "Secret", self.version)
        if errors:
            return self._invalid("Secret", name, errors)
        for k in ("uid", "name", "namespace", "creationTimestamp"):
            merged["metadata"][k] = current["metadata"][k]
        self._fold_string_data(merged)
        obj = self._store("Secret", merged, "MODIFIED")
        return web.json_response(obj)

    def _get(self, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            ns, name = request.match_info["ns"], request.match_info["name"]
            obj = self.objects.get((kind, ns, name))
            if obj is None:
                plural = kind.lower() + "s"
                return status_response(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            return web.json_response(obj)
        return handler

    async def _list_events(self, request: web.Request) -> web.Response:
        """core/v1 Events, with the fieldSelector ``involvedObject.name=NAME`` the builder sends."""
        ns = request.match_info["ns"]
        wanted: dict[str, str] = {}
        for term in filter(None, request.query.get("fieldSelector", "").split(",")):
            key, sep, value = term.partition("=")
            if not sep or key not in ("involvedObject.name", "involvedObject.kind", "involvedObject.uid"):
                return status_response(400, "BadRequest", f'"{key}" is not a known field selector')
            wanted[key.split(".", 1)[1]] = value
        items = [o for (k, n, _), o in self.objects.items() if k == "Event" and n == ns
                 and all(o["involvedObject"].get(f) == v for f, v in wanted.items())]
        return web.json_response({"kind": "EventList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(self._rv)}, "items": items})

    def _delete(self, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            ns, name = request.match_info["ns"], request.match_info["name"]
            if kind == "Pod":
                grace = request.query.get("gracePeriodSeconds")
                try:
                    body = await request.json() if request.can_read_body else {}
                except ValueError:
                    body = {}
                if grace is None and isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
                    grace = body["gracePeriodSeconds"]
                obj = self.delete_gracefully(name, None if grace is None else int(grace), ns)
            else:
                obj = self._remove(kind, ns, name)
            if obj is None:
                plural = kind.lower() + "s"
                return status_response(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            return web.json_response(obj)
        return handler

    def _list(self, kind: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns = request.match_info["ns"]
            try:
                terms = parse_selector(request.query.get("labelSelector", ""))
            except ValueError as e:
                return status_response(400, "BadRequest", str(e))
            if request.query.get("watch") in _TRUE:
                return await self._watch(request, kind, ns, terms)
            self.lists_received += 1
            items = copy.deepcopy([o for (k, n, _), o in self.objects.items()
                                   if k == kind and n == ns and matches(o["metadata"].get("labels") or {}, terms)])
            snapshot_rv = str(self._rv)
            if self.list_delay:
                await asyncio.sleep(self.list_delay)
            return web.json_response({"kind": f"{kind}List", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": snapshot_rv}, "items": items})
        return handler

    async def _watch(self, request: web.Request, kind: str, ns: str,
                     terms: list[tuple[str, str, str | None]]) -> web.StreamResponse:
        self.watch_requests += 1
        rv_param = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        if self.watch_close_after is not None:
            timeout = min(timeout, self.watch_close_after)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        watcher = _Watcher(kind, ns, terms, asyncio.Queue(),
                           bookmarks=request.query.get("allowWatchBookmarks") in _TRUE)
        initial: list[dict[str, Any]] = []
        if rv_param in ("", "0"):
            initial = [{"type": "ADDED", "object": o} for (k, n, _), o in self.objects.items()
                       if k == kind and n == ns and matches(o["metadata"].get("labels") or {}, terms)]
        elif int(rv_param) < self.oldest_rv:
            self.expired_watches += 1
            err = status(410, "Expired", f"too old resource version: {rv_param} ({self.oldest_rv})")
            await resp.write(json.dumps({"type": "ERROR", "object": err}).encode() + b"\n")
            await resp.write_eof()
            return resp
        else:
            since = int(rv_param)
            initial = [{"type": t, "object": o} for rv, k, t, o in self.history
                       if rv > since and k == kind and o["metadata"].get("namespace") == ns
                       and matches(o["metadata"].get("labels") or {}, terms)]
        self._watchers.append(watcher)
        self.open_watches += 1
        self.max_open_watches = max(self.max_open_watches, self.open_watches)
        deadline = time.monotonic() + timeout
        try:
            for ev in initial:
                await resp.write(json.dumps(ev).encode() + b"\n")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), min(left, 0.2))
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if ev is None:
                    break
                await resp.write(json.dumps(ev).encode() + b"\n")
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass
        finally:  # counted as closed before the client can see the end and reconnect
            self._watchers.remove(watcher)
            self.open_watches -= 1
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.objects.get(("Pod", ns, name))
        if pod is None:
            return status_response(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        uid = pod["metadata"]["uid"]
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = request.query.get("container")
        if container is None and len(names) > 1:
            return status_response(400, "BadRequest", f"a container name must be specified for pod {name}, "
                                   f"choose one of: [{' '.join(names)}]")
        container = container or names[0]
        if container not in names:
            return status_response(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if not self._container_started(pod):
            reason = self._waiting_reason(pod)
            return status_response(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        follow = request.query.get("follow") in _TRUE
        stamps = request.query.get("timestamps") in _TRUE
        since = request.query.get("sinceSeconds")
        cutoff = time.time() - int(since) if since else None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        if self.silent_logs:  # a half-open connection: open, then nothing, ever
            self.open_logs += 1
            try:
                while request.transport is not None and not request.transport.is_closing():
                    await asyncio.sleep(0.05)
            except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
                pass
            finally:
                self.open_logs -= 1
            return resp
        self.open_logs += 1
        sent = 0
        cuts = self._cut_logs
        try:
            while True:
                ev = self._changed.get(uid)
                if ev is not None:
                    ev.clear()
                current = self.objects.get(("Pod", ns, name))
                done = (not follow or current is None or current["metadata"]["uid"] != uid
                        or self._terminated(current))
                lines = self.logs.get(uid, [])
                while sent < len(lines):  # lines logged while we write are sent too
                    batch = lines[sent:]
                    sent += len(batch)
                    for ts, epoch, line in batch:
                        if cutoff is None or epoch >= cutoff:
                            await resp.write(((ts + " ") if stamps else "").encode() + line.encode() + b"\n")
                if done or ev is None:
                    break
                try:
                    await asyncio.wait_for(ev.wait(), 0.5)
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                if self._cut_logs != cuts:
                    break
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.open_logs -= 1
        return resp


_RESOURCE_PATH = re.compile(r"^/(?:api/v1|apis/(apps)/v1)/namespaces/[^/]+/(pods|secrets|daemonsets)"
                            r"(?:/([^/]+))?(?:/(log))?$")
_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def rbac_allows(rules: list[dict[str, Any]], method: str, path: str, query: Any) -> bool:
    """Would a Role with ``rules`` allow this request? (Kubernetes' RBAC for the resources the
    service uses: API group from the path, verbs from the method, ``watch`` from the query,
    ``resourceNames``.)"""
    m = _RESOURCE_PATH.match(path)
    if m is None:
        return True  # /version: discovery, allowed to every authenticated user
    group, resource, name = m[1] or "", m[2] + ("/log" if m[4] else ""), m[3]
    verb = _VERBS.get(method) or ("get" if name else "watch" if query.get("watch") in ("true", "1") else "list")
    for rule in rules:
        if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
            continue
        if verb not in rule.get("verbs", []) and "*" not in rule.get("verbs", []):
            continue
        names = rule.get("resourceNames")
        if names and name not in names:
            continue
        return True
    return False
