"""Pure manifest builders: every object the platform writes to Kubernetes, as a function of
its inputs (no I/O, no clock unless passed in), so each one is testable without a cluster."""
from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.identity import slug, user_hash

GROUP = "streaming.platform"
VERSION = "v1"
PLURAL = "sessions"
KIND = "Session"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/sync-user-data"
SESSION_APP_LABEL = "gimp-session"  # the design's `app: gimp-session`, on every session object
USER_ID_ANNOTATION = f"{GROUP}/user-id"  # the raw user id (the label is escaped)
TIER_LABEL = "tier"
WARM_LABEL = f"{GROUP}/warm"  # "true" on an unclaimed warm-pool pod
AGENT_TOKEN_KEY = "token"
RCLONE_CONFIG_KEY = "rclone.conf"
APPLICATIONS = ("gimp", "inkscape", "blender")
HOME = "/home/user"
CLOUD_DIR = "/data/cloud"
X11_DIR = "/tmp/.X11-unix"  # the X socket and the cookie, shared by the session and app containers
XAUTHORITY = f"{X11_DIR}/Xauthority"
ENTRYPOINT = "/usr/local/bin/session-entrypoint"  # Dockerfile.session; its argument is the role
UID = 1000
# What scripts/build-images tags (tests/images checks that deploy/ names only these).
IMAGE_REGISTRY = "ghcr.io/gimp-streaming-platform"
IMAGE_TAG = importlib.metadata.version("gimp-streaming-platform")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


class ManifestError(ValueError):
    """Input that cannot become a valid manifest; the message says which field and why."""


@dataclass(frozen=True)
class Placement:
    """Where a pool's pods go: node selector and tolerations (from configuration)."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PodSettings:
    """Cluster-wide settings of session pods (controller configuration)."""

    image: str = f"{IMAGE_REGISTRY}/session-{{application}}:{IMAGE_TAG}"  # `{application}` is replaced
    agent_port: int = 6901
    session_size: str = "1920x1080"  # the screen a session starts with (what streams)
    # The largest a browser may resize it to: Xvfb's framebuffer, 4 bytes a pixel in every pod
    # whatever it shows, so by default the session size (3840x2160 for HiDPI clients).
    max_size: str = "1920x1080"
    # The application's container: a Session's resources.cpu/memory, else these. Requests are
    # what a session costs while still (measured: GIMP idle ~60 MB, a few hundredths of a core;
    # deploy/README.md, "Density") with room for the images a user opens; limits what one
    # busy session may take. The design asked 1 CPU / 2Gi, which fits 10 pods on 16 vCPUs.
    cpu_request: str = "100m"
    cpu_limit: str = "2"
    memory_request: str = "384Mi"
    memory_limit: str = "4Gi"
    # The session container (Xvfb, window manager, agent: capture and one encode), on top:
    # ~70 MB still with nobody watching, ~120 MB with a viewer at 1920x1080, half a core in motion.
    agent_cpu_request: str = "50m"
    agent_cpu_limit: str = "1"
    agent_memory_request: str = "160Mi"
    agent_memory_limit: str = "512Mi"
    tmp_size: str = "1Gi"
    storage_size: str = "20Gi"
    storage_class: str = "ssd-user-storage"
    cpu_pool: Placement = Placement({"streaming.platform/pool": "cpu"})
    gpu_pool: Placement = Placement(
        {"streaming.platform/pool": "gpu"},
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},))
    gpu_runtime_class: str | None = None
    rclone_image: str = "docker.io/rclone/rclone:1.68"
    rclone_interval: int = 60
    termination_grace: int = 60


def user_label(user_id: str) -> str:
    """A user id as a DNS-1123 label: a readable slug, then 128 bits of the SHA-256 of the
    exact id, always (also for ids that are labels already), so that no two ids share a label,
    a volume or a Secret name ("Alice@x.org" -> "alice-x-org-<32 hex>"). Used in every name
    derived from a user; the exact id is kept in the annotation streaming.platform/user-id."""
    if not user_id:
        raise ManifestError("userId must not be empty")
    return f"{slug(user_id, 'a-z0-9', 30)}-{user_hash(user_id)}"


def pvc_name(user_id: str) -> str:
    return f"user-storage-{user_label(user_id)}"


def rclone_secret_name(user_id: str) -> str:
    """The per-user rclone config Secret that turns on cloud storage for that user."""
    return f"rclone-{user_label(user_id)}"


def agent_secret_name(pod_name: str) -> str:
    return f"{pod_name}-agent"


def gpu_count(resources: dict[str, Any]) -> int:
    """Whole GPUs (the device plugin hands out integers; time-slicing shares them)."""
    value = str(resources.get("gpu", "0") or "0")
    if not value.isdigit():
        raise ManifestError(f"resources.gpu must be a whole number of GPUs, got {value!r}")
    return int(value)


def _quantity(resources: dict[str, Any], key: str) -> str | None:
    value = resources.get(key)
    if value is None:
        return None
    if not _QUANTITY.match(str(value)):
        raise ManifestError(f"resources.{key} is not a Kubernetes quantity: {value!r}")
    return str(value)


def session_manifest(name: str, user_id: str, application: str, *,
                     resources: dict[str, str] | None = None, timeout: int | None = None,
                     tier: str = "standard", storage: dict[str, str] | None = None,
                     ephemeral: bool = False) -> dict[str, Any]:
    """A Session custom resource; raises ManifestError for input the API would reject."""
    if not _DNS_LABEL.match(name):
        raise ManifestError(f"session id {name!r} is not a DNS-1123 label")
    if application not in APPLICATIONS:
        raise ManifestError(f"application must be one of {', '.join(APPLICATIONS)}")
    resources = dict(resources or {})
    unknown = set(resources) - {"cpu", "memory", "gpu"}
    if unknown:
        raise ManifestError(f"unknown resources: {', '.join(sorted(unknown))}")
    for key in ("cpu", "memory"):
        _quantity(resources, key)
    gpu_count(resources)
    if timeout is not None and timeout < 0:
        raise ManifestError("timeout must be >= 0 seconds")
    spec: dict[str, Any] = {"userId": user_id, "application": application}
    if resources:
        spec["resources"] = {k: str(v) for k, v in resources.items()}
    if storage:
        spec["storage"] = dict(storage)
    if timeout is not None:
        spec["timeout"] = timeout
    if ephemeral:
        spec["ephemeral"] = True
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": name, "labels": {"app": SESSION_APP_LABEL,
                                              "user": user_label(user_id),
                                              "application": application,
                                              TIER_LABEL: _label_value(tier)},
                     "annotations": {USER_ID_ANNOTATION: user_id},
                     # Set at creation: saves the controller a write per session.
                     "finalizers": [FINALIZER]},
        "spec": spec,
    }


def _label_value(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63].strip("-_.")
    return cleaned or "standard"


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """Makes the owner's deletion take the object with it (garbage collection)."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def user_pvc(user_id: str, size: str, storage_class: str) -> dict[str, Any]:
    """The user's home volume. No owner: it is the user's data and outlives every session."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": pvc_name(user_id),
                     "labels": {"app": SESSION_APP_LABEL, "user": user_label(user_id),
                                "type": "persistent"},
                     "annotations": {USER_ID_ANNOTATION: user_id}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                 "resources": {"requests": {"storage": size}}},
    }


def agent_secret(pod_name: str, token: str, owner: dict[str, Any]) -> dict[str, Any]:
    """The agent's bearer token: mounted from a Secret, never a plain env value in the pod."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": agent_secret_name(pod_name),
                     "labels": {"app": SESSION_APP_LABEL, "pod": pod_name},
                     "ownerReferences": [owner_reference(owner)]},
        "stringData": {AGENT_TOKEN_KEY: token},
    }


def _restricted() -> dict[str, Any]:
    """Container securityContext of the `restricted` Pod Security Standard, on a read-only root
    (only the volumes mounted are writable)."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
            "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}


def _rclone_sidecar(settings: PodSettings) -> dict[str, Any]:
    """Unprivileged cloud sync: pull at start, push every interval and once more on SIGTERM.
    A native sidecar (init container with restartPolicy Always) stops after the app, so the
    last push sees everything the app wrote."""
    script = (
        # The user's rclone Secret is an optional volume: without one, idle until stopped.
        '[ -f "$RCLONE_CONFIG" ] || { echo "no cloud storage configured" >&2; '
        'trap \'kill $! 2>/dev/null; exit 0\' TERM INT; '
        'while true; do sleep 3600 & wait $!; done; }; '
        'rclone copy cloud: "$DIR" || echo "initial pull failed" >&2; '
        'push() { rclone copy --update "$DIR" cloud:; }; '
        'trap \'push; exit 0\' TERM INT; '
        'while true; do sleep "$INTERVAL" & wait $!; push; done'
    )
    return {
        "name": "rclone-sync", "image": settings.rclone_image, "restartPolicy": "Always",
        "command": ["/bin/sh", "-c", script],
        "env": [{"name": "RCLONE_CONFIG", "value": f"/etc/rclone/{RCLONE_CONFIG_KEY}"},
                {"name": "DIR", "value": CLOUD_DIR},
                {"name": "INTERVAL", "value": str(settings.rclone_interval)},
                {"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "cloud-storage", "mountPath": CLOUD_DIR},
                         {"name": "rclone-config", "mountPath": "/etc/rclone", "readOnly": True},
                         {"name": "temp-storage", "mountPath": "/tmp", "subPath": "rclone"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi"}},
        "securityContext": _restricted(),
    }


def session_pod(*, pod_name: str, application: str, settings: PodSettings,
                user_id: str | None, owner: dict[str, Any] | None,
                resources: dict[str, Any] | None = None, cloud_storage: bool = False,
                ) -> dict[str, Any]:
    """The design's pod template, made valid and `restricted`, in two containers of one image:

    - `session`: Xvfb, the window manager and the agent (the only one with the agent's token
      and port, probed on /health);
    - `app`: the application, which runs the user's plug-ins and scripts and so must not read
      the token: another container (own PID namespace, no token mount) reaching X through the
      shared socket directory with the cookie the session container writes there.

    Both run as uid 1000 on a read-only root with the home volume, their own /tmp and the X
    directory writable. `user_id`/`owner` None makes a warm-pool pod: no user yet, home on an
    emptyDir (a pod's volumes cannot change once it runs), claimed later by relabelling it."""
    if application not in APPLICATIONS:
        raise ManifestError(f"application must be one of {', '.join(APPLICATIONS)}")
    resources = resources or {}
    gpus = gpu_count(resources)
    pool = settings.gpu_pool if gpus else settings.cpu_pool
    cpu = _quantity(resources, "cpu")
    memory = _quantity(resources, "memory")
    app_resources = {"requests": {"cpu": cpu or settings.cpu_request,
                                  "memory": memory or settings.memory_request},
                     "limits": {"cpu": cpu or settings.cpu_limit,
                                "memory": memory or settings.memory_limit}}
    agent_limits: dict[str, str] = {"cpu": settings.agent_cpu_limit,
                                    "memory": settings.agent_memory_limit}
    if gpus:
        agent_limits["nvidia.com/gpu"] = str(gpus)  # NVENC: the agent encodes
    agent_resources = {"requests": {"cpu": settings.agent_cpu_request,
                                    "memory": settings.agent_memory_request},
                       "limits": agent_limits}
    probe = {"httpGet": {"path": "/health", "port": "webrtc"}, "timeoutSeconds": 2}
    common_env: list[dict[str, Any]] = [
        {"name": "DISPLAY", "value": ":99"},
        {"name": "XAUTHORITY", "value": XAUTHORITY},
        {"name": "APPLICATION", "value": application},
        {"name": "USER_ID", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{USER_ID_ANNOTATION}']"}}},
        {"name": "HOME", "value": HOME},
    ]
    session_env = [
        *common_env,
        {"name": "AGENT_PORT", "value": str(settings.agent_port)},
        {"name": "AGENT_TOKEN_FILE", "value": f"/var/run/agent/{AGENT_TOKEN_KEY}"},
        {"name": "SESSION_SIZE", "value": settings.session_size},
        {"name": "MAX_SIZE", "value": settings.max_size},
    ]
    if gpus:
        # The NVIDIA container runtime mounts the NVENC libraries only with `video`.
        session_env.append({"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility,video"})
    shared = [{"name": "user-storage", "mountPath": HOME},
              {"name": "x11", "mountPath": X11_DIR}]
    session_mounts = [*shared,
                      {"name": "temp-storage", "mountPath": "/tmp", "subPath": "session"},
                      {"name": "agent-token", "mountPath": "/var/run/agent", "readOnly": True}]
    app_mounts = [*shared, {"name": "temp-storage", "mountPath": "/tmp", "subPath": "app"}]
    home: dict[str, Any] = ({"persistentVolumeClaim": {"claimName": pvc_name(user_id)}}
                            if user_id is not None else {"emptyDir": {}})
    volumes: list[dict[str, Any]] = [
        {"name": "user-storage", **home},
        {"name": "temp-storage", "emptyDir": {"sizeLimit": settings.tmp_size}},
        {"name": "x11", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "agent-token", "secret": {"secretName": agent_secret_name(pod_name),
                                           "defaultMode": 0o440}},
    ]
    init: list[dict[str, Any]] = []
    if cloud_storage and user_id is not None:
        for mounts in (session_mounts, app_mounts):
            mounts.append({"name": "cloud-storage", "mountPath": CLOUD_DIR})
        volumes += [{"name": "cloud-storage", "emptyDir": {}},
                    {"name": "rclone-config", "secret": {
                        "secretName": rclone_secret_name(user_id), "defaultMode": 0o440,
                        "optional": True}}]
        init.append(_rclone_sidecar(settings))
    labels = {"app": SESSION_APP_LABEL, "application": application, "tier": "streaming"}
    annotations: dict[str, str] = {}
    if user_id is None:
        labels[WARM_LABEL] = "true"
    else:
        labels["user"] = user_label(user_id)
        annotations[USER_ID_ANNOTATION] = user_id
    if owner is not None:
        labels["session"] = owner["metadata"]["name"]
    image = settings.image.replace("{application}", application)
    session = {
        "name": "session",
        "image": image,
        "command": [ENTRYPOINT], "args": ["session"],
        "ports": [{"containerPort": settings.agent_port, "name": "webrtc", "protocol": "TCP"}],
        "env": session_env,
        "resources": agent_resources,
        "volumeMounts": session_mounts,
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "periodSeconds": 30, "failureThreshold": 3},
        "securityContext": _restricted(),
    }
    app = {
        "name": "app",
        "image": image,
        "command": [ENTRYPOINT], "args": ["app"],
        "env": common_env,
        "resources": app_resources,
        "volumeMounts": app_mounts,
        "securityContext": _restricted(),
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": settings.termination_grace,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "fsGroup": UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [session, app],
        "volumes": volumes,
    }
    if init:
        spec["initContainers"] = init
    if pool.node_selector:
        spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        spec["tolerations"] = [dict(t) for t in pool.tolerations]
    if gpus and settings.gpu_runtime_class:
        spec["runtimeClassName"] = settings.gpu_runtime_class
    metadata: dict[str, Any] = {"name": pod_name, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def claim_patch(session: dict[str, Any]) -> dict[str, Any]:
    """Strategic-merge patch that hands a warm pod to a Session (labels and owner)."""
    spec = session["spec"]
    return {"metadata": {
        "labels": {WARM_LABEL: None, "user": user_label(spec["userId"]),
                   "session": session["metadata"]["name"]},
        "annotations": {USER_ID_ANNOTATION: spec["userId"]},
        "ownerReferences": [owner_reference(session)],
    }}


def event(involved: dict[str, Any], reason: str, message: str, *, name: str, timestamp: str,
          warning: bool = False, component: str = "session-controller") -> dict[str, Any]:
    """A core/v1 Event about `involved`, shown by `kubectl describe`."""
    meta = involved["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"],
                           "name": meta["name"], "namespace": meta.get("namespace"),
                           "uid": meta.get("uid")},
        "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
        "source": {"component": component}, "firstTimestamp": timestamp,
        "lastTimestamp": timestamp, "count": 1,
    }


def lease(name: str, holder: str, duration_s: int, now_micro: str,
          acquired: str | None = None, transitions: int = 0) -> dict[str, Any]:
    """The coordination.k8s.io Lease of leader election (times in RFC 3339 micro format)."""
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_s,
                 "acquireTime": acquired or now_micro, "renewTime": now_micro,
                 "leaseTransitions": transitions},
    }
