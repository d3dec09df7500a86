"""`spec.timeout`: a running session with no viewer for that many seconds is deleted.

The agent's `/health` reports its viewer count (`peers`); a session with viewers has
`status.lastActivity` refreshed, so the idle clock survives controller restarts and
leader changes. An agent that does not answer is not counted as a viewer.

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
from gateway.kube import fields
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
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return 0
    peers = data.get("peers") if isinstance(data, dict) else None
    if isinstance(peers, bool) or not isinstance(peers, int) or peers < 0:
        return 0
    return peers


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
                 timeout: float = 5.0, concurrency: int = 32) -> None:
        self.kube, self.sessions, self.recorder, self.interval = kube, sessions, recorder, interval
        self.timeout = min(timeout, interval)  # per pod, connection to last byte
        self.concurrency = concurrency

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
        if await self._viewers(http, endpoint) > 0:
            # Refresh often enough for the timeout, not on every look (API writes).
            last = fields.parse_time(fields.status(session).get("lastActivity"))
            every = timedelta(seconds=max(self.interval, timeout / 4))
            if last is None or now - last >= every:
                stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
                await self.kube.patch(SESSIONS, name, {"status": {"lastActivity": stamp}},
                                      status=True)
            return
        deadline = idle_deadline(session)
        if deadline is not None and now >= deadline:
            log_event(logger, "session_idle_timeout", session_id=name,
                      user_id=fields.text(spec.get("userId")), timeout=timeout)
            self.recorder.record(session, "IdleTimeout", f"no viewer for {timeout}s")
            await self.kube.delete(SESSIONS, name, uid=fields.text(meta.get("uid")))

    @staticmethod
    async def _viewers(http: aiohttp.ClientSession, endpoint: str) -> int:
        try:
            async with http.get(f"{endpoint}/health", allow_redirects=False) as response:
                if response.status != 200 or (response.content_length or 0) > HEALTH_LIMIT:
                    return 0
                body = await read_at_most(response.content, HEALTH_LIMIT)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return 0
        return peers_of(body)
