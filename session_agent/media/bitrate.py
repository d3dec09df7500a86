"""The shared encoder's bitrate cap from receivers' REMB estimates (pure logic).

One encode serves every peer, so the cap follows the slowest receiver, within configured
bounds. A change-driven stream is often far below any cap, and delay-based estimators then
report a low figure that only means "not probed yet": an estimate lowers the cap only while
we actually send close to it. Reopening an encoder costs a keyframe, so small or frequent
changes are ignored.
"""
from __future__ import annotations

from collections import deque

# A new cap is applied only when it differs this much from the current one...
HYSTERESIS = 0.25
# ...and not more often than this (seconds); a sharp drop may come sooner.
MIN_INTERVAL_S = 4.0
DROP_INTERVAL_S = 1.0
# An estimate is a congestion signal when we send at least this share of it.
CONGESTED_SHARE = 0.8
RATE_WINDOW_S = 2.0


class BitrateController:
    def __init__(self, start_kbps: int, min_kbps: int, max_kbps: int) -> None:
        self.min_kbps = min_kbps
        self.max_kbps = max_kbps
        self.current_kbps = start_kbps
        self._estimates: dict[str, int] = {}
        self._changed_at = float("-inf")
        self._sent: deque[tuple[float, int]] = deque()
        self._sent_bytes = 0

    def report(self, peer: str, bps: int) -> None:
        self._estimates[peer] = max(bps // 1000, 1)

    def forget(self, peer: str) -> None:
        self._estimates.pop(peer, None)

    def sent(self, now: float, nbytes: int) -> None:
        self._sent.append((now, nbytes))
        self._sent_bytes += nbytes

    def send_rate_kbps(self, now: float) -> float:
        while self._sent and self._sent[0][0] < now - RATE_WINDOW_S:
            self._sent_bytes -= self._sent.popleft()[1]
        return self._sent_bytes * 8 / 1000 / RATE_WINDOW_S

    def update(self, now: float) -> int | None:
        """The new cap in kbit/s when it should change now, else None."""
        if not self._estimates:
            return None
        estimate = min(list(self._estimates.values()))  # written by the loop thread
        target = max(self.min_kbps, min(self.max_kbps, estimate))
        if target < self.current_kbps and self.send_rate_kbps(now) < CONGESTED_SHARE * estimate:
            return None  # a low estimate of a mostly idle link is no reason to blur the picture
        if abs(target - self.current_kbps) / self.current_kbps < HYSTERESIS:
            return None
        interval = DROP_INTERVAL_S if target < self.current_kbps * 0.5 else MIN_INTERVAL_S
        if now - self._changed_at < interval:
            return None
        self.current_kbps = target
        self._changed_at = now
        return target
