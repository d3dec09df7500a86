"""The session registry: the gateway's rules on top of the spawner (which owns the sessions).

It enforces what a user may do (only their own sessions, one per application, limits) and turns
the spawner's change feed into the design's logs and metrics.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.auth import User
from gateway.config import Config
from gateway.logs import log_event
from gateway.metrics import Metrics
from gateway.spawners.base import (Phase, Route, Session, SessionEvent, SessionExists,
                                   SessionRequest, Spawner, SpawnerRefused, utcnow)

log = logging.getLogger("gateway.session-manager")


class LimitError(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        # Seconds for Retry-After: always sent with a 429 (30 unless known), with a 409 when set.
        self.retry_after = retry_after


class CreateRateLimit:
    """At most `limit` creations per user in any `window` seconds (a sliding window): each
    creation costs a pod or an X server, so a script must not be able to churn them."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._times: dict[str, deque[float]] = {}

    def retry_after(self, user_id: str) -> int:
        """0 when `user_id` may create now, else the whole seconds until they may."""
        if self._limit <= 0:
            return 0
        now = self._clock()
        times = self._times.get(user_id)
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            self._times.pop(user_id, None)  # forget idle users: the table stays small
            return 0
        if len(times) < self._limit:
            return 0
        return max(1, math.ceil(times[0] + self._window - now))

    def record(self, user_id: str) -> None:
        if self._limit > 0:
            self._times.setdefault(user_id, deque()).append(self._clock())


class SessionRegistry:
    def __init__(self, spawner: Spawner, config: Config, metrics: Metrics) -> None:
        self.spawner = spawner  # read by /health; handlers go through the methods below
        self._config = config
        self._metrics = metrics
        # One lock for every create: the checks (existing session, limits) and the create must
        # not interleave, or a double click would start two sessions.
        self._create_lock = asyncio.Lock()
        self._rate = CreateRateLimit(config.create_limit, config.create_window)

    async def create(self, user: User, application: str, resources: dict[str, str],
                     timeout: int | None) -> tuple[Session, bool]:
        """(session, created): the user's existing session for the application, or a new one."""
        async with self._create_lock:
            mine = self.spawner.list(user.id)
            for session in mine:
                if session.application == application and session.active:
                    return session, False
            # A failed session of the same application has said what it had to say.
            for session in mine:
                if session.application == application and session.phase is Phase.FAILED:
                    await self.spawner.delete(session.id)
            if sum(s.active for s in mine) >= self._config.max_sessions_per_user:
                raise LimitError(409, f"you already have {self._config.max_sessions_per_user} "
                                      "sessions: end one to start another")
            if sum(s.active for s in self.spawner.list()) >= self._config.max_sessions_total:
                raise LimitError(429, "the server is at its limit of "
                                      f"{self._config.max_sessions_total} sessions: try again later")
            # Only real creations count: asking again for a running session is free.
            wait = self._rate.retry_after(user.id)
            if wait:
                raise LimitError(429, "too many sessions started: try again in "
                                      f"{wait} s", retry_after=wait)
            try:
                session = await self.spawner.create(SessionRequest(
                    user=user.id, application=application, resources=resources,
                    timeout=timeout or self._config.default_timeout, tier=user.tier))
            except SessionExists as exc:  # another replica made it first: it is the answer
                return exc.session, False
            except SpawnerRefused as exc:  # a limit across replicas (it cost a create)
                self._rate.record(user.id)
                raise LimitError(409, str(exc), exc.retry_after) from exc
            self._rate.record(user.id)
        self._metrics.sessions_total.labels(user.tier, self._config.region).inc()
        return session, True

    def get(self, user: User, session_id: str) -> Session | None:
        """The session if it exists and is the user's: others' sessions do not exist for them."""
        session = self.spawner.get(session_id)
        return session if session is not None and session.user == user.id else None

    def list(self, user: User) -> list[Session]:
        return self.spawner.list(user.id)

    async def delete(self, session: Session) -> None:
        await self.spawner.delete(session.id)

    def route(self, session: Session) -> Route | None:
        return self.spawner.route(session.id)

    def subscribe(self, session_id: str | None = None
                  ) -> AbstractAsyncContextManager[AsyncIterator[SessionEvent]]:
        return self.spawner.subscribe(session_id)

    def current(self, session: Session) -> Session | None:
        """The latest snapshot of a session already known to be the caller's."""
        return self.spawner.get(session.id)

    async def follow(self) -> None:
        """Log and measure every phase change, until cancelled."""
        phases: dict[str, Phase] = {}
        async with self.spawner.subscribe() as events:
            async for event in events:
                self._on_event(event, phases.get(event.session.id))
                if event.type == "deleted":
                    phases.pop(event.session.id, None)
                else:
                    phases[event.session.id] = event.session.phase

    def _on_event(self, event: SessionEvent, before: Phase | None) -> None:
        s = event.session
        fields: dict[str, Any] = {
            "session_id": s.id, "user_id": s.user, "application": s.application,
            "region": self._config.region, self.spawner.worker_field: s.worker,
        }
        if event.type == "added":
            log_event(log, "session_created", resource_allocation=s.resources or None,
                      timeout_s=s.timeout, user_tier=s.tier, **fields)
        elif event.type == "deleted":
            lifetime = utcnow() - s.created_at
            if s.started_at is not None:
                self._metrics.session_duration.labels(s.tier).observe(
                    (utcnow() - s.started_at).total_seconds())
            log_event(log, "session_deleted", duration_ms=int(lifetime.total_seconds() * 1000), **fields)
        elif s.phase is not before:
            since_create = int((utcnow() - s.created_at).total_seconds() * 1000)
            if s.phase is Phase.RUNNING:
                self._metrics.session_start.labels("running").observe(since_create / 1000)
                log_event(log, "session_running", duration_ms=since_create, **fields)
            elif s.phase is Phase.FAILED:
                if before is Phase.PENDING:
                    self._metrics.session_start.labels("failed").observe(since_create / 1000)
                log_event(log, "session_failed", level=logging.WARNING, duration_ms=since_create,
                          message=s.message, **fields)
            elif s.phase is Phase.TERMINATING:
                log_event(log, "session_terminating", message=s.message, **fields)
