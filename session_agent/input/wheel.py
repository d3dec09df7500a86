"""Browser wheel deltas (pixels) to X wheel notches (buttons 4-7), pure.

Trackpads send many small deltas and a mouse notch is ~100 px in browsers; sending one X notch
per event would make trackpads spin, so pixels are accumulated and every NOTCH_PX becomes one
click. A change of direction drops what was left over, so reversing responds at once.
"""
from __future__ import annotations

NOTCH_PX = 100.0
MAX_NOTCHES = 20  # per event and axis: bounds the X events one message can cause


class WheelAccumulator:
    def __init__(self) -> None:
        self._rest = [0.0, 0.0]

    def add(self, dx: float, dy: float) -> list[tuple[int, int]]:
        """Return (X button, clicks) for this event; DY > 0 scrolls down (5), DX > 0 right (7)."""
        out = []
        for axis, delta, (neg, pos) in ((1, dy, (4, 5)), (0, dx, (6, 7))):
            if delta == 0:
                continue
            rest = self._rest[axis]
            if rest * delta < 0:
                rest = 0.0
            rest += delta
            clicks = int(rest / NOTCH_PX)  # toward zero: the remainder keeps its sign
            rest -= clicks * NOTCH_PX
            self._rest[axis] = rest
            if clicks:
                out.append((pos if clicks > 0 else neg, min(abs(clicks), MAX_NOTCHES)))
        return out
