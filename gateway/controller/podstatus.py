"""What a pod's status means for its session: a pure reading, so that failures are named the
moment the kubelet reports them instead of after a start timeout."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Container waiting reasons that will not fix themselves without a change by a person.
FATAL_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                           "CrashLoopBackOff", "CreateContainerConfigError",
                           "CreateContainerError", "RunContainerError"})


@dataclass(frozen=True)
class PodState:
    phase: str  # the session phase this pod implies: pending, running or failed
    reason: str  # a CamelCase reason for conditions and events
    message: str
    ip: str | None = None
    started: str | None = None


SERVING_CONTAINER = "session"  # Xvfb and the agent: what a viewer needs (objects.session_pod)


def _serving(status: dict[str, Any], conditions: dict[str, Any]) -> bool:
    """Ready means the session container is ready: the stream works. The app container has no
    probe; while the kubelet restarts a crashed application the pod is not Ready, yet the
    session still streams (an empty desktop, then the application again) and stays routed.
    An application that keeps crashing ends in CrashLoopBackOff, which fails the session."""
    for container in status.get("containerStatuses") or []:
        if container.get("name") == SERVING_CONTAINER:
            return bool(container.get("ready"))
    return (conditions.get("Ready") or {}).get("status") == "True"


def read_pod(pod: dict[str, Any]) -> PodState:
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        reason = status.get("reason") or "PodFailed"  # e.g. Evicted
        return PodState("failed", reason, f"{reason}: {status.get('message') or 'pod failed'}")
    if status.get("phase") == "Succeeded":
        return PodState("failed", "Exited", "the session's application exited")
    containers = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or [])
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            return PodState("failed", waiting["reason"],
                            f"{waiting['reason']} in container {container.get('name')}: "
                            f"{waiting.get('message') or ''}".rstrip(": "))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        # Pending, not failed: the cluster autoscaler may still add a node (GPU pools scale
        # from zero); the start timeout bounds the wait, and the message names the reason.
        return PodState("pending", "Unschedulable",
                        f"Unschedulable: {scheduled.get('message', '')}")
    ready = _serving(status, conditions)
    if status.get("phase") == "Running" and ready and status.get("podIP"):
        return PodState("running", "Ready", "the session is running", status["podIP"],
                        status.get("startTime"))
    if status.get("phase") == "Running":
        return PodState("pending", "Starting", "the application is starting")
    if scheduled.get("status") == "True":
        return PodState("pending", "ContainerCreating", "pulling the image and starting")
    return PodState("pending", "Scheduling", "waiting for a node")
