"""The list+watch cache (informer): one shared, always-current view of a resource type.

It lists, then watches from the list's resourceVersion; a stream the server ends or drops is
resumed from the last version seen, a 410 Gone (or any other watch error) relists, and API
failures back off and retry. A watch that stays silent longer than `idle_timeout` (stalled:
not even a bookmark) is dropped and resumed, so a hung connection cannot freeze the view. Handlers see every change as (type, new, old), including the
differences a relist discovers, so nothing is missed across a gap."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.kube.client import Kube, KubeError, Resource
from gateway.logs import log_event as log

Handler = Callable[[str, dict[str, Any], dict[str, Any] | None], None]
logger = logging.getLogger("gateway.kube-cache")


class Informer:
    def __init__(self, kube: Kube, resource: Resource, label_selector: str = "", *,
                 watch_timeout: int = 300, idle_timeout: float = 60.0,
                 max_backoff: float = 5.0) -> None:
        self.kube = kube
        self.resource = resource
        self.label_selector = label_selector
        self.store: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._handlers: list[Handler] = []
        self._watch_timeout = watch_timeout
        self.idle_timeout = idle_timeout
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.store.get(name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.resource.plural}")

    async def wait_synced(self) -> None:
        await self.synced.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        version = ""
        failures = 0
        while True:
            try:
                if not version:
                    version = await self._relist()
                async for event in self.kube.watch(self.resource, version, self.label_selector,
                                                   self._watch_timeout, self.idle_timeout):
                    version = self._apply(event) or version
                    failures = 0
                # The server ended the stream (timeout, restart): resume where we were.
            except KubeError as exc:
                if exc.status == 410:
                    log(logger, "watch_expired", resource=self.resource.plural)
                    version = ""  # too old: relist
                    continue
                failures += 1
                log(logger, "watch_error", level=logging.WARNING, resource=self.resource.plural,
                    error=str(exc))
                if exc.status in (0, 401, 403, 404) or not version:
                    version = ""
                await asyncio.sleep(min(self._max_backoff, 0.05 * 2 ** failures))
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                failures += 1
                log(logger, "watch_dropped", level=logging.WARNING,
                    resource=self.resource.plural, error=repr(exc), failures=failures)
                if failures >= 2:
                    version = ""  # resuming does not work (a stalling server): relist
                await asyncio.sleep(min(self._max_backoff, 0.05 * 2 ** failures))
            except Exception:  # never die silently: the whole process depends on this view
                failures += 1
                version = ""
                logger.exception("informer %s failed; relisting", self.resource.plural)
                await asyncio.sleep(min(self._max_backoff, 0.05 * 2 ** failures))

    async def _relist(self) -> str:
        listing = await self.kube.list(self.resource, self.label_selector)
        fresh = {item["metadata"]["name"]: item for item in listing.get("items", [])}
        old = self.store
        self.store = fresh
        for name, obj in fresh.items():
            before = old.get(name)
            if before is None:
                self._emit("ADDED", obj, None)
            elif before["metadata"].get("resourceVersion") != obj["metadata"].get(
                    "resourceVersion"):
                self._emit("MODIFIED", obj, before)
        for name, obj in old.items():
            if name not in fresh:
                self._emit("DELETED", obj, obj)
        self.synced.set()
        return listing["metadata"]["resourceVersion"]

    def _apply(self, event: dict[str, Any]) -> str | None:
        kind, obj = event["type"], event["object"]
        version = obj.get("metadata", {}).get("resourceVersion")
        if kind == "BOOKMARK":
            return version
        name = obj["metadata"]["name"]
        old = self.store.get(name)
        if kind == "DELETED":
            self.store.pop(name, None)
        else:
            self.store[name] = obj
        self._emit(kind, obj, old)
        return version

    def _emit(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj, old)
            except Exception:  # a broken handler must not stop the cache for everyone else
                logger.exception("informer handler failed")
