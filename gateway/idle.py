"""When an idle session ends, and what its viewers are told first (pure; the local spawner
and the session controller both follow it).

"Idle" is what the agent's /health says: `idle_s`, the seconds since anybody used the session
(input from any viewer, a viewer joining or leaving). A session idle for its `timeout` ends.
Viewers still connected are warned `warning` seconds before (at most half the timeout), with
the seconds left; any input resets `idle_s`, and a warned session that was used again is told
that it stays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IdleStep:
    end: bool = False
    notice: dict[str, Any] | None = None  # to POST to the agent's /notice


def idle_policy(idle_s: float, peers: int, timeout: float, warning: float, warned: bool) -> IdleStep:
    left = timeout - idle_s
    if left <= 0:
        return IdleStep(end=True)
    window = min(warning, timeout / 2)
    if peers > 0 and left <= window and not warned:
        seconds = max(1, int(left))
        return IdleStep(notice={
            "level": "warning", "reason": "idle", "seconds": seconds,
            "message": f"This session will end in {seconds} s because nobody has used it for a "
                       f"while, and anything not saved will be lost. Move the mouse or press a key "
                       f"to keep it."})
    if warned and left > window:
        return IdleStep(notice={"level": "info", "reason": "idle", "cancel": True,
                                "message": "The session stays open."})
    return IdleStep()
