"""The session reconciler: drives each Session to its pod and its status from the shared
caches. Every step is idempotent (a 409 on create is success, patches carry what they read),
so a restart, a retry after an API error or a second look at the same Session converges on
the same objects; nothing is remembered that the API does not hold. A Session of any shape
(gateway/kube/fields.py) is reconciled or failed with `InvalidSpec`, never a crash."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

from gateway.controller.events import Recorder
from gateway.controller.leader import parse_time
from gateway.controller.podstatus import PodState, read_pod
from gateway.controller.settings import ControllerSettings
from gateway.controller.warmpool import WarmPool
from gateway.controller.workqueue import WorkQueue
from gateway.kube import fields, objects
from gateway.kube.cache import Informer
from gateway.kube.client import PODS, PVCS, SECRETS, SESSIONS, Kube, KubeError
from gateway.kube.tokens import agent_token, check_key, pod_token_uid
from gateway.logs import log_event

logger = logging.getLogger("gateway.session-controller")


def iso_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid(session: dict[str, Any]) -> str | None:
    """Why a Session's spec cannot become a pod (what the CRD schema would have refused)."""
    spec = fields.spec(session)
    if not fields.text(spec.get("userId")):
        return "spec.userId must be a non-empty string"
    if spec.get("application") not in objects.APPLICATIONS:
        return f"spec.application must be one of {', '.join(objects.APPLICATIONS)}"
    for key in ("resources", "storage"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, dict) and all(
                isinstance(v, str) for v in value.values())):
            return f"spec.{key} must be an object of strings"
    if not fields.text(fields.meta(session).get("uid")):
        return "metadata.uid is missing"
    return None


class Reconciler:
    def __init__(self, kube: Kube, sessions: Informer, pods: Informer,
                 settings: ControllerSettings, recorder: Recorder,
                 warm_pool: WarmPool | None = None) -> None:
        self.kube, self.sessions, self.pods = kube, sessions, pods
        self.settings, self.recorder, self.warm_pool = settings, recorder, warm_pool
        self._key = check_key(settings.agent_token_key)
        self.queue = WorkQueue()
        self._pvcs: set[str] = set()  # user volumes known to exist (created or 409)
        self._started: dict[str, float] = {}  # first time a worker saw a session (for logs)
        # Session -> its pod by label: finds a claimed warm pod even if recording the claim
        # in the Session's status failed.
        self._pod_by_session: dict[str, str] = {}
        sessions.add_handler(lambda kind, obj, old: self.queue.add(obj["metadata"]["name"]))
        pods.add_handler(self._on_pod)

    def _on_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        session = (pod["metadata"].get("labels") or {}).get("session")
        if session:
            if kind == "DELETED":
                if self._pod_by_session.get(session) == pod["metadata"]["name"]:
                    del self._pod_by_session[session]
            else:
                self._pod_by_session[session] = pod["metadata"]["name"]
            self.queue.add(session)

    def enqueue_all(self) -> None:
        """Reconcile on start (and on gaining leadership): look at every Session again."""
        for name in list(self.sessions.store):
            self.queue.add(name)

    async def run(self) -> None:
        """Work while leading. A fresh queue per term: a cancelled term may leave names marked
        as in progress."""
        self.queue.close()
        self.queue = WorkQueue()
        self.enqueue_all()
        await asyncio.gather(*(self._worker() for _ in range(self.settings.workers)))

    async def _worker(self) -> None:
        while True:
            name = await self.queue.get()
            try:
                await self.reconcile(name)
                self.queue.forget(name)
            except KubeError as exc:
                log_event(logger, "reconcile_retry", level=logging.WARNING, session_id=name,
                          error=str(exc))
                self.queue.retry(name)
            except Exception:  # a bug must not kill the worker; retry with backoff
                logger.exception("reconcile failed for %s", name)
                self.queue.retry(name)
            finally:
                self.queue.done(name)

    # ---- the reconcile ---------------------------------------------------------------------
    async def reconcile(self, name: str) -> None:
        cached = self.sessions.get(name)
        if cached is None:
            self._started.pop(name, None)
            return
        # A private copy: this pass records its own status writes in it, never in the cache.
        session = {**cached, "metadata": fields.meta(cached), "spec": fields.spec(cached),
                   "status": dict(fields.status(cached))}
        self._started.setdefault(name, time.monotonic())
        if session["metadata"].get("deletionTimestamp"):
            await self._finalize(session)
            return
        status = session["status"]
        if status.get("phase") == "failed":
            await self._delete_pod(self._pod_of(session))
            return
        problem = invalid(session)
        if problem is not None:
            await self._fail(session, "InvalidSpec", problem)
            return
        if objects.FINALIZER not in (session["metadata"].get("finalizers") or []):
            session = await self._add_finalizer(session)
        pod = self._pod_of(session)
        if pod is None:
            pod_name = fields.text(status.get("podName"))
            if status.get("phase") == "running" or (pod_name and pod_name != name):
                await self._fail(session, "PodLost", f"pod {pod_name} disappeared")
                return
            pod = await self._start(session)
            if pod is None:
                return
        await self._observe(session, pod)

    def _pod_of(self, session: dict[str, Any]) -> dict[str, Any] | None:
        name = session["metadata"]["name"]
        pod_name = (fields.text(fields.status(session).get("podName"))
                    or self._pod_by_session.get(name) or name)
        pod = self.pods.get(pod_name)
        if pod is None:
            return None
        label = (pod["metadata"].get("labels") or {}).get("session")
        if label == name:
            return pod
        # A warm pod we claimed whose relabel the cache has not shown yet.
        return pod if label is None and pod_name != name else None

    async def _add_finalizer(self, session: dict[str, Any]) -> dict[str, Any]:
        meta = session["metadata"]
        finalizers = [*(meta.get("finalizers") or []), objects.FINALIZER]
        patched = await self.kube.patch(SESSIONS, meta["name"], {"metadata": {
            "finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}})
        return {**patched, "status": dict(fields.status(patched))}

    async def _start(self, session: dict[str, Any]) -> dict[str, Any] | None:
        """Claim or create the session's pod (and what it needs); return it to observe."""
        meta, spec = session["metadata"], session["spec"]
        name, user = meta["name"], spec["userId"]
        started = time.monotonic()
        ephemeral = spec.get("ephemeral") is True
        if ephemeral and self.warm_pool is not None:
            pod = await self.warm_pool.claim(session)
            if pod is not None:
                self._pod_by_session[name] = pod["metadata"]["name"]
                await self._patch_status(session, {"podName": pod["metadata"]["name"],
                                                   "tokenUID": pod_token_uid(session, pod)})
                log_event(logger, "warm_pod_claimed", session_id=name, user_id=user,
                          pod_name=pod["metadata"]["name"],
                          duration_ms=round((time.monotonic() - started) * 1000))
                self.recorder.record(session, "Claimed", f"warm pod {pod['metadata']['name']}")
                return pod
        # The user's rclone Secret, if any, is an optional volume: no Secret is ever read here.
        cloud = self.settings.cloud_storage and not ephemeral
        try:
            pod = objects.session_pod(pod_name=name, application=spec["application"],
                                      settings=self.settings.pod,
                                      resources=spec.get("resources") or {},
                                      user_id=None if ephemeral else user,
                                      owner=session, cloud_storage=cloud)
        except objects.ManifestError as exc:
            await self._fail(session, "InvalidSpec", str(exc))
            return None
        if not ephemeral:
            owner = await self._ensure_pvc(user, spec.get("storage") or {})
            if owner != user:
                await self._fail(session, "VolumeNotYours",
                                 f"the volume {objects.pvc_name(user)} is recorded for another "
                                 "user (annotation " + objects.USER_ID_ANNOTATION + ": "
                                 + ("none" if owner is None else "a different id") + "): "
                                 "it is never mounted for anybody else")
                return None
        token = agent_token(self._key, meta["uid"])
        await self._create(SECRETS, objects.agent_secret(name, token, session))
        created = await self._create(PODS, pod)
        log_event(logger, "pod_created", session_id=name, user_id=user, pod_name=name,
                  application=spec["application"], cloud_storage=cloud,
                  resource_allocation=pod["spec"]["containers"][0]["resources"]["requests"],
                  duration_ms=round((time.monotonic() - started) * 1000))
        return created or self.pods.get(name) or pod

    async def _create(self, resource: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await self.kube.create(resource, body)
        except KubeError as exc:
            if exc.status == 409:
                return None  # it exists already: a retry or a restart; that is success
            raise

    async def _ensure_pvc(self, user: str, storage: dict[str, str]) -> str | None:
        """The user's volume, made on first use with the exact id in its annotation; returns
        the id an existing volume records (None: none recorded), which the caller compares:
        a volume is never mounted for anybody but the id it was made for."""
        name = objects.pvc_name(user)
        if name in self._pvcs:
            return user
        created = await self._create(PVCS, objects.user_pvc(
            user, storage.get("size") or self.settings.pod.storage_size,
            storage.get("class") or self.settings.pod.storage_class))
        if created is None:  # it existed: whose is it?
            existing = await self.kube.get(PVCS, name)
            owner = fields.text(fields.mapping(fields.meta(existing).get("annotations")).get(
                objects.USER_ID_ANNOTATION))
            if owner != user:
                return owner
        self._pvcs.add(name)
        return user

    async def _observe(self, session: dict[str, Any], pod: dict[str, Any]) -> None:
        meta, status = session["metadata"], session["status"]
        name = meta["name"]
        state = read_pod(pod)
        if state.phase == "pending":
            since = parse_time(meta.get("creationTimestamp"))
            if status.get("startTime"):
                # It ran already (a restarted container, a failing readiness probe): the start
                # timeout counts from when it stopped being ready, not from its creation.
                ready = fields.ready_condition(session)
                since = (ready.get("status") == "False"
                         and parse_time(ready.get("lastTransitionTime"))
                         or datetime.now(timezone.utc))
            if since is not None:
                waited = (datetime.now(timezone.utc) - since).total_seconds()
                left = self.settings.start_timeout - waited
                if left <= 0:
                    await self._fail(session, "StartTimeout",
                                     f"did not start within {self.settings.start_timeout:g}s "
                                     f"({state.message})")
                    return
                self.queue.add_after(name, left + 0.1)
        if state.phase == "failed":
            await self._fail(session, state.reason, state.message)
            return
        update: dict[str, Any] = {"phase": state.phase, "podName": pod["metadata"]["name"],
                                  "tokenUID": pod_token_uid(session, pod),
                                  "message": state.message,
                                  "conditions": [self._condition(session, state)]}
        if state.phase == "running":
            update["endpoint"] = f"http://{state.ip}:{self.settings.pod.agent_port}"
            update["startTime"] = status.get("startTime") or state.started or iso_now()
        changed = await self._patch_status(session, update)
        if changed and state.phase == "running" and status.get("phase") != "running":
            began = self._started.get(name)
            log_event(logger, "session_running", session_id=name,
                      user_id=session["spec"].get("userId"), pod_name=pod["metadata"]["name"],
                      node_name=pod["spec"].get("nodeName"),
                      duration_ms=round((time.monotonic() - began) * 1000) if began else None)
            self.recorder.record(session, "Running", f"reachable at {update['endpoint']}")
        elif changed and state.reason == "Unschedulable":
            self.recorder.record(session, "Unschedulable", state.message, warning=True)

    @staticmethod
    def _condition(session: dict[str, Any], state: PodState) -> dict[str, Any]:
        value = "True" if state.phase == "running" else "False"
        previous = fields.ready_condition(session)
        since = previous.get("lastTransitionTime") if previous.get("status") == value else None
        return {"type": "Ready", "status": value, "reason": state.reason,
                "message": state.message, "lastTransitionTime": since or iso_now()}

    async def _patch_status(self, session: dict[str, Any], update: dict[str, Any]) -> bool:
        current = fields.status(session)
        diff = {k: v for k, v in update.items() if current.get(k) != v}
        if not diff:
            return False
        await self.kube.patch(SESSIONS, session["metadata"]["name"], {"status": diff},
                              status=True)
        session["status"] = {**current, **diff}  # later steps of this pass see it
        return True

    async def _fail(self, session: dict[str, Any], reason: str, message: str) -> None:
        name = session["metadata"]["name"]
        changed = await self._patch_status(session, {
            "phase": "failed", "message": message,
            "conditions": [{"type": "Ready", "status": "False", "reason": reason,
                            "message": message, "lastTransitionTime": iso_now()}]})
        if changed:
            log_event(logger, "session_failed", level=logging.WARNING, session_id=name,
                      user_id=fields.spec(session).get("userId"), reason=reason, message=message)
            self.recorder.record(session, reason, message, warning=True)
        await self._delete_pod(self._pod_of(session))

    async def _delete_pod(self, pod: dict[str, Any] | None) -> None:
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        try:
            await self.kube.delete(PODS, pod["metadata"]["name"], uid=pod["metadata"]["uid"])
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    async def _finalize(self, session: dict[str, Any]) -> None:
        """Deleting: stop the pod gracefully (the entrypoint and the rclone sidecar flush the
        user's data on SIGTERM) and release the Session only once the pod is gone."""
        meta = session["metadata"]
        name = meta["name"]
        if objects.FINALIZER not in (meta.get("finalizers") or []):
            return
        await self._patch_status(session, {"phase": "terminating",
                                           "message": "syncing user data"})
        pod = self._pod_of(session)
        if pod is not None:
            if not pod["metadata"].get("deletionTimestamp"):
                await self._delete_pod(pod)
                log_event(logger, "pod_stopping", session_id=name, pod_name=pod["metadata"]["name"],
                          user_id=fields.spec(session).get("userId"))
                self.recorder.record(session, "Stopping", "syncing user data, stopping the pod")
            return  # the pod's DELETED event brings us back
        finalizers = [f for f in meta.get("finalizers") or [] if f != objects.FINALIZER]
        try:
            await self.kube.patch(SESSIONS, name, {"metadata": {
                "finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}})
        except KubeError as exc:
            if exc.status != 404:
                raise
        began = self._started.pop(name, None)
        log_event(logger, "session_deleted", session_id=name,
                  user_id=fields.spec(session).get("userId"),
                  duration_ms=round((time.monotonic() - began) * 1000) if began else None)
