"""`spec.timeout`: a running session nobody has used for that many seconds is deleted, after
its viewers were warned (gateway/idle.py, the rule the local spawner follows too).

The agent's `/health` reports its viewer count (`peers`) and `idle_s`, the seconds since
anybody used it (input from any viewer, a viewer coming or going, a key or button held). The
moment it names is kept in `status.lastActivity`, so the idle clock survives controller
restarts and leader changes. Viewers still connected get a notice (`POST /notice`, with the
session's derived agent token) `warning` seconds before the end, and another when somebody
used it again. An agent that does not answer is not counted as a viewer.

A session pod runs the user's code, so whatever its `/health` says is untrusted input: at
most HEALTH_LIMIT bytes are read, no redirect is followed, a bounded timeout ends a pod that
never answers, checks run concurrently (a hanging pod holds one of `concurrency` slots, not
the round), and an answer that is not a JSON object with a whole `peers` counts as no viewer.
One odd Session or pod is logged and skipped; it never stops the monitor."""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from gateway.controller.events import Recorder
from gateway.idle import idle_policy
from gateway.kube import fields
from gateway.kube.tokens import agent_token, token_uid
from gateway.kube.cache import Informer
from gateway.kube.client import SESSIONS, Kube, KubeError
from gateway.logs import log_event

logger = logging.getLogger("gateway.session-controller")
HEALTH_LIMIT = 4096  # bytes: a real answer is about 150


def idle_deadline(session: dict[str, Any]) -> datetime | None:
    """When the session times out if nobody watches it; None: it does not time out."""
    timeout = fields.timeout(session)
    status = fields.status(session)
    if timeout is None or status.get("phase") != "running":
        return None
    marks = [fields.parse_time(status.get(k)) for k in ("lastActivity", "startTime")]
    since = max((m for m in marks if m is not None), default=None)
    return None if since is None else since + timedelta(seconds=timeout)


def peers_of(body: bytes) -> int:
    """The viewer count in a /health body; 0 for anything but {"peers": <whole number>}."""
    return activity_of(body)[0]


def activity_of(body: bytes) -> tuple[int, float | None]:
    """(viewers, seconds nobody has used the session) from a /health body: 0 viewers for
    anything but {"peers": <whole number>}, None seconds where `idle_s` is not a number >= 0."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return 0, None
    if not isinstance(data, dict):
        return 0, None
    peers, idle = data.get("peers"), data.get("idle_s")
    if isinstance(peers, bool) or not isinstance(peers, int) or peers < 0:
        peers = 0
    if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not 0 <= idle < 10**9:
        idle = None
    return peers, None if idle is None else float(idle)


async def read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body if it is at most `limit` bytes, else ValueError (nothing more is read)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    raise ValueError(f"/health answer over {limit} bytes")


class ActivityMonitor:
    def __init__(self, kube: Kube, sessions: Informer, recorder: Recorder, interval: float,
                 timeout: float = 5.0, concurrency: int = 32, warning: float = 60.0,
                 token_key: bytes = b"") -> None:
        self.kube, self.sessions, self.recorder, self.interval = kube, sessions, recorder, interval
        self.timeout = min(timeout, interval)  # per pod, connection to last byte
        self.concurrency = concurrency
        self.warning = warning
        self.token_key = token_key
        self._warned: set[str] = set()  # sessions whose viewers were told the end is near

    async def run(self) -> None:
        async with self.client() as http:
            while True:
                await asyncio.sleep(self.interval)
                await self.check_all(http)

    def client(self) -> aiohttp.ClientSession:
        # No decompression: a small gzip body must not become a large one.
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                     auto_decompress=False)

    async def check_all(self, http: aiohttp.ClientSession) -> None:
        """One round: every running Session with an idle timeout, `concurrency` at a time."""
        sessions = [s for s in list(self.sessions.store.values())
                    if idle_deadline(s) is not None and not fields.deleting(s)]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(session: dict[str, Any]) -> None:
            async with gate:
                await self.check(http, session)

        await asyncio.gather(*(one(s) for s in sessions))

    async def check(self, http: aiohttp.ClientSession, session: dict[str, Any]) -> None:
        """Look at one session; never raises (but for cancellation)."""
        name = fields.meta(session).get("name")
        try:
            await self._check(http, session)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone or replaced meanwhile: nothing to do
                log_event(logger, "idle_check_failed", level=logging.WARNING, session_id=name,
                          error=str(exc))
        except Exception:  # a bug or an odd object: this session only, logged
            log_event(logger, "idle_check_failed", level=logging.WARNING, session_id=name,
                      exc_info=True)

    async def _check(self, http: aiohttp.ClientSession, session: dict[str, Any]) -> None:
        meta, spec = fields.meta(session), fields.spec(session)
        name, timeout = meta["name"], fields.timeout(session)
        endpoint = fields.endpoint(session)
        if timeout is None or endpoint is None:
            return  # nothing to ask: it is not (yet) reachable
        now = datetime.now(timezone.utc)
        peers, idle_s = await self._activity(http, endpoint)
        status = fields.status(session)
        last = fields.parse_time(status.get("lastActivity"))
        marks = [m for m in (last, fields.parse_time(status.get("startTime"))) if m is not None]
        seen = (now - timedelta(seconds=idle_s) if idle_s is not None
                else now if peers > 0 else None)  # an agent without idle_s: watched is used
        since = max([*marks, *([seen] if seen is not None else [])], default=now)
        # Keep the moment in the Session, often enough for the timeout, not on every look.
        every = timedelta(seconds=max(self.interval, timeout / 4))
        if seen is not None and (last is None or seen - last >= every):
            await self.kube.patch(SESSIONS, name, {"status": {
                "lastActivity": seen.strftime("%Y-%m-%dT%H:%M:%SZ")}}, status=True)
        idle = (now - since).total_seconds()
        step = idle_policy(idle, peers, timeout, self.warning, name in self._warned)
        if step.notice is not None:
            await self._notify(http, endpoint, session, step.notice)
            (self._warned.discard if step.notice.get("cancel") else self._warned.add)(name)
        if step.end:
            self._warned.discard(name)
            log_event(logger, "session_idle_timeout", session_id=name,
                      user_id=fields.text(spec.get("userId")), timeout=timeout)
            self.recorder.record(session, "IdleTimeout", f"nobody used it for {timeout}s")
            await self.kube.delete(SESSIONS, name, uid=fields.text(meta.get("uid")))

    async def _notify(self, http: aiohttp.ClientSession, endpoint: str, session: dict[str, Any],
                      notice: dict[str, Any]) -> None:
        """A courtesy to the viewers: the end does not wait for it, a failure is only logged."""
        uid = token_uid(session)
        if not self.token_key or not uid:
            return
        headers = {"Authorization": f"Bearer {agent_token(self.token_key, uid)}"}
        try:
            async with http.post(f"{endpoint}/notice", json=notice, headers=headers,
                                 allow_redirects=False) as response:
                await read_at_most(response.content, HEALTH_LIMIT)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log_event(logger, "idle_notice_failed", level=logging.WARNING,
                      session_id=fields.meta(session).get("name"), error=repr(exc))

    async def _activity(self, http: aiohttp.ClientSession, endpoint: str) -> tuple[int, float | None]:
        try:
            async with http.get(f"{endpoint}/health", allow_redirects=False) as response:
                if response.status != 200 or (response.content_length or 0) > HEALTH_LIMIT:
                    return 0, None
                body = await read_at_most(response.content, HEALTH_LIMIT)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return 0, None
        return activity_of(body)
