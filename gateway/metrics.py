"""Prometheus metrics: the design's session metrics plus HTTP request metrics.

Each app gets its own CollectorRegistry (so tests can build several apps in one process).
`gimp_active_sessions` is computed from the spawner at scrape time rather than kept up to date
by hand, so it can never drift from the sessions that exist.
"""
from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.spawners.base import Phase, Spawner


class _ActiveSessions(Collector):
    def __init__(self, spawner: Spawner, region: str) -> None:
        self._spawner = spawner
        self._region = region

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("gimp_active_sessions", "Number of currently active GIMP sessions",
                                   labels=["node_type", "region"])
        running = Tally(s.node_type for s in self._spawner.list() if s.phase is Phase.RUNNING)
        for node_type, n in sorted(running.items()):
            family.add_metric([node_type, self._region], n)
        yield family


class Metrics:
    def __init__(self, spawner: Spawner, region: str) -> None:
        self.registry = CollectorRegistry()
        self.region = region
        self.sessions_total = Counter(
            "gimp_sessions_total", "Total number of GIMP sessions created",
            ["user_tier", "region"], registry=self.registry)
        self.session_duration = Histogram(
            "gimp_session_duration_seconds", "Duration of GIMP sessions", ["user_tier"],
            buckets=[60 * 2 ** i for i in range(10)], registry=self.registry)
        self.session_start = Histogram(
            "gateway_session_start_seconds", "From create to running (or failed)", ["outcome"],
            buckets=[0.5, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60, 120], registry=self.registry)
        self.requests = Counter(
            "gateway_http_requests_total", "HTTP requests", ["method", "route", "status"],
            registry=self.registry)
        self.request_duration = Histogram(
            "gateway_http_request_duration_seconds", "HTTP request duration", ["method", "route"],
            buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
            registry=self.registry)
        self.registry.register(_ActiveSessions(spawner, region))
