"""Per-socket admission of video frames on a stream transport (pure logic).

A TCP stream cannot skip a frame once it is written: on a link slower than the stream, every
byte written ahead of the network is latency. So a frame is written only while the socket's
backlog (bytes accepted but not yet sent) stays under about two frames' worth. Past that, the
socket drops frames (only this viewer's; the shared encode and the other viewers go on) until
the backlog has drained, then asks for a keyframe, because a decoder cannot resume from a
delta whose predecessor it never got.

A keyframe is large next to the deltas that follow it and takes a while to drain by itself on a
slow link; deltas written after it are judged by their own backlog, not the keyframe's, or
every keyframe would cost the deltas behind it and ask for the next keyframe: a stream of
nothing but keyframes.
"""
from __future__ import annotations

# Two frames' worth, from the frames this socket sees, never below this floor: a still screen's
# deltas are a few hundred bytes, and a backlog of a few kilobytes is no latency at all.
FLOOR_BYTES = 32 * 1024
FRAMES = 2.0
MEAN_WEIGHT = 0.1   # exponential moving mean of delta sizes
# A keyframe asked for and not received (dropped again, or the debounce swallowed it) is asked
# for again after this long.
KEYFRAME_RETRY_S = 0.5


class SendGate:
    def __init__(self, *, floor: int = FLOOR_BYTES, frames: float = FRAMES) -> None:
        self.floor = floor
        self.frames = frames
        self.mean = 0.0
        self.need_keyframe = True  # a decoder starts at a keyframe
        self.asked_at = float("-inf")
        self.dropped = 0
        self._since_key = 0  # bytes admitted after the last admitted keyframe

    @property
    def limit(self) -> int:
        return max(self.floor, int(self.frames * self.mean))

    def _delta_backlog(self, backlog: int) -> int:
        """The part of the backlog that is not the last keyframe: the buffer drains in order,
        so what is still there is the newest bytes."""
        return min(backlog, self._since_key)

    def admit(self, size: int, keyframe: bool, backlog: int) -> bool:
        """Whether to write a frame of `size` bytes to a socket with `backlog` unsent bytes."""
        if not keyframe:
            self.mean += MEAN_WEIGHT * (size - self.mean) if self.mean else size
        if self.need_keyframe:
            if keyframe and backlog <= self.limit:
                self.need_keyframe = False
                self._since_key = 0
                return True
            self.dropped += 1
            return False
        if self._delta_backlog(backlog) > self.limit:
            self.need_keyframe = True
            self.dropped += 1
            return False
        self._since_key = 0 if keyframe else self._since_key + size
        return True

    def want_keyframe(self, backlog: int, now: float) -> bool:
        """Whether to ask the encoder for a keyframe now: one is needed, the backlog has drained
        and the last request is old enough."""
        if self.need_keyframe and backlog <= self.limit and now - self.asked_at >= KEYFRAME_RETRY_S:
            self.asked_at = now
            return True
        return False
