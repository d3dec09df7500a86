"""The spawner interface and the session model shared by every spawner.

A spawner is the source of truth for sessions: the gateway keeps no session state of its
own. It asks the spawner to create and delete sessions, reads them back through `get` /
`list` (served from the spawner's in-memory view: a dict for the local spawner, the list+watch
cache for the kubernetes one), follows changes through `subscribe` (SSE progress, metrics,
logs), and resolves `/streaming/{id}/...` through `route`.

Every `Session` is an immutable snapshot; a change is a new snapshot published to
subscribers. `SessionTable` is the index + change feed both spawners can keep their view in.
"""
from __future__ import annotations

import asyncio
import enum
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

from gateway.shares import Share

APPLICATIONS = ("gimp", "inkscape", "blender")


class Phase(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    TERMINATING = "terminating"
    FAILED = "failed"


class SpawnerError(Exception):
    """The spawner cannot serve the request right now (the API answers 503 with the message)."""


class SpawnerRefused(Exception):
    """The spawner will not create this session now, for a reason the user can act on: a limit
    that holds across gateway replicas, or the user's previous session of that application
    still ending. The API answers 409 with the message (and Retry-After when given)."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionExists(Exception):
    """`create()` found the user's active session for that application (made by another
    replica, or by a request that raced this one): not an error, the API answers 200 with it."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.id)
        self.session = session


@dataclass(frozen=True)
class SessionRequest:
    """What the gateway asks for; limits and "one session per user and application" are
    already checked by the gateway when a spawner sees it."""

    user: str
    application: str
    resources: dict[str, str] = field(default_factory=dict)  # e.g. {"cpu": "1", "memory": "2Gi"}
    timeout: int = 3600  # seconds without any viewer before the session is terminated
    tier: str = "standard"  # the user's tier: the user_tier label of metrics


@dataclass(frozen=True)
class Session:
    # Fields of the SPEC session object.
    id: str  # a DNS-1123 label (it names the Session resource in kubernetes mode)
    user: str
    application: str
    phase: Phase
    created_at: datetime
    started_at: datetime | None = None
    message: str | None = None  # why it failed, or what it is doing while pending
    # Internal: never shown to browsers.
    endpoint: str | None = None  # the agent's base URL, e.g. "http://127.0.0.1:6901"; set when known
    agent_token: str = ""  # bearer token the gateway presents to the agent
    resources: dict[str, str] = field(default_factory=dict)
    timeout: int = 3600
    tier: str = "standard"
    progress: float = 0.0  # 0..1 while pending, for the launcher's progress bar
    worker: str | None = None  # what runs it, for logs: the pod name, or the process id locally
    node_type: str = "local"  # the gimp_active_sessions node_type label (cpu, gpu, local)
    shares: tuple[Share, ...] = ()  # its share links (gateway/shares.py), stored with it

    def public(self) -> dict[str, Any]:
        """The session object of the SPEC, as the API returns it."""
        body: dict[str, Any] = {
            "id": self.id,
            "user": self.user,
            "application": self.application,
            "phase": self.phase.value,
            "streaming_url": f"/streaming/{self.id}/",
            "created_at": _iso(self.created_at),
        }
        if self.started_at is not None:
            body["started_at"] = _iso(self.started_at)
        if self.message:
            body["message"] = self.message
        return body

    @property
    def active(self) -> bool:
        """Counts against limits and is returned again to a second create (not failed, not going)."""
        return self.phase in (Phase.PENDING, Phase.RUNNING)


class Route(NamedTuple):
    url: str  # agent base URL
    token: str  # per-session agent token


@dataclass(frozen=True)
class SessionEvent:
    """A change: `session` is the new snapshot ("deleted": the last one before it went)."""

    type: Literal["added", "modified", "deleted"]
    session: Session


def new_session_id() -> str:
    """A fresh id: a DNS-1123 label that starts with a letter, 16 random hex digits."""
    return "s" + secrets.token_hex(8)


def new_agent_token() -> str:
    return secrets.token_urlsafe(32)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class Spawner(ABC):
    """Starts and stops sessions, and is the one place that knows them.

    Lifecycle: `await start()` before the gateway serves (after it, `get`/`list` reflect every
    session that already exists: re-adopted, or cleaned up, as the spawner documents), and
    `await close()` at shutdown. Reads (`get`, `list`, `route`) are synchronous and served from
    memory, so the proxy can call them per request. A session's phases:
    pending -> running | failed; running|pending -> terminating -> (deleted event, gone).
    The spawner also honours `timeout` (no viewer that long: terminate) and its start timeout
    (pending too long: failed, with a message).
    """

    #: the name of this spawner, for logs and /health ("local", "kubernetes", ...)
    name: str = "spawner"
    #: the log field that carries Session.worker ("process" locally, "pod_name" in kubernetes)
    worker_field: str = "process"

    @abstractmethod
    async def start(self) -> None:
        """Open resources and load the sessions that already exist."""

    @abstractmethod
    async def close(self) -> None:
        """Release resources. Whether running sessions outlive the gateway is the spawner's
        documented choice."""

    @abstractmethod
    async def create(self, request: SessionRequest) -> Session:
        """Record a new session in phase pending and begin starting it; return without waiting
        for it to run. Raise SpawnerError when it cannot even be recorded. A spawner shared by
        several gateways (kubernetes) also enforces the gateway's rules where it alone can see
        every replica: SessionExists (the user's session for that application exists already),
        SpawnerRefused (a limit)."""

    @abstractmethod
    async def delete(self, session_id: str) -> None:
        """Begin terminating (phase terminating, user data synced, then a deleted event).
        Idempotent; unknown ids are ignored."""

    @abstractmethod
    def get(self, session_id: str) -> Session | None:
        """The current snapshot, or None."""

    @abstractmethod
    def list(self, user: str | None = None) -> list[Session]:
        """Every session of `user` (every session when None), oldest first."""

    @abstractmethod
    def subscribe(self, session_id: str | None = None
                  ) -> AbstractAsyncContextManager[AsyncIterator[SessionEvent]]:
        """An async context manager whose value is an async iterator of every change from now
        on (of one session when `session_id` is given): `async with spawner.subscribe() as
        events: async for event in events: ...`. Cancelling a pending `__anext__`
        (asyncio.wait_for) must leave the iterator usable; a subscriber that falls too far
        behind is dropped (its iterator ends). SessionTable.subscribe does all of this."""

    @abstractmethod
    async def update_shares(self, session_id: str,
                            change: Callable[[tuple[Share, ...]], tuple[Share, ...]]) -> Session:
        """Store `change(current shares)` as the session's shares, atomically with respect to
        every other writer (other requests, other replicas), and return the new snapshot.
        Raise KeyError for an unknown session, SpawnerError when it cannot be stored now."""

    def route(self, session_id: str) -> Route | None:
        """Where `/streaming/{id}/...` goes: the agent URL and token of a running session."""
        session = self.get(session_id)
        if session is None or session.phase is not Phase.RUNNING or not session.endpoint:
            return None
        return Route(session.endpoint, session.agent_token)


class SessionTable:
    """Sessions by id and by user, with a change feed: the in-memory view a spawner serves
    reads from. All methods run on the event loop; none blocks."""

    #: events a subscriber of one session may have unread before it is dropped (a session has
    #: a handful of changes in its whole life: only a reader that stopped reading gets here)
    SESSION_BACKLOG = 64

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._by_user: dict[str, dict[str, None]] = {}  # insertion-ordered sets of ids
        self._all: set[_Subscriber] = set()  # every change: the gateway's own followers
        self._by_session: dict[str, set[_Subscriber]] = {}  # one session's: SSE streams

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def list(self, user: str | None = None) -> list[Session]:
        if user is None:
            return list(self._by_id.values())
        return [self._by_id[i] for i in self._by_user.get(user, ())]

    def put(self, session: Session) -> None:
        """Add or replace a snapshot and tell subscribers."""
        old = self._by_id.get(session.id)
        self._by_id[session.id] = session
        self._by_user.setdefault(session.user, {})[session.id] = None
        self._publish(SessionEvent("modified" if old else "added", session))

    def remove(self, session_id: str) -> Session | None:
        session = self._by_id.pop(session_id, None)
        if session is None:
            return None
        ids = self._by_user.get(session.user, {})
        ids.pop(session_id, None)
        if not ids:
            self._by_user.pop(session.user, None)
        self._publish(SessionEvent("deleted", session))
        return session

    @asynccontextmanager
    async def subscribe(self, session_id: str | None = None) -> AsyncIterator[AsyncIterator[SessionEvent]]:
        """Every change, or (`session_id`) that session's changes only, with a bounded backlog:
        a stream no browser reads must cost neither memory nor other users' events."""
        subscriber = _Subscriber(self.SESSION_BACKLOG if session_id is not None else 0)
        group = self._all if session_id is None else self._by_session.setdefault(session_id, set())
        group.add(subscriber)
        try:
            yield subscriber
        finally:
            group.discard(subscriber)
            if session_id is not None and not group:
                self._by_session.pop(session_id, None)

    def subscribers(self) -> int:
        """How many subscriptions are open (for tests and metrics)."""
        return len(self._all) + sum(map(len, self._by_session.values()))

    def _publish(self, event: SessionEvent) -> None:
        for subscriber in (*self._all, *self._by_session.get(event.session.id, ())):
            subscriber.put(event)


class SubscriberDropped(Exception):
    """A subscriber fell more than its backlog behind; its iterator ends with this."""


class _Subscriber:
    """An iterator over a subscriber's queue. Not an async generator: cancelling a pending
    `__anext__` (asyncio.wait_for, for SSE keep-alives) must leave it usable."""

    def __init__(self, backlog: int) -> None:
        self._queue: asyncio.Queue[SessionEvent] = asyncio.Queue(backlog)
        self.dropped = False

    def put(self, event: SessionEvent) -> None:
        if self.dropped:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True  # it stopped reading: free what it holds and end it
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(SessionEvent("deleted", event.session))  # wakes a waiter

    def __aiter__(self) -> _Subscriber:
        return self

    async def __anext__(self) -> SessionEvent:
        event = await self._queue.get()
        if self.dropped:
            raise SubscriberDropped("the subscriber fell too far behind")
        return event
