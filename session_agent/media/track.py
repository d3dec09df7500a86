"""A peer's video track: hands the shared encoder's packets to aiortc, which sends them as-is."""
from __future__ import annotations

import asyncio
import time
from collections import deque

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .pipeline import MediaPipeline

# A peer more than this many frames behind skips ahead to the next keyframe instead of
# falling further behind (and slowing nobody else: every peer has its own queue).
MAX_QUEUED = 8


class EncodedVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, pipeline: MediaPipeline, codec: str, metrics) -> None:
        super().__init__()
        self.codec = codec
        self._pipeline = pipeline
        self._metrics = metrics
        self._queue: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._need_keyframe = True  # a decoder can only start at a keyframe
        self._handed_at = 0.0  # when recv() last returned a packet: aiortc sends it, then asks again
        self._to_transport = metrics.stage["to_transport"]
        self._send = metrics.stage["send"]
        pipeline.subscribe(codec, self._push)

    def _push(self, packet: av.Packet) -> None:
        if self._need_keyframe:
            if not packet.is_keyframe:
                return
            self._need_keyframe = False
        if len(self._queue) >= MAX_QUEUED:
            self._metrics.frames_dropped.inc(len(self._queue))
            self._queue.clear()
            self._need_keyframe = True
            self._pipeline.request_keyframe()
            return
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:
        if self._handed_at:
            # aiortc's sender asks for the next frame right after it has sent the last one's packets.
            self._send.observe(time.monotonic() - self._handed_at)
            self._handed_at = 0.0
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        self._metrics.frames_sent.inc()
        packet = self._queue.popleft()
        self._handed_at = time.monotonic()
        if packet.opaque is not None:
            self._to_transport.observe(self._handed_at - packet.opaque.encoded_at)
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._pipeline.unsubscribe(self.codec, self._push)
        super().stop()
        self._ready.set()
