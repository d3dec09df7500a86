"""A real WebSocket viewer for tests and benchmarks: aiohttp reads the agent's (or gateway's)
`/ws`, PyAV decodes each H.264 access unit as it arrives, input goes back as JSON text."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import av

from streamwire.frame import HEADER, KIND_VIDEO, unpack_header
from tests.whep_client import colour_close, pixel


class WsViewer:
    """Same surface as tests.whep_client.Viewer (wait_for, send, receive, frames) over /ws."""

    def __init__(self, base_url: str, token: str | None = None, headers: dict[str, str] | None = None,
                 path: str = "/ws", read: bool = True) -> None:
        self.url = base_url.rstrip("/") + path
        self.headers = dict(headers or {})
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.read = read  # False: a viewer that stops reading (its socket backs up)
        self.frame: av.VideoFrame | None = None
        self.frames = 0                # decoded
        self.received: list[tuple[bool, int, float]] = []  # (keyframe, capture µs, arrival epoch s)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.decoder = av.CodecContext.create("h264", "r")
        self.capture_us = 0            # capture time of the newest decoded frame
        self.decoded_at = 0.0          # time.time() when it decoded
        self._new_frame = asyncio.Condition()
        self._http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task | None = None
        self._resume = asyncio.Event()

    async def connect(self) -> None:
        self._http = aiohttp.ClientSession()
        try:
            self.ws = await self._http.ws_connect(self.url, headers=self.headers, compress=0,
                                                  max_msg_size=0, autoping=True)
        except BaseException:
            await self._http.close()
            raise
        if self.read:
            self._resume.set()
        else:
            self.pause()
        self._task = asyncio.ensure_future(self._receive())

    def pause(self) -> None:
        """Stop reading the socket at all: its buffers fill and the sender's backlog grows."""
        self._resume.clear()
        self._transport().pause_reading()

    def resume(self) -> None:
        self._transport().resume_reading()
        self._resume.set()

    def _transport(self):
        assert self.ws is not None
        return self.ws._writer.transport  # aiohttp reads on, into its own queue, unless paused here

    async def _receive(self) -> None:
        assert self.ws is not None
        while True:
            await self._resume.wait()
            message = await self.ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.put_nowait(json.loads(message.data))
            elif message.type == aiohttp.WSMsgType.BINARY:
                self._on_frame(message.data)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                async with self._new_frame:
                    self._new_frame.notify_all()
                return

    def _on_frame(self, data: bytes) -> None:
        header = unpack_header(data)
        if header.kind != KIND_VIDEO:
            return
        self.received.append((header.keyframe, header.captured_us, time.time()))
        frames = self.decoder.decode(av.Packet(data[HEADER.size:]))
        if frames:
            self.frame = frames[-1]
            self.frames += len(frames)
            self.capture_us = header.captured_us
            self.decoded_at = time.time()
            asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._new_frame:
            self._new_frame.notify_all()

    @property
    def closed(self) -> bool:
        return self.ws is None or self.ws.closed

    async def wait_for(self, predicate, timeout: float = 20.0) -> av.VideoFrame:
        async def wait() -> av.VideoFrame:
            async with self._new_frame:
                while self.frame is None or not predicate(self.frame):
                    if self.closed:
                        raise AssertionError(f"the socket closed ({self.ws.close_code if self.ws else None})")
                    await self._new_frame.wait()
                return self.frame
        return await asyncio.wait_for(wait(), timeout)

    async def wait_for_colour(self, rgb: tuple[int, int, int], at: tuple[int, int] | None = None,
                              timeout: float = 20.0) -> av.VideoFrame:
        return await self.wait_for(lambda f: colour_close(pixel(f, at), rgb), timeout)

    def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        asyncio.ensure_future(self.ws.send_str(json.dumps(message)))

    async def receive(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                msg = await self.messages.get()
                if msg.get("type") == kind:
                    return msg
        return await asyncio.wait_for(wait(), timeout)

    async def close(self, delete: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self._http is not None:
            await self._http.close()
