"""Controller configuration: flags with `CONTROLLER_*` environment twins (flag, then env, then
default), parsed in one place; bad values exit with one clear usage line."""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.controller.nodes import NodeShape, check_shape
from gateway.kube.objects import APPLICATIONS, Placement, PodSettings
from gateway.resources import quantity
from gateway.kube.tokens import check_key


@dataclass(frozen=True)
class ControllerSettings:
    namespace: str | None = None
    pod: PodSettings = PodSettings()
    nodes: NodeShape = NodeShape()  # the node calculation: node size, pod requests, override
    warm_pool: Mapping[str, int] = field(default_factory=dict)  # application -> pods kept ready
    workers: int = 16
    start_timeout: float = 300.0  # pending longer than this: failed
    idle_check_interval: float = 30.0  # how often running agents are asked for viewers
    cloud_storage: bool = False  # add the rclone sidecar for users who have an rclone Secret
    lease_name: str = "session-controller"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_duration: int = 15
    renew_interval: float = 5.0
    retry_interval: float = 2.0
    metrics_port: int = 8081
    metrics_host: str = "0.0.0.0"
    log_level: str = "info"
    # -- control-loop settings (issue 9) --
    agent_token_key: str = ""  # agent tokens are HMAC-SHA256(key, uid): gateway/kube/tokens.py
    watch_idle_timeout: float = 60.0  # a watch silent this long is stalled: resumed/relisted
    idle_warning: float = 60.0  # viewers are told this long before an idle session ends


def _total(*quantities: str) -> str:
    """Quantities added up, as a quantity (cores or bytes)."""
    return str(sum(quantity(q) for q in quantities))


def parse_warm_pool(text: str) -> dict[str, int]:
    """"gimp=2,inkscape=1" -> {"gimp": 2, "inkscape": 1}."""
    pool: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        app, _, count = item.partition("=")
        if app not in APPLICATIONS or not count.isdigit():
            raise ValueError(f"warm pool entry {item!r}: expected APP=N with APP one of "
                             f"{', '.join(APPLICATIONS)}")
        pool[app] = int(count)
    return pool


def parse_selector(text: str) -> dict[str, str]:
    """"k=v,k2=v2" -> {"k": "v", "k2": "v2"}."""
    selector: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"node selector entry {item!r}: expected KEY=VALUE")
        selector[key] = value
    return selector


def parse_tolerations(text: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of Kubernetes tolerations, e.g. '[{"key":"gpu","operator":"Exists"}]'."""
    try:
        value = json.loads(text or "[]")
    except ValueError as exc:
        raise ValueError(f"tolerations are not JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError("tolerations must be a JSON list of objects")
    return tuple(value)


def parse_size(text: str, what: str) -> str:
    """"1920x1080" (even sides, 64..8192, as the agent takes them) -> itself."""
    match = re.fullmatch(r"(\d{2,5})x(\d{2,5})", text.strip())
    if not match or not all(64 <= int(v) <= 8192 and int(v) % 2 == 0 for v in match.groups()):
        raise ValueError(f"{what} {text!r}: expected WIDTHxHEIGHT with even sides of 64..8192, "
                         f"e.g. 1920x1080")
    return text.strip()


def _selector_text(pool: Placement) -> str:
    return ",".join(f"{k}={v}" for k, v in pool.node_selector.items())


def load_settings(argv: Sequence[str] | None = None,
                  env: Mapping[str, str] | None = None) -> ControllerSettings:
    env = os.environ if env is None else env
    d, dp = ControllerSettings(), PodSettings()

    def e(name: str, default: object) -> str:
        return str(env.get(f"CONTROLLER_{name}", default))

    p = argparse.ArgumentParser(prog="python -m gateway.controller",
                                description="The session controller: reconciles Sessions into "
                                            "pods. Each flag has a CONTROLLER_* env twin.")
    p.add_argument("--namespace", default=env.get("GATEWAY_NAMESPACE"),
                   help="[GATEWAY_NAMESPACE] default: the pod's own namespace, else default")
    p.add_argument("--session-image", default=e("SESSION_IMAGE", dp.image),
                   help="[CONTROLLER_SESSION_IMAGE] session image; {application} is replaced")
    p.add_argument("--agent-port", default=e("AGENT_PORT", dp.agent_port),
                   help="[CONTROLLER_AGENT_PORT] the agent's port in session pods")
    p.add_argument("--session-size", default=e("SESSION_SIZE", dp.session_size),
                   help="[CONTROLLER_SESSION_SIZE] the screen size sessions start with (what "
                        "streams until a browser resizes it)")
    p.add_argument("--max-size", default=e("MAX_SIZE", ""),
                   help="[CONTROLLER_MAX_SIZE] the largest size a browser may resize a session to, "
                        "e.g. 3840x2160 for HiDPI screens; every pod's Xvfb holds a framebuffer "
                        "this large (default: the session size)")
    p.add_argument("--node-cpu", default=e("NODE_CPU", d.nodes.node_cpu),
                   help="[CONTROLLER_NODE_CPU] vCPUs of a CPU-pool node, for the node calculation "
                        "(gimp_required_nodes)")
    p.add_argument("--node-memory", default=e("NODE_MEMORY", d.nodes.node_memory),
                   help="[CONTROLLER_NODE_MEMORY] memory of a CPU-pool node, e.g. 64Gi")
    p.add_argument("--sessions-per-node", default=e("SESSIONS_PER_NODE", ""),
                   help="[CONTROLLER_SESSIONS_PER_NODE] sessions one CPU-pool node holds, as "
                        "measured on your hardware (python -m bench.density); default: as many "
                        "as the node fits by the session pods' requests")
    p.add_argument("--storage-class", default=e("STORAGE_CLASS", dp.storage_class),
                   help="[CONTROLLER_STORAGE_CLASS] of users' home volumes")
    p.add_argument("--storage-size", default=e("STORAGE_SIZE", dp.storage_size),
                   help="[CONTROLLER_STORAGE_SIZE] of a new user's home volume")
    p.add_argument("--cpu-node-selector",
                   default=e("CPU_NODE_SELECTOR", _selector_text(dp.cpu_pool)),
                   help="[CONTROLLER_CPU_NODE_SELECTOR] k=v,... for CPU sessions")
    p.add_argument("--gpu-node-selector",
                   default=e("GPU_NODE_SELECTOR", _selector_text(dp.gpu_pool)),
                   help="[CONTROLLER_GPU_NODE_SELECTOR] k=v,... for GPU sessions")
    p.add_argument("--cpu-tolerations",
                   default=e("CPU_TOLERATIONS", json.dumps(list(dp.cpu_pool.tolerations))),
                   help="[CONTROLLER_CPU_TOLERATIONS] JSON list for CPU sessions")
    p.add_argument("--gpu-tolerations",
                   default=e("GPU_TOLERATIONS", json.dumps(list(dp.gpu_pool.tolerations))),
                   help="[CONTROLLER_GPU_TOLERATIONS] JSON list for GPU sessions")
    p.add_argument("--gpu-runtime-class", default=e("GPU_RUNTIME_CLASS", ""),
                   help="[CONTROLLER_GPU_RUNTIME_CLASS] e.g. nvidia (empty: none)")
    p.add_argument("--warm-pool", default=e("WARM_POOL", ""),
                   help="[CONTROLLER_WARM_POOL] ready pods per application, e.g. gimp=2")
    p.add_argument("--cloud-storage", action="store_true",
                   default=e("CLOUD_STORAGE", "").lower() in ("1", "true", "yes"),
                   help="[CONTROLLER_CLOUD_STORAGE] rclone sidecar for users with an rclone "
                        "Secret")
    p.add_argument("--workers", default=e("WORKERS", d.workers), help="[CONTROLLER_WORKERS]")
    p.add_argument("--start-timeout", default=e("START_TIMEOUT", d.start_timeout),
                   help="[CONTROLLER_START_TIMEOUT] seconds a session may stay pending")
    p.add_argument("--idle-check-interval", default=e("IDLE_CHECK_INTERVAL",
                                                        d.idle_check_interval),
                   help="[CONTROLLER_IDLE_CHECK_INTERVAL] seconds between viewer counts")
    p.add_argument("--metrics-port", default=e("METRICS_PORT", d.metrics_port),
                   help="[CONTROLLER_METRICS_PORT] /metrics and /healthz")
    p.add_argument("--identity", default=e("IDENTITY", d.identity),
                   help="[CONTROLLER_IDENTITY] leader-election identity (default host-pid)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default=e("LOG_LEVEL", d.log_level), help="[CONTROLLER_LOG_LEVEL]")
    # -- control-loop settings (issue 9) --
    p.add_argument("--agent-token-key", default=e("AGENT_TOKEN_KEY", d.agent_token_key),
                   help="[CONTROLLER_AGENT_TOKEN_KEY] the key agent tokens are derived from "
                        "(the gateway's GATEWAY_AGENT_TOKEN_KEY); required")
    p.add_argument("--watch-idle-timeout",
                   default=e("WATCH_IDLE_TIMEOUT", d.watch_idle_timeout),
                   help="[CONTROLLER_WATCH_IDLE_TIMEOUT] seconds a watch may stay silent (no "
                        "event, no bookmark) before it counts as stalled and is reopened")
    p.add_argument("--idle-warning", default=e("IDLE_WARNING", d.idle_warning),
                   help="[CONTROLLER_IDLE_WARNING] seconds before an idle session ends that its "
                        "viewers are warned (at most half its timeout)")
    a = p.parse_args(argv)
    try:
        pod = replace(
            dp, image=a.session_image, agent_port=int(a.agent_port),
            session_size=parse_size(a.session_size, "--session-size"),
            max_size=parse_size(a.max_size or a.session_size, "--max-size"),
            storage_class=a.storage_class, storage_size=a.storage_size,
            cpu_pool=Placement(parse_selector(a.cpu_node_selector),
                               parse_tolerations(a.cpu_tolerations)),
            gpu_pool=Placement(parse_selector(a.gpu_node_selector),
                               parse_tolerations(a.gpu_tolerations)),
            gpu_runtime_class=a.gpu_runtime_class or None)
        per_node = str(a.sessions_per_node).strip()
        if per_node and not per_node.isdigit():
            raise ValueError(f"--sessions-per-node {per_node!r}: expected a whole number")
        nodes = check_shape(replace(
            d.nodes, node_cpu=str(a.node_cpu), node_memory=str(a.node_memory),
            pod_cpu=_total(pod.cpu_request, pod.agent_cpu_request),
            pod_memory=_total(pod.memory_request, pod.agent_memory_request),
            cpu_sessions_per_node=int(per_node) if per_node else None))
        settings = replace(
            d, namespace=a.namespace, pod=pod, nodes=nodes, warm_pool=parse_warm_pool(a.warm_pool),
            cloud_storage=a.cloud_storage, workers=int(a.workers),
            start_timeout=float(a.start_timeout),
            idle_check_interval=float(a.idle_check_interval),
            metrics_port=int(a.metrics_port), identity=a.identity, log_level=a.log_level,
            agent_token_key=a.agent_token_key,
            watch_idle_timeout=float(a.watch_idle_timeout), idle_warning=float(a.idle_warning))
        if a.agent_token_key:
            check_key(a.agent_token_key)
        if settings.watch_idle_timeout <= 0:
            raise ValueError("--watch-idle-timeout must be positive")
    except ValueError as exc:
        p.error(str(exc))
    if any(int(s) > int(m) for s, m in zip(pod.session_size.split("x"), pod.max_size.split("x"))):
        p.error(f"--session-size {pod.session_size} exceeds --max-size {pod.max_size}")
    if not 0 < pod.agent_port < 65536 or settings.workers < 1 or settings.start_timeout <= 0 \
            or settings.idle_check_interval <= 0:
        p.error("--agent-port, --workers, --start-timeout and --idle-check-interval must be "
                "positive (and the port below 65536)")
    return settings
