"""The design's node calculation (`calculateRequiredNodes`) as a pure function, and the
collector that exports its result as metrics for a cluster autoscaler or a dashboard."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class NodeShape:
    cpu_sessions_per_node: int = 10  # the design's conservative estimate
    gpu_sessions_per_gpu: int = 4  # time-slicing replicas per GPU
    gpus_per_node: int = 2
    buffer: float = 1.2  # head-room for scale-up latency


def required_nodes(active_sessions: int, gpu_sessions: int,
                   shape: NodeShape = NodeShape()) -> tuple[int, int]:
    """(cpu_nodes, gpu_nodes) for `active_sessions`, of which `gpu_sessions` need a GPU.

    Exactly the design's arithmetic, truncation of the buffer included (below five nodes it
    adds nothing, which keeps a GPU pool at the nodes it needs)."""
    if active_sessions < 0 or gpu_sessions < 0:
        raise ValueError("session counts must be >= 0")
    if gpu_sessions > active_sessions:
        raise ValueError("gpu_sessions cannot exceed active_sessions (it is a subset)")
    if min(shape.cpu_sessions_per_node, shape.gpu_sessions_per_gpu, shape.gpus_per_node) < 1 \
            or shape.buffer < 1:
        raise ValueError("node shape values must be >= 1")
    cpu = math.ceil((active_sessions - gpu_sessions) / shape.cpu_sessions_per_node)
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
