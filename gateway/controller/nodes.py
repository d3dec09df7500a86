"""The design's node calculation (`calculateRequiredNodes`) as a pure function, and the
collector that exports its result as metrics for a cluster autoscaler or a dashboard.

The design fixes 10 sessions per CPU node ("conservative estimate"). Here the figure follows
what a session pod asks the scheduler for: a node holds as many pods as its allocatable CPU
and memory fit by the pod template's requests (deploy/README.md, "Density", has the
measurement they come from), unless the operator states their own sessions per node.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.resources import quantity

# What the kubelet, the system daemons and DaemonSets keep of a node (kube-reserved,
# system-reserved, eviction threshold): roughly a tenth on the common clouds' 16-vCPU shapes.
NODE_RESERVED = Decimal("0.1")


@dataclass(frozen=True)
class NodeShape:
    """One CPU node and one session pod, as the scheduler sees them."""

    node_cpu: str = "16"  # a CPU node's size (vCPU), before NODE_RESERVED
    node_memory: str = "64Gi"
    pod_cpu: str = "150m"  # a session pod's requests, both containers (PodSettings)
    pod_memory: str = "544Mi"
    cpu_sessions_per_node: int | None = None  # the operator's own figure: wins over the fit
    gpu_sessions_per_gpu: int = 4  # time-slicing replicas per GPU
    gpus_per_node: int = 2
    buffer: float = 1.2  # head-room for scale-up latency

    def sessions_per_node(self) -> int:
        """The operator's figure, else how many pods the node's allocatable fits by requests
        (the scarcer of CPU and memory), at least 1."""
        if self.cpu_sessions_per_node is not None:
            return self.cpu_sessions_per_node
        share = 1 - NODE_RESERVED
        by_cpu = quantity(self.node_cpu) * share / quantity(self.pod_cpu)
        by_memory = quantity(self.node_memory) * share / quantity(self.pod_memory)
        return max(1, int(min(by_cpu, by_memory)))


def check_shape(shape: NodeShape) -> NodeShape:
    """The shape itself, or ValueError naming what is wrong (settings call this at start)."""
    for name, what in (("node_cpu", "--node-cpu"), ("node_memory", "--node-memory"),
                       ("pod_cpu", "the session pod's CPU requests"),
                       ("pod_memory", "the session pod's memory requests")):
        try:
            positive = quantity(getattr(shape, name)) > 0
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        if not positive:
            raise ValueError(f"{what} must be positive")
    if shape.cpu_sessions_per_node is not None and shape.cpu_sessions_per_node < 1:
        raise ValueError("--sessions-per-node must be at least 1")
    return shape


def required_nodes(active_sessions: int, gpu_sessions: int,
                   shape: NodeShape = NodeShape()) -> tuple[int, int]:
    """(cpu_nodes, gpu_nodes) for `active_sessions`, of which `gpu_sessions` need a GPU.

    The design's arithmetic with `shape.sessions_per_node()` for its fixed 10, truncation of
    the buffer included (below five nodes it adds nothing, which keeps a GPU pool at the nodes
    it needs)."""
    if active_sessions < 0 or gpu_sessions < 0:
        raise ValueError("session counts must be >= 0")
    if gpu_sessions > active_sessions:
        raise ValueError("gpu_sessions cannot exceed active_sessions (it is a subset)")
    per_node = shape.sessions_per_node()
    if min(per_node, shape.gpu_sessions_per_gpu, shape.gpus_per_node) < 1 or shape.buffer < 1:
        raise ValueError("node shape values must be >= 1")
    cpu = math.ceil((active_sessions - gpu_sessions) / per_node)
    gpu = math.ceil(gpu_sessions / (shape.gpus_per_node * shape.gpu_sessions_per_gpu))
    return int(cpu * shape.buffer), int(gpu * shape.buffer)


class NodeMetrics(Collector):
    """`gimp_required_nodes{pool}` computed at scrape time from the live session counts."""

    def __init__(self, counts: Callable[[], tuple[int, int]], shape: NodeShape = NodeShape()
                 ) -> None:
        self._counts = counts
        self._shape = shape

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active, gpu = self._counts()
        cpu_nodes, gpu_nodes = required_nodes(active, gpu, self._shape)
        family = GaugeMetricFamily("gimp_required_nodes", "Nodes the session load needs, by pool "
                                   "(the design's calculateRequiredNodes)", labels=["pool"])
        family.add_metric(["cpu"], cpu_nodes)
        family.add_metric(["gpu"], gpu_nodes)
        yield family
        sessions = GaugeMetricFamily("gimp_controller_sessions", "Active sessions the controller "
                                     "sees, by pool", labels=["pool"])
        sessions.add_metric(["cpu"], active - gpu)
        sessions.add_metric(["gpu"], gpu)
        yield sessions
        per_node = GaugeMetricFamily("gimp_sessions_per_node", "Sessions one CPU node holds in the "
                                     "node calculation (requests fit, or the operator's figure)")
        per_node.add_metric([], self._shape.sessions_per_node())
        yield per_node
