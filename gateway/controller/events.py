"""Kubernetes Events about Sessions (what `kubectl describe session` shows). Recording is
best effort: a lost event must never fail or delay a reconcile."""
from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timezone
from typing import Any

from gateway.kube import objects
from gateway.kube.client import EVENTS, Kube, KubeError
from gateway.logs import log_event

logger = logging.getLogger("gateway.session-controller")


class Recorder:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, involved: dict[str, Any], reason: str, message: str,
               warning: bool = False) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            body = objects.event(involved, reason, message, warning=warning, timestamp=stamp,
                                 name=f"{involved['metadata']['name']}.{secrets.token_hex(8)}")
        except (KeyError, TypeError) as exc:  # an object without apiVersion/kind/name
            log_event(logger, "event_failed", level=logging.WARNING, reason=reason,
                      error=f"cannot describe the object: {exc!r}")
            return
        task = asyncio.create_task(self._send(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, body: dict[str, Any]) -> None:
        try:
            await self.kube.create(EVENTS, body)
        except KubeError as exc:
            if exc.status == 409:
                return  # a retried create whose first answer was lost: it is there
            log_event(logger, "event_failed", level=logging.WARNING, reason=body["reason"],
                      error=str(exc))

    async def flush(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
