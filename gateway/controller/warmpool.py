"""The warm pool: N ready session pods per application that an ephemeral Session claims, so it
runs within a second; the pool refills itself.

A claim relabels the pod and makes the Session its owner in one patch that carries the pod's
resourceVersion, so two Sessions can never claim the same pod. Warm pods have no user yet, so
their home is an emptyDir (a running pod's volumes cannot change): only Sessions with
`spec.ephemeral` use the pool (see deploy/README.md). A warm pod's agent token is derived from
the pod's own uid (it is made before any Session exists); the claiming Session records that uid
as `status.tokenUID`. A warm pod that does not become ready within `stale_after` seconds (its
token Secret was never written, its image does not pull) is replaced."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from datetime import datetime, timezone

from gateway.controller.podstatus import read_pod
from gateway.kube import fields, objects
from gateway.kube.cache import Informer
from gateway.kube.client import PODS, SECRETS, STRATEGIC, Kube, KubeError
from gateway.kube.objects import PodSettings
from gateway.kube.tokens import agent_token
from gateway.logs import log_event

logger = logging.getLogger("gateway.session-controller")


def is_warm(pod: dict[str, Any]) -> bool:
    meta = pod["metadata"]
    return (meta.get("labels") or {}).get(objects.WARM_LABEL) == "true" and \
        not meta.get("deletionTimestamp")


class WarmPool:
    def __init__(self, kube: Kube, pods: Informer, sizes: Mapping[str, int],
                 settings: PodSettings, key: bytes, resync: float = 10.0,
                 stale_after: float = 300.0) -> None:
        self.kube, self.pods, self.sizes, self.settings = kube, pods, dict(sizes), settings
        self._key = key
        self._wake = asyncio.Event()
        self._resync = resync
        self._stale_after = stale_after
        self._claimed: set[str] = set()  # claimed here, before the watch shows the relabel
        self._creating: dict[str, int] = {app: 0 for app in self.sizes}
        pods.add_handler(self._on_pod)

    def _on_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        if is_warm(pod) or (old is not None and is_warm(old)) or kind == "DELETED":
            self._wake.set()

    def ready(self, application: str) -> list[dict[str, Any]]:
        return [p for p in self.pods.store.values() if is_warm(p)
                and p["metadata"]["labels"].get("application") == application
                and p["metadata"]["name"] not in self._claimed
                and read_pod(p).phase == "running"]

    async def claim(self, session: dict[str, Any]) -> dict[str, Any] | None:
        """Adopt a ready warm pod for `session`; None when none is ready (or all races lost)."""
        for pod in self.ready(session["spec"]["application"]):
            name = pod["metadata"]["name"]
            self._claimed.add(name)
            patch = objects.claim_patch(session)
            patch["metadata"]["resourceVersion"] = pod["metadata"]["resourceVersion"]
            try:
                claimed = await self.kube.patch(PODS, name, patch, content_type=STRATEGIC)
            except KubeError as exc:
                if exc.status in (404, 409):
                    continue  # gone or changed under us: try the next one
                raise
            finally:
                self._wake.set()
            return claimed
        return None

    async def run(self) -> None:
        while True:
            try:
                await self.refill()
            except KubeError as exc:
                log_event(logger, "warm_pool_refill_failed", level=logging.WARNING,
                          error=str(exc))
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set, and the pool would outlive its leadership.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._resync):
                    await self._wake.wait()

    async def refill(self) -> None:
        live = {p["metadata"]["name"] for p in self.pods.store.values()}
        self._claimed &= {n for n in live if is_warm(self.pods.store[n])}
        for app, size in self.sizes.items():
            pool = [p for p in self.pods.store.values() if is_warm(p)
                    and p["metadata"]["labels"].get("application") == app]
            for pod in pool:
                state = read_pod(pod)
                if state.phase == "failed" or self._stale(pod, state.phase):
                    log_event(logger, "warm_pod_failed", level=logging.WARNING,
                              pod_name=pod["metadata"]["name"],
                              reason=state.reason if state.phase == "failed" else "StartTimeout")
                    await self._delete(pod["metadata"]["name"])
            healthy = sum(1 for p in pool if read_pod(p).phase != "failed"
                          and not self._stale(p, read_pod(p).phase)
                          and p["metadata"]["name"] not in self._claimed)
            missing = size - healthy - self._creating[app]
            if missing > 0:
                await asyncio.gather(*(self._create(app) for _ in range(missing)))

    def _stale(self, pod: dict[str, Any], phase: str) -> bool:
        created = fields.parse_time(pod["metadata"].get("creationTimestamp"))
        return phase == "pending" and created is not None and (
            datetime.now(timezone.utc) - created).total_seconds() > self._stale_after

    async def _create(self, app: str) -> None:
        name = f"warm-{app}-{secrets.token_hex(6)}"
        started = time.monotonic()
        self._creating[app] += 1
        try:
            try:
                pod = await self.kube.create(PODS, objects.session_pod(
                    pod_name=name, application=app, settings=self.settings, user_id=None,
                    owner=None))
            except KubeError as exc:
                if exc.status != 409:
                    raise
                pod = await self.kube.get(PODS, name)  # ours (the name is random): answer lost
            token = agent_token(self._key, pod["metadata"]["uid"])
            try:
                await self.kube.create(SECRETS, objects.agent_secret(name, token, pod))
            except KubeError as exc:
                if exc.status != 409:
                    raise
        finally:
            self._creating[app] -= 1
        log_event(logger, "warm_pod_created", pod_name=name, application=app,
                  duration_ms=round((time.monotonic() - started) * 1000))

    async def _delete(self, name: str) -> None:
        try:
            await self.kube.delete(PODS, name)
        except KubeError as exc:
            if exc.status != 404:
                raise
