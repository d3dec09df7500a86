"""The shared encoder's bitrate cap from receivers' REMB estimates (pure logic).

One encode serves every peer, so the cap follows the slowest receiver, within configured
bounds. A change-driven stream is bursty and mostly idle, and a delay-based estimator never
ramps up on such traffic: a steady low REMB means "not probed", not "congested". What does
mean congestion is an estimate that falls (the receiver saw queuing delay grow), so a falling
estimate lowers the cap to it, and a rising one lets the cap climb back. Reopening an encoder
costs a keyframe, so small or frequent changes are ignored.
"""
from __future__ import annotations

# A new cap is applied only when it differs this much from the current one...
HYSTERESIS = 0.25
# ...and not more often than this (seconds); a drop may come sooner than a rise.
RAISE_INTERVAL_S = 4.0
DROP_INTERVAL_S = 1.0
# An estimate this much below the same receiver's previous one signals over-use.
FALL = 0.85


class BitrateController:
    """Fed from the asyncio loop (report/forget), read by the encode thread (update)."""

    def __init__(self, start_kbps: int, min_kbps: int, max_kbps: int) -> None:
        self.min_kbps = min_kbps
        self.max_kbps = max_kbps
        self.current_kbps = start_kbps
        self._estimates: dict[str, int] = {}
        self._drop_to: int | None = None
        self._changed_at = float("-inf")

    def report(self, peer: str, bps: int) -> None:
        kbps = max(bps // 1000, 1)
        previous = self._estimates.get(peer)
        self._estimates[peer] = kbps
        if previous is not None and kbps < previous * FALL:
            self._drop_to = kbps if self._drop_to is None else min(self._drop_to, kbps)

    def forget(self, peer: str) -> None:
        self._estimates.pop(peer, None)

    def _clamp(self, kbps: int) -> int:
        return max(self.min_kbps, min(self.max_kbps, kbps))

    def update(self, now: float) -> int | None:
        """The new cap in kbit/s when it should change now, else None."""
        drop, self._drop_to = self._drop_to, None
        if drop is not None:
            target = self._clamp(drop)
            if target < self.current_kbps * (1 - HYSTERESIS) and now - self._changed_at >= DROP_INTERVAL_S:
                return self._apply(target, now)
            if target < self.current_kbps:
                self._drop_to = drop  # keep it for when the interval allows
            return None
        estimates = list(self._estimates.values())  # copy: the loop thread writes the dict
        if not estimates:
            return None
        target = self._clamp(min(estimates))
        if target > self.current_kbps * (1 + HYSTERESIS) and now - self._changed_at >= RAISE_INTERVAL_S:
            return self._apply(target, now)
        return None

    def _apply(self, kbps: int, now: float) -> int:
        self.current_kbps = kbps
        self._changed_at = now
        return kbps
