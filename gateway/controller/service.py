"""The session controller assembled: shared caches (always on, so a standby is warm), and,
while this replica holds the Lease, the reconciler, the idle monitor and the warm pool.

Each of those loops is supervised on its own: one that raises is logged
(`controller_loop_failed`, with the traceback), counted (`gimp_controller_loop_restarts_total`)
and started again after a backoff, while the others go on; only losing the Lease ends them."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.controller.activity import ActivityMonitor
from gateway.controller.events import Recorder
from gateway.controller.leader import LeaderElector
from gateway.controller.nodes import NodeMetrics
from gateway.controller.reconciler import Reconciler
from gateway.controller.settings import ControllerSettings
from gateway.controller.warmpool import WarmPool, is_warm
from gateway.kube import objects
from gateway.kube.cache import Informer
from gateway.kube.client import PODS, SESSIONS, Kube
from gateway.kube.tokens import check_key
from gateway.logs import log_event

logger = logging.getLogger("gateway.session-controller")


class Controller:
    def __init__(self, kube: Kube, settings: ControllerSettings,
                 sessions: Informer | None = None) -> None:
        """`sessions`: a Session cache to share (the gateway's); its owner starts and stops it."""
        self.kube, self.settings = kube, settings
        self._own_sessions = sessions is None
        idle = settings.watch_idle_timeout
        self.sessions = sessions or Informer(kube, SESSIONS, idle_timeout=idle)
        self.pods = Informer(kube, PODS, label_selector=f"app={objects.SESSION_APP_LABEL}",
                             idle_timeout=idle)
        self.recorder = Recorder(kube)
        key = check_key(settings.agent_token_key)
        self.warm_pool = (WarmPool(kube, self.pods, settings.warm_pool, settings.pod, key,
                                   stale_after=settings.start_timeout)
                          if any(settings.warm_pool.values()) else None)
        self.reconciler = Reconciler(kube, self.sessions, self.pods, settings, self.recorder,
                                     self.warm_pool)
        self.activity = ActivityMonitor(kube, self.sessions, self.recorder,
                                        settings.idle_check_interval,
                                        warning=settings.idle_warning,
                                        token_key=settings.agent_token_key.encode())
        self.elector = LeaderElector(kube, settings.lease_name, settings.identity,
                                     settings.lease_duration, settings.renew_interval,
                                     settings.retry_interval)
        self.leading = asyncio.Event()
        self.restarts: dict[str, int] = {}  # loop name -> restarts after a failure
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._own_sessions:
            self.sessions.start()
        self.pods.start()
        self._task = asyncio.create_task(self._lead(), name="session-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leading.is_set():
            await self.elector.release()
        await self.recorder.flush()
        if self._own_sessions:
            await self.sessions.stop()
        await self.pods.stop()

    async def _lead(self) -> None:
        await self.sessions.wait_synced()
        await self.pods.wait_synced()
        while True:
            try:
                await self.elector.acquire()
            except Exception:  # acquire handles API errors itself; anything else: again
                log_event(logger, "leader_election_failed", level=logging.ERROR, exc_info=True)
                await asyncio.sleep(self.settings.retry_interval)
                continue
            self.leading.set()
            log_event(logger, "controller_leading", identity=self.settings.identity,
                      sessions=len(self.sessions.store))
            work = [asyncio.create_task(self._keep_running(name, run), name=f"controller-{name}")
                    for name, run in self.loops().items()]
            try:
                await self.elector.hold()  # returns when the Lease is lost
            except Exception:  # cannot tell whether we still hold it: stop leading, to be safe
                log_event(logger, "lease_hold_failed", level=logging.ERROR, exc_info=True)
            finally:
                for task in work:
                    task.cancel()
                # Bounded: a loop that ignored its cancellation must not hang the shutdown.
                _, stuck = await asyncio.wait(work, timeout=10)
                for task in stuck:
                    log_event(logger, "controller_loop_stuck", level=logging.ERROR,
                              loop=task.get_name())
                self.leading.clear()

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """What runs while this replica leads, by name (for logs and metrics)."""
        loops = {"reconciler": self.reconciler.run, "idle-monitor": self.activity.run}
        if self.warm_pool is not None:
            loops["warm-pool"] = self.warm_pool.run
        return loops

    async def _keep_running(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run one loop for as long as we lead: restarted after a failure, with a backoff that
        grows while it keeps failing (0.1 s doubling to 30 s) and resets after a good minute."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        failures = 0
        while True:
            began = loop.time()
            try:
                await run()
                log_event(logger, "controller_loop_failed", level=logging.ERROR, loop=name,
                          error="the loop returned")
            except Exception:
                log_event(logger, "controller_loop_failed", level=logging.ERROR, loop=name,
                          exc_info=True)
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a cancellation the loop swallowed: stop here
            failures = 1 if loop.time() - began > 60 else failures + 1
            self.restarts[name] = self.restarts.get(name, 0) + 1
            await asyncio.sleep(min(30.0, 0.1 * 2 ** (failures - 1)))

    def collectors(self) -> list[Collector]:
        """Metrics to register in a Prometheus registry (the gateway's, or our own)."""
        return [NodeMetrics(self._counts, self.settings.nodes), _ControllerMetrics(self)]

    def _counts(self) -> tuple[int, int]:
        active = gpu = 0
        for session in list(self.sessions.store.values()):
            phase = (session.get("status") or {}).get("phase", "pending")
            if phase in ("pending", "running") and not session["metadata"].get(
                    "deletionTimestamp"):
                active += 1
                with contextlib.suppress(objects.ManifestError):
                    gpu += objects.gpu_count(session["spec"].get("resources") or {}) > 0
        return active, gpu


class _ControllerMetrics(Collector):
    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily]:
        c = self._controller
        leader = GaugeMetricFamily("gimp_controller_leader", "1 while this replica leads")
        leader.add_metric([], 1 if c.leading.is_set() else 0)
        yield leader
        queue = GaugeMetricFamily("gimp_controller_queue_depth", "Sessions waiting to reconcile")
        queue.add_metric([], len(c.reconciler.queue))
        yield queue
        warm = GaugeMetricFamily("gimp_warm_pool_ready", "Ready warm pods", labels=["application"])
        if c.warm_pool is not None:
            for app in c.warm_pool.sizes:
                warm.add_metric([app], len(c.warm_pool.ready(app)))
        yield warm
        pods = GaugeMetricFamily("gimp_warm_pool_pods", "Warm pods (any state)")
        pods.add_metric([], sum(1 for p in list(c.pods.store.values()) if is_warm(p)))
        yield pods
        restarts = CounterMetricFamily("gimp_controller_loop_restarts",
                                       "Controller loops restarted after a failure",
                                       labels=["loop"])
        for name, count in sorted(c.restarts.items()):
            restarts.add_metric([name], count)
        yield restarts
