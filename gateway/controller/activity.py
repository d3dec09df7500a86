"""`spec.timeout`: a running session with no viewer for that many seconds is deleted.

The agent's `/health` reports its viewer count (`peers`); a session with viewers has
`status.lastActivity` refreshed, so the idle clock survives controller restarts and
leader changes. An agent that does not answer is not counted as a viewer."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from gateway.controller.events import Recorder
from gateway.controller.leader import parse_time
from gateway.kube.cache import Informer
from gateway.kube.client import SESSIONS, Kube, KubeError
from gateway.logs import log_event

logger = logging.getLogger("gateway.session-controller")


def idle_deadline(session: dict[str, Any]) -> datetime | None:
    """When the session times out if nobody watches it; None: it does not time out."""
    timeout = session["spec"].get("timeout")
    status = session.get("status") or {}
    if not timeout or status.get("phase") != "running":
        return None
    marks = [parse_time(status.get(k)) for k in ("lastActivity", "startTime")]
    since = max((m for m in marks if m is not None), default=None)
    return None if since is None else since + timedelta(seconds=timeout)


class ActivityMonitor:
    def __init__(self, kube: Kube, sessions: Informer, recorder: Recorder,
                 interval: float) -> None:
        self.kube, self.sessions, self.recorder, self.interval = kube, sessions, recorder, interval

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=min(5.0, self.interval))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                await asyncio.sleep(self.interval)
                sessions = [s for s in list(self.sessions.store.values())
                            if idle_deadline(s) is not None
                            and not s["metadata"].get("deletionTimestamp")]
                await asyncio.gather(*(self.check(http, s) for s in sessions))

    async def check(self, http: aiohttp.ClientSession, session: dict[str, Any]) -> None:
        name = session["metadata"]["name"]
        now = datetime.now(timezone.utc)
        try:
            if await self._viewers(http, session["status"]["endpoint"]) > 0:
                # Refresh often enough for the timeout, not on every look (API writes).
                last = parse_time(session["status"].get("lastActivity"))
                every = timedelta(seconds=max(self.interval, session["spec"]["timeout"] / 4))
                if last is None or now - last >= every:
                    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
                    await self.kube.patch(SESSIONS, name, {"status": {"lastActivity": stamp}},
                                          status=True)
                return
            deadline = idle_deadline(session)
            if deadline is not None and now >= deadline:
                log_event(logger, "session_idle_timeout", session_id=name,
                          user_id=session["spec"]["userId"], timeout=session["spec"]["timeout"])
                self.recorder.record(session, "IdleTimeout",
                                     f"no viewer for {session['spec']['timeout']}s")
                await self.kube.delete(SESSIONS, name, uid=session["metadata"]["uid"])
        except KubeError as exc:
            if exc.status not in (404, 409):
                log_event(logger, "idle_check_failed", level=logging.WARNING, session_id=name,
                          error=str(exc))

    @staticmethod
    async def _viewers(http: aiohttp.ClientSession, endpoint: str) -> int:
        try:
            async with http.get(f"{endpoint}/health") as response:
                if response.status != 200:
                    return 0
                return int((await response.json()).get("peers", 0))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return 0
