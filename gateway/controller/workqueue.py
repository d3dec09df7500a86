"""A rate-limited work queue of object names, as client-go's: a name queued many times is
reconciled once, never by two workers at once, and re-run if it changed meanwhile."""
from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self, base_delay: float = 0.05, max_delay: float = 10.0) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._base, self._max = base_delay, max_delay

    def __len__(self) -> int:
        return len(self._dirty)

    def add(self, name: str) -> None:
        if name in self._dirty:
            return
        self._dirty.add(name)
        if name not in self._processing:
            self._queue.put_nowait(name)

    def add_after(self, name: str, delay: float) -> None:
        """Queue later (timeouts); an earlier pending timer for the name is kept."""
        timer = self._timers.get(name)
        loop = asyncio.get_running_loop()
        if timer is not None and timer.when() <= loop.time() + delay:
            return
        if timer is not None:
            timer.cancel()
        self._timers[name] = loop.call_later(delay, self._fire, name)

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self.add(name)

    def retry(self, name: str) -> None:
        """Queue again after an exponential backoff for this name."""
        failures = self._failures.get(name, 0) + 1
        self._failures[name] = failures
        self.add_after(name, min(self._max, self._base * 2 ** (failures - 1)))

    def forget(self, name: str) -> None:
        self._failures.pop(name, None)

    async def get(self) -> str:
        name = await self._queue.get()
        self._dirty.discard(name)
        self._processing.add(name)
        return name

    def done(self, name: str) -> None:
        self._processing.discard(name)
        if name in self._dirty:
            self._queue.put_nowait(name)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
