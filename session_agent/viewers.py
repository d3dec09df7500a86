"""Who is watching: every connected viewer, whatever its transport, with its role and its end.

Each transport registers its viewers here when they connect (WHEP in whep.py; the WebSocket
path does the same) and removes them when they go. A viewer that came in with a share link
carries its share id and the share's expiry; `disconnect_share` closes every viewer of a
revoked share, and a timer closes each one when its share expires, so the agent enforces both
by itself, on every gateway replica's behalf.

Who a viewer is comes from headers the gateway sets (`X-Viewer-*`), believed only because the
request carries the agent token: only the gateway has it, and whoever else has it is the owner.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

log = logging.getLogger(__name__)

Role = Literal["owner", "view", "control"]
Transport = Literal["webrtc", "ws"]
ROLES: tuple[Role, ...] = ("owner", "view", "control")
MAX_LABEL = 64


@dataclass
class Viewer:
    peer: str
    role: Role
    transport: Transport
    since: float  # epoch seconds
    share: str | None
    label: str
    expires_at: float | None  # epoch seconds; None: until it leaves
    close: Callable[[], Awaitable[None]] = field(repr=False)

    def public(self) -> dict[str, object]:
        body: dict[str, object] = {"peer": self.peer, "role": self.role, "transport": self.transport,
                                   "since": round(self.since, 3), "label": self.label}
        if self.share is not None:
            body["share"] = self.share
        if self.expires_at is not None:
            body["expires_at"] = int(self.expires_at)
        return body


class HeaderError(ValueError):
    """X-Viewer-* headers that do not describe a viewer (the request is refused with 400)."""


@dataclass(frozen=True)
class Identity:
    role: Role = "owner"
    share: str | None = None
    label: str = "owner"
    expires_at: float | None = None


def identity_from_headers(headers: Mapping[str, str], now: float | None = None) -> Identity:
    """The viewer a (token-authenticated) request describes; no headers: the owner, as before
    there were shares. Pure."""
    role = headers.get("X-Viewer-Role", "owner")
    if role not in ROLES:
        raise HeaderError(f"X-Viewer-Role must be one of: {', '.join(ROLES)}")
    share = headers.get("X-Viewer-Share") or None
    if share is not None and not (share.isascii() and share.isalnum() and len(share) <= 64):
        raise HeaderError("X-Viewer-Share must be a share id")
    if role != "owner" and share is None:
        raise HeaderError("a guest viewer needs X-Viewer-Share")
    label = unquote(headers.get("X-Viewer-Label", role))[:MAX_LABEL]
    label = "".join(c for c in label if c.isprintable()) or role
    expires_at: float | None = None
    raw = headers.get("X-Viewer-Expires")
    if raw is not None:
        try:
            expires_at = float(int(raw))
        except ValueError:
            raise HeaderError("X-Viewer-Expires must be Unix seconds") from None
        if expires_at <= (time.time() if now is None else now):
            raise HeaderError("the viewer's link has expired")
    return Identity(role, share, label, expires_at)


class ViewerRegistry:
    """The connected viewers, with change callbacks and one timer for the next expiry."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._viewers: dict[str, Viewer] = {}
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: list[Callable[[], None]] = []
        self._enders: list[Callable[[Viewer, str], None]] = []
        self._ending: set[str] = set()  # peers being closed: not scheduled again
        self._closing: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        """Stop the expiry timer (the agent is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_change(self, listener: Callable[[], None]) -> None:
        """`listener()` after every join and leave (the owner's live list)."""
        self._listeners.append(listener)

    def on_ending(self, listener: Callable[[Viewer, str], None]) -> None:
        """`listener(viewer, reason)` just before the registry closes a viewer ("revoked",
        "expired"), so that its page can say why instead of reconnecting."""
        self._enders.append(listener)

    def add(self, viewer: Viewer) -> None:
        self._viewers[viewer.peer] = viewer
        self._schedule()
        self._changed()

    def remove(self, peer: str) -> Viewer | None:
        viewer = self._viewers.pop(peer, None)
        if viewer is not None:
            self._schedule()
            self._changed()
        return viewer

    def get(self, peer: str) -> Viewer | None:
        return self._viewers.get(peer)

    def list(self) -> list[Viewer]:
        return sorted(self._viewers.values(), key=lambda v: v.since)

    def __len__(self) -> int:
        return len(self._viewers)

    async def disconnect_share(self, share_id: str) -> int:
        """Close every viewer that came in with this share; how many there were."""
        doomed = [v for v in self._viewers.values() if v.share == share_id and v.peer not in self._ending]
        await asyncio.gather(*(self._close(v, "revoked") for v in doomed))
        return len(doomed)

    async def _close(self, viewer: Viewer, reason: str) -> None:
        self._ending.add(viewer.peer)
        for listener in self._enders:
            try:
                listener(viewer, reason)
            except Exception:
                log.exception("viewer ending listener failed")
        log.info("viewer disconnected", extra={"action": "viewer_disconnected", "peer": viewer.peer,
                                               "share": viewer.share, "reason": reason})
        try:
            await viewer.close()
        except Exception:  # one viewer's broken transport must not keep the others connected
            log.exception("closing a viewer failed")
        self._ending.discard(viewer.peer)
        self.remove(viewer.peer)

    def _schedule(self) -> None:
        """One timer, at the earliest expiry: nothing runs per frame or per second."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ends = [v.expires_at for v in self._viewers.values()
                if v.expires_at is not None and v.peer not in self._ending]
        if not ends:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, min(ends) - self._clock())
        self._timer = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._clock()
        for viewer in [v for v in self._viewers.values() if v.expires_at is not None
                       and v.expires_at <= now and v.peer not in self._ending]:
            task = asyncio.ensure_future(self._close(viewer, "expired"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            self._ending.add(viewer.peer)
        self._schedule()  # the next one (a viewer being closed is skipped once removed)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("viewer listener failed")
