"""`GET /ws`: the WebSocket transport (SPEC "WebSocket transport"), for networks where WebRTC
cannot connect. One more subscriber of the shared H.264 encode: each frame goes out as one
binary message (streamwire/frame.py), input comes in as the `input` data channel's JSON messages.

Nothing on the encode path awaits a socket: the pipeline's packets land in this viewer's own
small queue, which a task of its own writes out. A viewer whose link is slower than the stream
skips frames and resumes at a keyframe (streamwire/backpressure.py), and nobody else notices.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from typing import Any, Callable

import av
from aiohttp import WSMsgType, web

from streamwire.backpressure import SendGate
from streamwire.frame import pack_video
from streamwire.sockets import limit_unsent

from .input.channel import InputChannel
from .media.pipeline import MediaPipeline
from .viewers import Identity, Viewer, ViewerRegistry

log = logging.getLogger(__name__)

# (send, peer) → the viewer's input channel (session_agent/presence.py: its role and the floor)
ChannelFactory = Callable[[Callable[[dict[str, Any]], None], str], InputChannel]

# WebSocket pings: a viewer whose pong does not come within half of this is gone (tab killed,
# network lost: TCP itself would notice only after minutes).
HEARTBEAT_S = 10.0
# While a keyframe is due, how often the writer looks whether the backlog has drained.
DRAIN_POLL_S = 0.01
# While it skips frames, a socket reports what it drained over at least this long (the encoder
# cap goes just under it: media/bitrate.py).
RATE_WINDOW_S = 1.0
# A viewer being disconnected (revoked, expired) gets its `disconnect` message first (as WHEP's).
DISCONNECT_GRACE_S = 0.25
# Text a viewer does not read (cursor shapes, clipboard, notices) is never dropped; one that
# lets this much pile up is too far gone to keep.
MAX_TEXT_BACKLOG = 4 * 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024  # text from the viewer: the data channel's messages are far smaller


def epoch_us() -> int:
    return time.time_ns() // 1000


class WsViewer:
    """One WebSocket viewer: its peer id, when it came, its input channel and its writer."""

    transport_name = "ws"

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, pipeline: MediaPipeline,
                 metrics, channel_factory: ChannelFactory, peer: str | None = None) -> None:
        self.peer = peer or secrets.token_urlsafe(12)
        self.since = time.time()
        self.ws = ws
        self._transport = transport
        self._pipeline = pipeline
        self._metrics = metrics
        self.gate = SendGate()
        self._queue: deque[bytes | str] = deque()
        self._queued = 0    # bytes in _queue
        self._wake = asyncio.Event()
        self._closed = False
        self.acked_us = 0   # capture time of the frame the viewer last painted
        self._written = 0   # bytes handed to the transport
        self._mark = (time.monotonic(), 0)  # (when, drained then): the drain rate's window
        self.channel = channel_factory(self._send_message, self.peer)
        self._writer = asyncio.ensure_future(self._write())

    def _buffered(self) -> int:
        return self._transport.get_write_buffer_size() if not self._transport.is_closing() else 0

    @property
    def backlog(self) -> int:
        """Bytes accepted for this viewer and not yet handed to the kernel."""
        return self._queued + self._buffered()

    # -- frames from the pipeline (loop thread, never awaits) -------------------------------

    def push(self, packet: av.Packet) -> None:
        stamp = packet.opaque
        if self._closed or stamp is None:
            return
        admitted = self.gate.admit(packet.size, packet.is_keyframe, self.backlog)
        now = time.monotonic()
        since, drained_then = self._mark
        if now - since >= RATE_WINDOW_S:
            drained = self._written - self._buffered()
            self._mark = (now, drained)
            if not admitted:
                self._pipeline.report_drained(self.peer, int(8 * (drained - drained_then) / (now - since) / 1000))
        if not admitted:
            self._metrics.frames_dropped.inc()
            self._wake.set()  # the writer watches the drain and asks for the keyframe
            return
        data = pack_video(bytes(packet), keyframe=packet.is_keyframe, width=stamp.width,
                          height=stamp.height, captured_us=stamp.captured_us)
        self._enqueue(data)

    def _send_message(self, message: dict[str, Any]) -> None:
        if message.get("type") == "pong":
            # The agent's clock with the answer: the viewer estimates the clock offset from it
            # and so the glass-to-glass latency of each frame (capture time → painted).
            message = {**message, "time": epoch_us()}
        self._enqueue(json.dumps(message, separators=(",", ":")))

    def _enqueue(self, item: bytes | str) -> None:
        if self._closed:
            return
        self._queue.append(item)
        self._queued += len(item)
        if self._queued > MAX_TEXT_BACKLOG:
            asyncio.ensure_future(self.close(reason="backlog"))
        self._wake.set()

    async def _write(self) -> None:
        send_bytes, send_str = self.ws.send_bytes, self.ws.send_str
        frames_sent = self._metrics.frames_sent
        try:
            while not self._closed:
                while self._queue:
                    item = self._queue.popleft()
                    self._queued -= len(item)
                    if isinstance(item, bytes):
                        await send_bytes(item)
                        frames_sent.inc()
                    else:
                        await send_str(item)
                    self._written += len(item)
                if self.gate.need_keyframe:
                    if self.gate.want_keyframe(self.backlog, time.monotonic()):
                        self._pipeline.request_keyframe()
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), DRAIN_POLL_S)
                    except asyncio.TimeoutError:
                        pass
                else:
                    self._wake.clear()
                    await self._wake.wait()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass  # the socket went; the handler's read loop ends and cleans up

    # -- messages from the viewer -----------------------------------------------------------

    def on_text(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "keyframe":
            self._pipeline.request_keyframe()  # debounced there, like PLI
        elif kind == "congestion":
            # From the gateway's relay: the browser's hop carried this much while it skipped frames.
            kbps = message.get("kbps")
            if isinstance(kbps, int) and not isinstance(kbps, bool) and kbps >= 0:
                self._pipeline.report_drained(self.peer, kbps)
        elif kind == "ack":
            t = message.get("t")
            if isinstance(t, int) and not isinstance(t, bool) and t >= 0:
                self.acked_us = t
        else:
            self.channel.on_message(raw)  # the data channel's messages, and its errors

    async def close(self, reason: str = "closed") -> None:
        """Release what the viewer held and end its socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.channel.close()
        self._pipeline.forget_peer(self.peer)
        self._writer.cancel()
        self._wake.set()
        log.info("ws viewer gone", extra={"action": "peer_deleted", "peer": self.peer, "reason": reason,
                                          "transport": "ws", "dropped": self.gate.dropped})
        if not self.ws.closed:
            await self.ws.close()


class WsViewers:
    """The agent's WebSocket viewers; they share the peer limit with the WHEP peers."""

    def __init__(self, pipeline: MediaPipeline, metrics, *, admitted: Callable[[], int], max_peers: int,
                 channel_factory: ChannelFactory, viewers: ViewerRegistry | None = None,
                 on_gone: Callable[[str], None] = lambda peer: None) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.admitted = admitted  # viewers of every transport, this one's included
        self.max_peers = max_peers
        self.channel_factory = channel_factory
        self.registry = viewers if viewers is not None else ViewerRegistry()
        self.on_gone = on_gone  # the channel is closed: presence forgets the peer
        self.viewers: dict[str, WsViewer] = {}
        self._pending = 0  # upgrades under way count against the limit too

    def count(self) -> int:
        return len(self.viewers) + self._pending

    def full(self) -> bool:
        return self.admitted() >= self.max_peers

    async def serve(self, request: web.Request, on_count: Callable[[], None], who: Identity) -> web.WebSocketResponse:
        """Upgrade an authorized request that fits under the limit and serve it until it ends;
        `who` (the gateway's X-Viewer-* headers) is registered first, so that its input channel
        gets its role."""
        # No permessage-deflate: H.264 does not compress, and the CPU is the encoder's.
        ws = web.WebSocketResponse(compress=False, heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
        self._pending += 1
        try:
            await ws.prepare(request)
        finally:
            self._pending -= 1
        limit_unsent(request.transport)
        peer = secrets.token_urlsafe(12)
        self.registry.add(Viewer(peer, who.role, "ws", time.time(), who.share, who.label, who.expires_at,
                                 close=lambda: self._disconnect(peer)))
        try:
            viewer = WsViewer(ws, request.transport, self.pipeline, self.metrics, self.channel_factory, peer)
        except BaseException:
            self.registry.remove(peer)
            raise
        self.viewers[viewer.peer] = viewer
        on_count()
        self.pipeline.subscribe("h264", viewer.push)  # asks for the keyframe it starts with
        log.info("ws viewer connected", extra={"action": "peer_created", "peer": viewer.peer, "transport": "ws",
                                               "encoder": self.pipeline.encoder_for("h264")})
        reason = "closed"
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    viewer.on_text(message.data)
                elif message.type == WSMsgType.ERROR:
                    reason = "error"
                    break
                # Binary messages from a viewer mean nothing (yet): ignored.
        finally:
            self.pipeline.unsubscribe("h264", viewer.push)
            self.viewers.pop(viewer.peer, None)
            on_count()
            await viewer.close(reason="heartbeat" if ws.close_code == 1006 and reason == "closed" else reason)
            self.on_gone(viewer.peer)
            self.registry.remove(viewer.peer)
        return ws

    async def _disconnect(self, peer: str) -> None:
        """The registry ends this viewer (its share was revoked or expired)."""
        await asyncio.sleep(DISCONNECT_GRACE_S)
        viewer = self.viewers.get(peer)
        if viewer is not None:
            await viewer.close(reason="disconnected")

    async def close(self) -> None:
        await asyncio.gather(*(v.close(reason="shutdown") for v in list(self.viewers.values())))
