"""The kubernetes spawner: a session is a `Session` resource, reconciled into a pod by the
session controller (in this process with --controller, or `python -m gateway.controller`).

The gateway keeps no state of its own: every read is served from one list+watch cache of
Sessions, so several gateway replicas serve at once and a restarted gateway routes every
running session again. Sessions outlive the gateway. Agent tokens are derived from the
Session (gateway/kube/tokens.py), so the gateway reads no Secret.

Several replicas agree through the API server, the one thing they share: a Session is named
after its user and application (`session_names`), so two creates of the same pair, on any
replicas, meet at one name and the second gets 409 and the first's Session. The per-user limit
is checked after the create against a fresh list from the API (see `create`)."""
from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.config import Config
from gateway.identity import user_hash
from gateway.controller.service import Controller
from gateway.controller.settings import ControllerSettings, load_settings
from gateway.kube import fields, objects
from gateway.kube.cache import Informer
from gateway.kube.client import SESSIONS, Kube, KubeError, RetryPolicy, connect, resolve_namespace
from gateway.kube.tokens import agent_token, check_key, token_uid
from gateway.logs import log_event
from gateway.shares import Share, from_records
from gateway.spawners.base import (Phase, Session, SessionEvent, SessionExists, SessionRequest,
                                   SessionTable, Spawner, SpawnerError, SpawnerRefused)

logger = logging.getLogger("gateway.kubernetes-spawner")
SELECTOR = f"app={objects.SESSION_APP_LABEL}"
PROGRESS = {"Scheduling": 0.2, "ContainerCreating": 0.5, "Unschedulable": 0.2, "Starting": 0.8}
NAMES_PER_PAIR = 4  # s<user hash>-<app>, then -1, -2, -3 while earlier ones are still ending
CREATE_REQUEST = f"{objects.GROUP}/create-request"  # tells our own (retried) create from another's
SHARE_WRITE_ATTEMPTS = 8  # writers of one Session's shares on other replicas: people, not scripts
RIVAL_WAIT_S = 1.0  # how long a create that lost a race waits to see whether the rival stays


def session_names(user: str, application: str, count: int = NAMES_PER_PAIR) -> list[str]:
    """The Session names of (user, application), in the order every replica tries them:
    "s" + 32 hex digits of SHA-256 over the exact user id + "-" + the application, then the
    same with -1, -2, ... (DNS-1123 labels of at most 44 characters)."""
    base = f"s{user_hash(user)}-{application}"
    return [base, *(f"{base}-{i}" for i in range(1, count))]


def to_session(resource: dict[str, Any], token: str = "") -> Session:
    """The gateway's snapshot of a Session resource (pure; any shape of status or spec)."""
    meta, spec, status = fields.meta(resource), fields.spec(resource), fields.status(resource)
    phase = Phase(fields.phase(resource))
    ready = fields.ready_condition(resource)
    resources = {str(k): str(v) for k, v in fields.mapping(spec.get("resources")).items()}
    return Session(
        id=str(meta.get("name", "")), user=fields.text(spec.get("userId")) or "",
        application=fields.text(spec.get("application")) or "", phase=phase,
        created_at=fields.parse_time(meta.get("creationTimestamp")) or datetime.now(timezone.utc),
        started_at=fields.parse_time(status.get("startTime")),
        message=fields.text(status.get("message")),
        endpoint=fields.endpoint(resource) if phase is Phase.RUNNING else None,
        agent_token=token, resources=resources, timeout=fields.timeout(resource) or 0,
        tier=str(fields.mapping(meta.get("labels")).get(objects.TIER_LABEL, "standard")),
        progress=1.0 if phase is Phase.RUNNING else PROGRESS.get(
            fields.text(ready.get("reason")) or "", 0.1),
        worker=fields.text(status.get("podName")),
        node_type="gpu" if resources.get("gpu", "0") not in ("", "0") else "cpu",
        shares=from_records(spec.get("shares")))


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

    def __init__(self, config: Config, settings: ControllerSettings | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.namespace = resolve_namespace(config.namespace)
        # The in-process controller (--controller) gets the gateway's namespace, token key,
        # start timeout and idle check period; anything else comes from CONTROLLER_*.
        self.settings = replace(settings or load_settings([]), namespace=self.namespace,
                                agent_token_key=config.agent_token_key,
                                start_timeout=config.start_timeout,
                                idle_check_interval=config.idle_check_interval,
                                idle_warning=config.idle_warning)
        self.retry = retry
        self.table = SessionTable()
        self.kube: Kube | None = None
        self.sessions: Informer | None = None
        self.controller: Controller | None = None
        self._key = b""
        self._share_locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        try:
            self._key = check_key(self.config.agent_token_key)
        except ValueError as exc:
            raise SpawnerError(f"--agent-token-key: {exc}") from exc
        try:
            self.kube = Kube(await connect(), self.namespace, self.retry)
        except KubeError as exc:
            raise SpawnerError(str(exc)) from exc
        self.sessions = Informer(self.kube, SESSIONS, SELECTOR,
                                 idle_timeout=self.settings.watch_idle_timeout)
        self.sessions.add_handler(self._on_session)
        self.sessions.start()
        try:
            async with asyncio.timeout(30):
                await self.sessions.wait_synced()
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
        if self.sessions is not None:
            await self.sessions.stop()
        if self.kube is not None:
            await self.kube.close()

    # ---- cache -> table --------------------------------------------------------------------
    def _snapshot(self, resource: dict[str, Any]) -> Session:
        uid = token_uid(resource)
        return to_session(resource, agent_token(self._key, uid) if uid else "")

    def _on_session(self, kind: str, resource: dict[str, Any], old: dict[str, Any] | None
                    ) -> None:
        name = resource["metadata"]["name"]
        if kind == "DELETED":
            self.table.remove(name)
            self._share_locks.pop(name, None)
            return
        session = self._snapshot(resource)
        if self.table.get(name) != session:
            self.table.put(session)

    # ---- the interface ---------------------------------------------------------------------
    async def create(self, request: SessionRequest) -> Session:
        """Create the user's Session for the application, agreeing with every other replica
        through the API server:

        1. A fresh list of the user's Sessions: an active one of that application is the
           answer (SessionExists); the user at the per-user limit is refused (SpawnerRefused).
        2. The first name of `session_names` not taken by a Session that is ending is created;
           a 409 there reads that Session fresh: active (another replica won) -> SessionExists;
           ending -> the next name; all ending -> SpawnerRefused with Retry-After.
        3. A fresh list again: if a racing create made another active Session of the pair
           (only possible while an earlier one was just going away), ours is withdrawn and the
           other is the answer; if the user is now over the limit (replicas raced for
           different applications), ours is withdrawn and refused: the limit is never
           exceeded, though two racing replicas may both refuse.

        Raises ValueError (objects.ManifestError) for a request Kubernetes cannot take."""
        kube = self._kube()
        started = time.monotonic()
        try:
            for _ in range(3):  # a new walk only after every racing create withdrew
                created = await self._create_once(kube, request)
                if created is not None:
                    break
            else:
                raise SpawnerRefused(f"another request is starting your {request.application} "
                                     "session: try again", retry_after=1)
        except KubeError as exc:
            raise SpawnerError(f"cannot create the Session: {exc}") from exc
        session = self._snapshot(created)
        if self.table.get(session.id) is None:
            self.table.put(session)
        log_event(logger, "session_created", session_id=session.id, user_id=request.user,
                  application=request.application, resource_allocation=request.resources,
                  duration_ms=round((time.monotonic() - started) * 1000))
        return self.table.get(session.id) or session

    async def _create_once(self, kube: Kube, request: SessionRequest) -> dict[str, Any] | None:
        """One walk (steps 1-3 of `create`): the new Session, or None when a racing create
        made one too and both withdrew (walk again)."""
        mine = await self._user_sessions(kube, request.user)
        self._check(request, mine, None)
        taken = {fields.meta(s).get("name"): s for s in mine}
        created = None
        for name in session_names(request.user, request.application):
            if name in taken:
                continue  # ending (an active one was the answer above)
            created = await self._create_named(kube, request, name)
            if created is not None:
                break
        if created is None:
            raise SpawnerRefused(f"your last {request.application} sessions are still ending: "
                                 "try again in a few seconds", retry_after=5)
        others = [s for s in await self._user_sessions(kube, request.user)
                  if fields.meta(s).get("uid") != created["metadata"]["uid"]]
        rivals = [s for s in others if fields.active(s)
                  and fields.spec(s).get("application") == request.application]
        if rivals:
            await self._withdraw(kube, created, "a racing create made the same session")
            winner = await self._survivor(kube, rivals)
            if winner is not None:
                raise SessionExists(self._snapshot(winner))
            return None
        try:
            self._check(request, others, created)
        except SpawnerRefused:
            await self._withdraw(kube, created, "over the per-user limit")
            raise
        return created

    def _check(self, request: SessionRequest, others: list[dict[str, Any]],
               created: dict[str, Any] | None) -> None:
        """Before a create (`created` None): the user's active session of the application is
        the answer, and the limit must leave room; after it: the limit must hold with it."""
        active = [s for s in others if fields.active(s)]
        if created is None:
            for resource in active:
                if fields.spec(resource).get("application") == request.application:
                    raise SessionExists(self._snapshot(resource))
        limit = self.config.max_sessions_per_user
        if len(active) + 1 > limit:  # + the one to create, or the one just created
            raise SpawnerRefused(f"you already have {limit} sessions: end one to start another")

    async def _create_named(self, kube: Kube, request: SessionRequest, name: str
                            ) -> dict[str, Any] | None:
        """Create the Session `name`: the created object, or None when an ending one holds
        the name; SessionExists when an active one does."""
        manifest = objects.session_manifest(
            name, request.user, request.application, resources=request.resources,
            timeout=request.timeout, tier=request.tier, ephemeral=self.config.ephemeral)
        nonce = secrets.token_hex(8)  # this create's own mark, kept through its retries
        manifest["metadata"]["annotations"][CREATE_REQUEST] = nonce
        for _ in range(3):  # a Session that goes between our create and our read: again
            try:
                return await kube.create(SESSIONS, manifest)
            except KubeError as exc:
                if exc.status in (400, 422):
                    raise objects.ManifestError(exc.message) from exc
                if exc.status != 409:
                    raise
            holder = await self._read(kube, name)
            if holder is None:
                continue
            mark = fields.mapping(fields.meta(holder).get("annotations")).get(CREATE_REQUEST)
            if mark == nonce and fields.active(holder):
                return holder  # our own create, retried after its answer was lost
            if fields.active(holder) and fields.spec(holder).get("userId") == request.user:
                raise SessionExists(self._snapshot(holder))
            return None  # ending (or, never in practice, not this user's): the next name
        return None

    async def _user_sessions(self, kube: Kube, user: str) -> list[dict[str, Any]]:
        """The user's Sessions, fresh from the API (the label may be shared by a crafted id:
        the exact userId decides)."""
        listing = await kube.list(SESSIONS, f"{SELECTOR},user={objects.user_label(user)}")
        return [s for s in listing.get("items") or [] if fields.spec(s).get("userId") == user]

    @staticmethod
    async def _read(kube: Kube, name: str) -> dict[str, Any] | None:
        try:
            return await kube.get(SESSIONS, name)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def _withdraw(self, kube: Kube, created: dict[str, Any], why: str) -> None:
        meta = created["metadata"]
        log_event(logger, "session_withdrawn", session_id=meta["name"],
                  user_id=created["spec"]["userId"], reason=why)
        try:
            await kube.delete(SESSIONS, meta["name"], uid=meta["uid"])
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    async def _survivor(self, kube: Kube, rivals: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The racing Session that stays (its creator saw no rival), or None if every one is
        withdrawn too: the creators of both saw each other. Decided within RIVAL_WAIT_S."""
        deadline = time.monotonic() + RIVAL_WAIT_S
        names = [fields.meta(r).get("name") for r in rivals]
        while True:
            current = [r for r in [await self._read(kube, n) for n in names if n] if
                       r is not None and fields.active(r)]
            if not current or time.monotonic() >= deadline:
                return min(current, key=lambda r: r["metadata"]["name"]) if current else None
            await asyncio.sleep(0.1)

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

    async def update_shares(self, session_id: str,
                            change: Callable[[tuple[Share, ...]], tuple[Share, ...]]) -> Session:
        """Write `spec.shares` with the resourceVersion read (optimistic concurrency): a
        replica that wrote in between makes the API answer 409, and the change is applied
        again to what that replica wrote. Every replica's cache then sees the new list."""
        kube = self._kube()
        # One writer per replica at a time (its own requests never conflict); other replicas'
        # writes are what the resourceVersion check catches.
        async with self._share_locks.setdefault(session_id, asyncio.Lock()):
            return await self._write_shares(kube, session_id, change)

    async def _write_shares(self, kube: Kube, session_id: str,
                            change: Callable[[tuple[Share, ...]], tuple[Share, ...]]) -> Session:
        for attempt in range(SHARE_WRITE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.05 * attempt))  # rivals fall out of step
            resource = await self._read(kube, session_id)
            if resource is None or fields.meta(resource).get("deletionTimestamp"):
                raise KeyError(session_id)
            current = from_records(fields.spec(resource).get("shares"))
            body = {"metadata": {"resourceVersion": resource["metadata"]["resourceVersion"]},
                    "spec": {"shares": [s.record() for s in change(current)]}}
            try:
                written = await kube.patch(SESSIONS, session_id, body)
            except KubeError as exc:
                if exc.status == 409:
                    continue
                if exc.status == 404:
                    raise KeyError(session_id) from exc
                raise SpawnerError(f"cannot store the share: {exc}") from exc
            self._on_session("MODIFIED", written, None)  # this replica sees it at once
            return self._snapshot(written)
        raise SpawnerError("the Session kept changing: try again")

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
