"""What the builder reads off a build pod, as plain data (pure functions over the Pod JSON).

``pod_status`` makes the small view the watch caches; ``start_problem`` says, in
words for a person, why a pod has not started (unschedulable, a volume it cannot
mount, an image it cannot pull, a container it cannot configure), from the pod's
conditions, its container states and its Events.
"""
from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any

from bot.builders.k8s_objects import CONTAINER_NAME, LABEL_BUILD_ID
from bot.model import Phase

FINISHED_PHASES = ("Succeeded", "Failed")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class PodStatus:
    """What a build needs to know about its pod (a small view of the Pod object)."""

    name: str
    uid: str
    phase: str
    reason: str | None = None
    message: str | None = None
    build_id: str | None = None
    created: float | None = None
    deleting: bool = False
    deadline: int | None = None
    container_state: str | None = None  # waiting | running | terminated
    container_reason: str | None = None
    container_message: str | None = None
    exit_code: int | None = None
    node: str | None = None
    resource_version: int | None = None  # None when the server's versions are not integers
    start_time: float | None = None  # status.startTime: the node acknowledged the pod
    unschedulable: str | None = None  # PodScheduled=False, reason Unschedulable: the scheduler's message
    disruption: str | None = None  # DisruptionTarget=True: "reason: message" (eviction, preemption, ...)
    deletion_at: float | None = None  # deletionTimestamp: when the grace period ends

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def started(self) -> bool:
        """The container has run (its log exists)."""
        return self.container_state in ("running", "terminated") or (
            self.phase in ("Running", "Succeeded") and self.container_state is None)


def pod_status(obj: dict[str, Any]) -> PodStatus:
    """Pure: the Pod JSON -> PodStatus."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    state_name = reason = message = None
    exit_code = None
    statuses = status.get("containerStatuses") or []
    # The build container by name: a service mesh may inject sidecars before or after it.
    for cs in [c for c in statuses if c.get("name") == CONTAINER_NAME] or statuses[:1]:
        state = cs.get("state") or {}
        for key in ("terminated", "running", "waiting"):
            if state.get(key) is not None:
                detail = state[key] or {}
                state_name, reason, message = key, detail.get("reason"), detail.get("message")
                exit_code = detail.get("exitCode") if key == "terminated" else None
                break
        break
    return PodStatus(
        name=meta.get("name", ""), uid=meta.get("uid", ""), phase=status.get("phase") or "Pending",
        reason=status.get("reason"), message=status.get("message"),
        build_id=(meta.get("labels") or {}).get(LABEL_BUILD_ID),
        created=parse_time(meta.get("creationTimestamp")), deleting=bool(meta.get("deletionTimestamp")),
        deadline=spec.get("activeDeadlineSeconds"), container_state=state_name, container_reason=reason,
        container_message=message, exit_code=exit_code, node=spec.get("nodeName"),
        resource_version=_rv(meta.get("resourceVersion")),
        start_time=parse_time(status.get("startTime")),
        unschedulable=_condition(status, "PodScheduled", "False", "Unschedulable"),
        disruption=_condition(status, "DisruptionTarget", "True"),
        deletion_at=parse_time(meta.get("deletionTimestamp")),
    )


def _condition(status: dict[str, Any], kind: str, value: str, reason: str | None = None) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == kind and c.get("status") == value and (reason is None or c.get("reason") == reason):
            detail = c.get("message") or ""
            if reason is None:
                return f"{c.get('reason') or kind}: {detail}" if detail else (c.get("reason") or kind)
            return detail or reason
    return None


_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
_HOSTPATH = re.compile(r"hostPath type check failed: (\S+) is not a socket", re.I)
_MISSING_SECRET = re.compile(r'secret "([^"]+)" not found')


def start_problem(st: PodStatus, events: list[dict[str, Any]] = ()) -> str | None:  # type: ignore[assignment]
    """Pure: why this pod has not started, in words for a person; None when nothing is wrong yet.

    Reads the scheduler's condition, the build container's waiting reason and the
    pod's Events (volume mounts only show up there), newest event first.
    """
    if st.started or st.finished:
        return None
    if st.unschedulable:
        return f"no node can run the build pod: {st.unschedulable}"
    if st.container_state == "waiting" and st.container_reason in _PULL_REASONS:
        return f"the node cannot pull the builder image ({st.container_reason}): {st.container_message or ''}".rstrip(
            ": ")
    if st.container_state == "waiting" and st.container_reason in _CONFIG_REASONS:
        return f"the build container cannot be set up ({st.container_reason}): {st.container_message or ''}".rstrip(
            ": ")
    newest = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", reverse=True)
    for ev in newest:
        if ev.get("type") != "Warning":
            continue
        reason, message = ev.get("reason") or "", ev.get("message") or ""
        if reason == "FailedMount":
            m = _HOSTPATH.search(message)
            if m:
                return (f"the build socket {m.group(1)} does not exist on the node (BUILD_SOCKET; containerd "
                        "nodes have no Docker socket: use the DinD overlay)")
            m = _MISSING_SECRET.search(message)
            if m:
                return f'the secret "{m.group(1)}" the build pod mounts does not exist (BUILD_PUSH_SECRET?)'
            return f"the build pod cannot mount a volume: {message}"
        if reason == "FailedScheduling":
            return f"no node can run the build pod: {message}"
        if reason in ("Failed", "FailedCreatePodSandBox", "InspectFailed"):
            return f"the node cannot start the build pod ({reason}): {message}"
    return None


def _rv(value: Any) -> int | None:
    """resourceVersion as an integer where the server uses integers (etcd does), else None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def outcome_for(st: PodStatus, failure: str | None, timeout: int) -> tuple[Phase, str]:
    """Pure: how a finished pod ended -> (BUILT or FAILED, reason)."""
    if st.phase == "Succeeded":
        return Phase.BUILT, ""
    if st.reason == "DeadlineExceeded":
        return Phase.FAILED, f"build timed out after {st.deadline or timeout} s"
    if failure:
        return Phase.FAILED, failure
    if st.reason:
        return Phase.FAILED, f"{st.reason}: {st.message}" if st.message else st.reason
    if st.container_state == "terminated":
        detail = f" ({st.container_reason})" if st.container_reason and st.container_reason != "Error" else ""
        last = (st.container_message or "").strip().splitlines()[-1:] if st.container_message else []
        reason = f"repo2docker exited with code {st.exit_code}{detail}"
        return Phase.FAILED, f"{reason}: {last[0][:300]}" if last else reason
    return Phase.FAILED, "the build pod failed"
