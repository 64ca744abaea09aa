"""apps/v1 DaemonSets in the fake Kubernetes API (tests/fake_k8s.py): create, get, list, replace, patch, delete.

What the API server checks beyond the schema is checked here too: the selector
must select the template's labels (422), ``spec.selector`` is immutable (422),
the name in a PUT body must be the URL's (400), and a PUT carrying an old
``metadata.resourceVersion`` is refused with 409 Conflict (optimistic
concurrency). ``metadata.generation`` counts spec changes; the status says the
pods are scheduled on ``nodes`` nodes, as the DaemonSet controller would.
"""
from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fake_k8s_validation import validate
from tests.fake_k8s_wire import NAMESPACE, merge_patch, status_response

KIND = "DaemonSet"
PLURAL = "daemonsets"
APPS = "/apis/apps/v1/namespaces/{ns}/daemonsets"


class DaemonSetRoutes:
    """Mixed into KubeRoutes (it brings ``objects``, ``_body``, ``_new_object``, ``_store``, ``_remove``,
    ``_invalid``)."""

    nodes = 3  # nodes the DaemonSet's pods land on (its status)
    objects: dict[tuple[str, str, str], dict[str, Any]]
    version: str
    _new_object: Callable[..., dict[str, Any]]
    _store: Callable[..., dict[str, Any]]
    _remove: Callable[..., dict[str, Any] | None]
    _invalid: Callable[..., web.Response]
    _body: Callable[[web.Request, str], Awaitable[dict[str, Any] | web.Response]]

    def add_apps_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post(APPS, self._create_daemonset)
        r.add_get(APPS, self._list_daemonsets)
        r.add_get(APPS + "/{name}", self._get_daemonset)
        r.add_put(APPS + "/{name}", self._replace_daemonset)
        r.add_patch(APPS + "/{name}", self._patch_daemonset)
        r.add_delete(APPS + "/{name}", self._delete_daemonset)

    # -- inspection (tests) ------------------------------------------------------
    @property
    def daemonsets(self) -> dict[str, dict[str, Any]]:
        return {k[2]: v for k, v in self.objects.items() if k[0] == KIND}

    def daemonset(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.objects.get((KIND, namespace, name))

    # -- checks the API server makes -----------------------------------------------
    def _ds_errors(self, obj: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        errors = validate(obj, KIND, self.version)
        if errors:
            return errors
        spec = obj["spec"]
        labels = (spec["template"].get("metadata") or {}).get("labels") or {}
        wanted = (spec["selector"].get("matchLabels") or {})
        if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
            errors.append("spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`")
        if old is not None and old["spec"]["selector"] != spec["selector"]:
            errors.append("spec.selector: Invalid value: field is immutable")
        if spec["template"]["spec"].get("restartPolicy", "Always") != "Always":
            errors.append('spec.template.spec.restartPolicy: Unsupported value: supported values: "Always"')
        return errors

    def _status(self, generation: int) -> dict[str, Any]:
        return {"currentNumberScheduled": self.nodes, "desiredNumberScheduled": self.nodes,
                "numberMisscheduled": 0, "numberReady": self.nodes, "updatedNumberScheduled": self.nodes,
                "numberAvailable": self.nodes, "observedGeneration": generation}

    @staticmethod
    def _not_found(name: str) -> web.Response:
        return status_response(404, "NotFound", f'daemonsets.apps "{name}" not found', name=name, kind=PLURAL)

    # -- handlers --------------------------------------------------------------------
    async def _create_daemonset(self, request: web.Request) -> web.Response:
        body = await self._body(request, KIND)
        if isinstance(body, web.Response):
            return body
        ns = request.match_info["ns"]
        name = (body.get("metadata") or {}).get("name", "")
        errors = self._ds_errors(body, None)
        if errors:
            return self._invalid(KIND, name, errors)
        if (KIND, ns, name) in self.objects:
            return status_response(409, "AlreadyExists", f'daemonsets.apps "{name}" already exists',
                                   name=name, kind=PLURAL)
        obj = self._new_object(KIND, ns, body)
        obj["apiVersion"] = "apps/v1"
        obj["metadata"]["generation"] = 1
        obj["status"] = self._status(1)
        return web.json_response(self._store(KIND, obj, "ADDED"), status=201)

    async def _get_daemonset(self, request: web.Request) -> web.Response:
        obj = self.objects.get((KIND, request.match_info["ns"], request.match_info["name"]))
        return web.json_response(obj) if obj is not None else self._not_found(request.match_info["name"])

    async def _list_daemonsets(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        items = copy.deepcopy([o for (k, n, _), o in self.objects.items() if k == KIND and n == ns])
        return web.json_response({"kind": "DaemonSetList", "apiVersion": "apps/v1",
                                  "metadata": {"resourceVersion": str(getattr(self, "_rv", 0))}, "items": items})

    async def _delete_daemonset(self, request: web.Request) -> web.Response:
        obj = self._remove(KIND, request.match_info["ns"], request.match_info["name"])
        return web.json_response(obj) if obj is not None else self._not_found(request.match_info["name"])

    async def _replace_daemonset(self, request: web.Request) -> web.Response:
        body = await self._body(request, KIND)
        if isinstance(body, web.Response):
            return body
        name = request.match_info["name"]
        if (body.get("metadata") or {}).get("name") != name:
            return status_response(400, "BadRequest", "the name of the object does not match the name on the URL")
        return self._update(request.match_info["ns"], name, body, body["metadata"].get("resourceVersion"))

    async def _patch_daemonset(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        ctype = request.headers.get("Content-Type", "")
        if ctype != "application/merge-patch+json":
            return status_response(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r} (the fake "
                                   "applies merge patches only)")
        current = self.objects.get((KIND, ns, name))
        if current is None:
            return self._not_found(name)
        try:
            patch = await request.json()
        except ValueError:
            return status_response(400, "BadRequest", "the patch is not JSON")
        rv = ((patch or {}).get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
        return self._update(ns, name, merge_patch(current, patch), rv)

    def _update(self, ns: str, name: str, new: dict[str, Any], resource_version: str | None) -> web.Response:
        current = self.objects.get((KIND, ns, name))
        if current is None:
            return self._not_found(name)
        if resource_version and resource_version != current["metadata"]["resourceVersion"]:
            return status_response(409, "Conflict", f'Operation cannot be fulfilled on daemonsets.apps "{name}": '
                                   "the object has been modified; please apply your changes to the latest "
                                   "version and try again", name=name, kind=PLURAL)
        new = copy.deepcopy(new)
        new.pop("status", None)
        errors = self._ds_errors(new, current)
        if errors:
            return self._invalid(KIND, name, errors)
        for k in ("uid", "name", "namespace", "creationTimestamp"):
            new["metadata"][k] = current["metadata"][k]
        generation = current["metadata"]["generation"] + (new["spec"] != current["spec"])
        new["metadata"]["generation"] = generation
        new["apiVersion"], new["kind"] = "apps/v1", KIND
        new["status"] = self._status(generation)
        return web.json_response(self._store(KIND, new, "MODIFIED"))
