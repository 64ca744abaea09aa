"""The object store of the fake Kubernetes API (tests/fake_k8s.py), and the pods' lifecycle.

Objects keyed by (kind, namespace, name), each change stamped with a fresh
resourceVersion, kept in a bounded event history and fanned out to open watches;
deleting a pod deletes what it owns (the garbage collector). Tests drive pods
through their phases here (``set_running``, ``log``, ``succeed``, ``fail``, ...).
"""
from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.fake_k8s_wire import K8S_VERSION, NAMESPACE, matches, nano_timestamp, now_rfc3339


@dataclasses.dataclass
class _Watcher:
    kind: str
    namespace: str
    terms: list[tuple[str, str, str | None]]
    queue: asyncio.Queue[dict[str, Any] | None]
    bookmarks: bool = False


class KubeStore:
    """Pods, secrets, pod logs, the event history and the watchers it feeds; no HTTP."""

    def __init__(self, *, version: str = K8S_VERSION, history: int = 10_000) -> None:
        self.version = version
        self.history_size = history
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.logs: dict[str, list[tuple[str, float, str]]] = {}  # pod uid -> (ts, epoch, line)
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, kind, type, object)
        self.oldest_rv = 0
        self._rv = 1
        self._watchers: list[_Watcher] = []
        self._changed: dict[str, asyncio.Event] = {}  # pod uid -> log/state change
        self._cut_logs = 0
        self.graceful_deletes = False  # True: DELETE sets deletionTimestamp; the kubelet confirms later
        self.kubelet_confirm_delay = 0.05
        self.lost_nodes: set[str] = set()  # pod uids whose node stopped reporting
        self.enforce_deadlines = False  # True: activeDeadlineSeconds fails pods, counted from startTime
        self.kubelet_seconds = 1.0  # how long one of the kubelet's seconds lasts here (tests shrink it)

    # -- inspection and stream faults --------------------------------------------
    def compact(self) -> None:
        """Drop the event history: a watch resuming from an older resourceVersion gets 410."""
        self.history.clear()
        self.oldest_rv = self._rv + 1  # every version handed out so far is now too old

    def cut_watches(self) -> None:
        """End every open watch (as an API server restart would)."""
        for w in list(self._watchers):
            w.queue.put_nowait(None)

    def cut_logs(self) -> None:
        """End every open log stream while pods keep running (a dropped connection)."""
        self._cut_logs += 1
        for ev in self._changed.values():
            ev.set()

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        return {k[2]: v for k, v in self.objects.items() if k[0] == "Pod"}

    @property
    def secrets(self) -> dict[str, dict[str, Any]]:
        return {k[2]: v for k, v in self.objects.items() if k[0] == "Secret"}

    def pod(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return self.objects[("Pod", namespace, name)]

    # -- object store ------------------------------------------------------------
    def apply(self, body: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
        """An object `kubectl apply -k k8s/` made (not a request of the code under test)."""
        obj = self._new_object(body["kind"], namespace, body)
        if obj["kind"] == "Secret":
            self._fold_string_data(obj)
        return self._store(obj["kind"], obj, "ADDED")

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self.history.append((rv, kind, event, obj))
        if len(self.history) > self.history_size:
            drop = len(self.history) - self.history_size
            self.oldest_rv = self.history[drop - 1][0]
            del self.history[:drop]
        ns = obj["metadata"].get("namespace", NAMESPACE)
        labels = obj["metadata"].get("labels") or {}
        for w in self._watchers:
            if w.kind == kind and w.namespace == ns and matches(labels, w.terms):
                w.queue.put_nowait({"type": event, "object": obj})

    def _store(self, kind: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        meta = obj["metadata"]
        self.objects[(kind, meta["namespace"], meta["name"])] = obj
        self._record(kind, event, obj)
        return obj

    def _remove(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((kind, ns, name), None)
        if obj is None:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        obj["metadata"].setdefault("deletionTimestamp", now_rfc3339())
        self._record(kind, "DELETED", obj)
        if kind == "Pod":
            uid = obj["metadata"]["uid"]
            self.logs.pop(uid, None)
            ev = self._changed.pop(uid, None)
            if ev:
                ev.set()
            # the garbage collector: dependents owned by this pod go with it
            for key, dep in list(self.objects.items()):
                refs = dep["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    self._remove(key[0], key[1], key[2])
        return obj

    def _new_object(self, kind: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", kind)
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        return obj

    @staticmethod
    def _fold_string_data(obj: dict[str, Any]) -> None:
        obj.setdefault("type", "Opaque")
        data = obj.setdefault("data", {})
        for k, v in (obj.pop("stringData", None) or {}).items():
            data[k] = base64.b64encode(v.encode()).decode()

    # -- watch events a real API server also sends ---------------------------------
    def bookmark(self) -> None:
        """A BOOKMARK to every pod watch: "you are current up to this resourceVersion"."""
        for w in self._watchers:
            if w.kind == "Pod" and w.bookmarks:
                w.queue.put_nowait({"type": "BOOKMARK", "object": {
                    "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._rv)}}})

    def watch_error(self, code: int = 500, reason: str = "InternalError",
                    message: str = "etcdserver: request timed out") -> None:
        """An ERROR event that is not a 410 (the server then ends the watch)."""
        for w in list(self._watchers):
            w.queue.put_nowait({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}})
            w.queue.put_nowait(None)

    def pad_history(self, n: int) -> None:
        """Changes to objects no build watch selects (a busy namespace): the resourceVersion moves on."""
        for i in range(n):
            self._store("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": f"other-{self._rv}-{i}", "namespace": NAMESPACE, "uid": str(uuid.uuid4())}}, "ADDED")

    # -- what a busy cluster does to pods ------------------------------------------
    def event(self, pod_name: str, reason: str, message: str, type_: str = "Warning",
              namespace: str = NAMESPACE) -> dict[str, Any]:
        """A core/v1 Event about the pod, as the scheduler or the kubelet records it."""
        pod = self.objects[("Pod", namespace, pod_name)]
        now = now_rfc3339()
        obj = {"apiVersion": "v1", "kind": "Event",
               "metadata": {"name": f"{pod_name}.{uuid.uuid4().hex[:16]}", "namespace": namespace,
                            "uid": str(uuid.uuid4()), "creationTimestamp": now},
               "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pod_name,
                                  "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
               "reason": reason, "message": message, "type": type_, "count": 1,
               "firstTimestamp": now, "lastTimestamp": now,
               "source": {"component": "default-scheduler" if reason == "FailedScheduling" else "kubelet"}}
        return self._store("Event", obj, "ADDED")

    def _set_condition(self, name: str, namespace: str, condition: dict[str, Any]) -> dict[str, Any]:
        pod = self.objects[("Pod", namespace, name)]
        conds = [c for c in pod.get("status", {}).get("conditions") or [] if c["type"] != condition["type"]]
        conds.append(condition | {"lastTransitionTime": now_rfc3339(), "lastProbeTime": None})
        return self._update_status(name, namespace, conditions=conds)

    def unschedulable(self, name: str, message: str = "0/3 nodes are available: 3 Insufficient memory.",
                      namespace: str = NAMESPACE) -> dict[str, Any]:
        """The scheduler found no node: PodScheduled=False and a FailedScheduling event; no startTime."""
        self.event(name, "FailedScheduling", message, namespace=namespace)
        return self._set_condition(name, namespace, {"type": "PodScheduled", "status": "False",
                                                     "reason": "Unschedulable", "message": message})

    def scheduled(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        """Bound to a node that acknowledged it: startTime set, container creating."""
        pod = self.objects[("Pod", namespace, name)]
        pod["spec"]["nodeName"] = "fake-node"
        self._set_condition(name, namespace, {"type": "PodScheduled", "status": "True"})
        updated = self._update_status(name, namespace, startTime=now_rfc3339(),
                                      state={"waiting": {"reason": "ContainerCreating"}})
        self._kubelet_deadline(updated)
        return updated

    def disrupt(self, name: str, reason: str = "EvictionByEvictionAPI",
                message: str = "Eviction API: evicting", namespace: str = NAMESPACE) -> None:
        """A drain, preemption or the eviction API: DisruptionTarget=True, then the pod is deleted."""
        self._set_condition(name, namespace, {"type": "DisruptionTarget", "status": "True",
                                              "reason": reason, "message": message})
        self.delete_gracefully(name, namespace=namespace)

    def node_lost(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        """The node stopped reporting: phase Unknown, and no kubelet will ever confirm a deletion."""
        self.lost_nodes.add(self.objects[("Pod", namespace, name)]["metadata"]["uid"])
        return self._update_status(name, namespace, phase="Unknown", reason="NodeLost",
                                   message="Node fake-node which was running pod is unresponsive")

    def delete_gracefully(self, name: str, grace: int | None = None, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        """What DELETE does to a pod: deletionTimestamp = now + grace; gone once the kubelet confirms.

        Grace 0 (a force delete) removes it at once; a pod on a lost node stays Terminating.
        """
        key = ("Pod", namespace, name)
        pod = self.objects.get(key)
        if pod is None:
            return None
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
        uid = pod["metadata"]["uid"]
        if grace == 0 or (not self.graceful_deletes and uid not in self.lost_nodes):
            return self._remove("Pod", namespace, name)
        if not pod["metadata"].get("deletionTimestamp"):
            pod = copy.deepcopy(pod)
            pod["metadata"]["deletionTimestamp"] = now_rfc3339(time.time() + grace)
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            pod = self._store("Pod", pod, "MODIFIED")
        if uid not in self.lost_nodes:
            loop = asyncio.get_running_loop()
            loop.call_later(self.kubelet_confirm_delay, lambda: self._confirm_delete(namespace, name, uid))
        return pod

    def _confirm_delete(self, namespace: str, name: str, uid: str) -> None:
        pod = self.objects.get(("Pod", namespace, name))
        if pod is not None and pod["metadata"]["uid"] == uid:
            self._remove("Pod", namespace, name)

    # -- pod lifecycle, driven by tests -----------------------------------------
    MAIN = "builder"  # the build container; others are sidecars a mesh injected

    @classmethod
    def _main_status(cls, pod: dict[str, Any]) -> list[dict[str, Any]]:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        return [c for c in statuses if c.get("name") == cls.MAIN] or statuses[:1]

    @classmethod
    def _container_started(cls, pod: dict[str, Any]) -> bool:
        for cs in cls._main_status(pod):
            return "running" in cs.get("state", {}) or "terminated" in cs.get("state", {})
        return False

    @staticmethod
    def _terminated(pod: dict[str, Any]) -> bool:
        return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")

    @classmethod
    def _waiting_reason(cls, pod: dict[str, Any]) -> str:
        for cs in cls._main_status(pod):
            return cs.get("state", {}).get("waiting", {}).get("reason", "ContainerCreating")
        return "ContainerCreating"

    def _update_status(self, name: str, namespace: str, **changes: Any) -> dict[str, Any]:
        pod = copy.deepcopy(self.objects[("Pod", namespace, name)])
        st = pod.setdefault("status", {})
        containers = pod["spec"]["containers"]
        state = changes.pop("state", None)
        for k, v in changes.items():
            if v is None:
                st.pop(k, None)
            else:
                st[k] = v
        if state is not None:
            main = next((c for c in containers if c["name"] == self.MAIN), containers[0])
            st["containerStatuses"] = [{
                "name": c["name"], "image": c["image"], "imageID": "", "restartCount": 0,
                "ready": "running" in (state if c is main else {"running": {}}),
                "started": "running" in (state if c is main else {"running": {}}),
                "state": state if c is main else {"running": {"startedAt": now_rfc3339()}},
            } for c in containers]
        pod = self._store("Pod", pod, "MODIFIED")
        ev = self._changed.get(pod["metadata"]["uid"])
        if ev:
            ev.set()
        return pod

    def waiting(self, name: str, reason: str = "ContainerCreating", message: str | None = None,
                namespace: str = NAMESPACE) -> dict[str, Any]:
        detail = {"reason": reason} | ({"message": message} if message else {})
        return self._update_status(name, namespace, phase="Pending", state={"waiting": detail})

    def set_running(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        pod = self.objects[("Pod", namespace, name)]
        pod["spec"]["nodeName"] = "fake-node"
        first = not pod.get("status", {}).get("startTime")
        updated = self._update_status(name, namespace, phase="Running",
                                      startTime=pod.get("status", {}).get("startTime") or now_rfc3339(),
                                      state={"running": {"startedAt": now_rfc3339()}})
        if first:
            self._kubelet_deadline(updated)
        return updated

    def _kubelet_deadline(self, pod: dict[str, Any]) -> None:
        """As the kubelet does: activeDeadlineSeconds after startTime, a pod still running fails."""
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if not self.enforce_deadlines or not deadline:
            return
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]

        def fire() -> None:
            current = self.objects.get(("Pod", ns, name))
            if current is not None and current["metadata"]["uid"] == uid and not self._terminated(current):
                self.deadline_exceeded(name, ns)

        asyncio.get_running_loop().call_later(deadline * self.kubelet_seconds, fire)

    def log(self, name: str, *lines: str, namespace: str = NAMESPACE) -> None:
        pod = self.objects[("Pod", namespace, name)]
        uid = pod["metadata"]["uid"]
        for line in lines:
            self.logs[uid].append((nano_timestamp(), time.time(), line))
        ev = self._changed.get(uid)
        if ev:
            ev.set()

    def succeed(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return self._update_status(name, namespace, phase="Succeeded", state={"terminated": {
            "exitCode": 0, "reason": "Completed", "startedAt": now_rfc3339(), "finishedAt": now_rfc3339()}})

    def fail(self, name: str, exit_code: int = 1, reason: str = "Error", message: str | None = None,
             namespace: str = NAMESPACE) -> dict[str, Any]:
        term: dict[str, Any] = {"exitCode": exit_code, "reason": reason, "startedAt": now_rfc3339(),
                                "finishedAt": now_rfc3339()}
        if message:
            term["message"] = message
        return self._update_status(name, namespace, phase="Failed", state={"terminated": term})

    def deadline_exceeded(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        """What the kubelet reports when activeDeadlineSeconds passes."""
        return self._update_status(
            name, namespace, phase="Failed", reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
            state={"terminated": {"exitCode": 137, "reason": "Error", "startedAt": now_rfc3339(),
                                  "finishedAt": now_rfc3339()}})

    async def run_pod(self, name: str, lines: list[str] | tuple[str, ...] = (), *, succeed: bool = True,
                      namespace: str = NAMESPACE, delay: float = 0.0) -> None:
        """Pending -> Running -> (log lines) -> Succeeded or Failed; for autopilots."""
        if ("Pod", namespace, name) not in self.objects:
            return
        self.set_running(name, namespace)
        if delay:
            await asyncio.sleep(delay)
        if ("Pod", namespace, name) not in self.objects:
            return
        if lines:
            self.log(name, *lines, namespace=namespace)
        if succeed:
            self.succeed(name, namespace)
        else:
            self.fail(name, namespace=namespace)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll until ``predicate()`` is truthy (tests waiting for the builder to act)."""
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)

