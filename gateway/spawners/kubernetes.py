"""The kubernetes spawner: a session is a `Session` resource, reconciled into a pod by the
session controller (in this process with --controller, or `python -m gateway.controller`).

The gateway keeps no state of its own: every read is served from one list+watch cache of
Sessions (plus one of the agents' token Secrets), so several gateway replicas serve at once
and a restarted gateway routes every running session again. Sessions outlive the gateway."""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.config import Config
from gateway.controller.service import Controller
from gateway.controller.settings import ControllerSettings, load_settings
from gateway.kube import objects
from gateway.kube.cache import Informer
from gateway.kube.client import SECRETS, SESSIONS, Kube, KubeError, connect, resolve_namespace
from gateway.logs import log_event
from gateway.spawners.base import (Phase, Session, SessionEvent, SessionRequest, SessionTable,
                                   Spawner, SpawnerError, new_session_id)

logger = logging.getLogger("gateway.kubernetes-spawner")
SELECTOR = f"app={objects.SESSION_APP_LABEL}"
PROGRESS = {"Scheduling": 0.2, "ContainerCreating": 0.5, "Unschedulable": 0.2, "Starting": 0.8}


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def to_session(resource: dict[str, Any], token: str = "") -> Session:
    """The gateway's snapshot of a Session resource (pure)."""
    meta, spec = resource["metadata"], resource["spec"]
    status = resource.get("status") or {}
    phase = Phase.TERMINATING if meta.get("deletionTimestamp") else Phase(
        status.get("phase") or "pending")
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    resources = spec.get("resources") or {}
    return Session(
        id=meta["name"], user=spec["userId"], application=spec["application"], phase=phase,
        created_at=_time(meta.get("creationTimestamp")) or datetime.now(timezone.utc),
        started_at=_time(status.get("startTime")), message=status.get("message"),
        endpoint=status.get("endpoint") if phase is Phase.RUNNING else None,
        agent_token=token, resources=dict(resources), timeout=spec.get("timeout") or 0,
        tier=(meta.get("labels") or {}).get(objects.TIER_LABEL, "standard"),
        progress=1.0 if phase is Phase.RUNNING else PROGRESS.get(ready.get("reason"), 0.1),
        worker=status.get("podName"),
        node_type="gpu" if str(resources.get("gpu", "0")) not in ("", "0") else "cpu")


class _ControllerMetrics(Collector):
    def __init__(self, spawner: KubernetesSpawner) -> None:
        self._spawner = spawner

    def collect(self) -> Iterator[Metric]:
        if self._spawner.controller is not None:
            for collector in self._spawner.controller.collectors():
                yield from collector.collect()


class KubernetesSpawner(Spawner):
    name = "kubernetes"
    worker_field = "pod_name"

    def __init__(self, config: Config, settings: ControllerSettings | None = None) -> None:
        self.config = config
        self.namespace = resolve_namespace(config.namespace)
        # The in-process controller (--controller) gets the gateway's namespace, start timeout
        # and idle check period; anything else comes from the CONTROLLER_* environment.
        self.settings = replace(settings or load_settings([]), namespace=self.namespace,
                                start_timeout=config.start_timeout,
                                idle_check_interval=config.idle_check_interval)
        self.table = SessionTable()
        self.kube: Kube | None = None
        self.sessions: Informer | None = None
        self.secrets: Informer | None = None
        self.controller: Controller | None = None
        self._pods: dict[str, str] = {}  # pod name -> session id, to apply token changes

    async def start(self) -> None:
        try:
            self.kube = Kube(await connect(), self.namespace)
        except KubeError as exc:
            raise SpawnerError(str(exc)) from exc
        self.sessions = Informer(self.kube, SESSIONS, SELECTOR)
        self.secrets = Informer(self.kube, SECRETS, SELECTOR)
        self.sessions.add_handler(self._on_session)
        self.secrets.add_handler(self._on_secret)
        self.sessions.start()
        self.secrets.start()
        try:
            async with asyncio.timeout(30):
                await self.sessions.wait_synced()
                await self.secrets.wait_synced()
        except TimeoutError as exc:
            await self.close()
            raise SpawnerError(f"the Kubernetes API at namespace {self.namespace} did not "
                               f"answer within 30s") from exc
        if self.config.controller:
            self.controller = Controller(self.kube, self.settings, sessions=self.sessions)
            await self.controller.start()
        log_event(logger, "spawner_started", namespace=self.namespace,
                  sessions=len(self.table), controller=self.config.controller)

    async def close(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
        for informer in (self.sessions, self.secrets):
            if informer is not None:
                await informer.stop()
        if self.kube is not None:
            await self.kube.close()

    # ---- cache -> table --------------------------------------------------------------------
    def _token(self, pod_name: str | None) -> str:
        secret = self.secrets.get(objects.agent_secret_name(pod_name)) if (
            pod_name and self.secrets) else None
        data = (secret or {}).get("data") or {}
        return base64.b64decode(data[objects.AGENT_TOKEN_KEY]).decode() if \
            objects.AGENT_TOKEN_KEY in data else ""

    def _on_session(self, kind: str, resource: dict[str, Any], old: dict[str, Any] | None
                    ) -> None:
        name = resource["metadata"]["name"]
        if kind == "DELETED":
            self._pods = {p: s for p, s in self._pods.items() if s != name}
            self.table.remove(name)
            return
        session = to_session(resource, self._token((resource.get("status") or {}).get("podName")))
        if session.worker:
            self._pods[session.worker] = name
        if self.table.get(name) != session:
            self.table.put(session)

    def _on_secret(self, kind: str, secret: dict[str, Any], old: dict[str, Any] | None) -> None:
        pod = (secret["metadata"].get("labels") or {}).get("pod")
        session_id = self._pods.get(pod or "")
        resource = self.sessions.get(session_id) if (session_id and self.sessions) else None
        if resource is not None:
            self._on_session("MODIFIED", resource, None)

    # ---- the interface ---------------------------------------------------------------------
    async def create(self, request: SessionRequest) -> Session:
        """Raises ValueError (objects.ManifestError) for a request Kubernetes cannot take."""
        kube = self._kube()
        manifest = objects.session_manifest(
            new_session_id(), request.user, request.application, resources=request.resources,
            timeout=request.timeout, tier=request.tier)
        started = time.monotonic()
        try:
            created = await kube.create(SESSIONS, manifest)
        except KubeError as exc:
            if exc.status in (400, 422):
                raise objects.ManifestError(exc.message) from exc
            raise SpawnerError(f"cannot create the Session: {exc}") from exc
        session = to_session(created)
        if self.table.get(session.id) is None:
            self.table.put(session)
        log_event(logger, "session_created", session_id=session.id, user_id=request.user,
                  application=request.application, resource_allocation=request.resources,
                  duration_ms=round((time.monotonic() - started) * 1000))
        return self.table.get(session.id) or session

    async def delete(self, session_id: str) -> None:
        kube = self._kube()
        try:
            resource = await kube.delete(SESSIONS, session_id)
        except KubeError as exc:
            if exc.status == 404:
                return
            raise SpawnerError(f"cannot delete the Session: {exc}") from exc
        if resource.get("metadata", {}).get("deletionTimestamp") and \
                self.table.get(session_id) is not None:
            self._on_session("MODIFIED", resource, None)
        log_event(logger, "session_delete_requested", session_id=session_id)

    def get(self, session_id: str) -> Session | None:
        return self.table.get(session_id)

    def list(self, user: str | None = None) -> list[Session]:
        return sorted(self.table.list(user), key=lambda s: s.created_at)

    def subscribe(self, session_id: str | None = None
                  ) -> AbstractAsyncContextManager[AsyncIterator[SessionEvent]]:
        return self.table.subscribe(session_id)

    def collectors(self) -> list[Collector]:
        """Metrics of the in-process controller (--controller), for the gateway's registry:
        required nodes by pool, leadership, queue depth, warm pool. Empty without one."""
        return [_ControllerMetrics(self)]

    def _kube(self) -> Kube:
        if self.kube is None:
            raise SpawnerError("the kubernetes spawner is not started")
        return self.kube
