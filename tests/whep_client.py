"""A real WebRTC viewer for tests: aiortc offers over WHEP, decodes frames, talks on `input`."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError


class Viewer:
    def __init__(self, base_url: str, token: str | None = None, codec: str | None = None,
                 headers: dict[str, str] | None = None,
                 offer_filter: Callable[[str], str] = lambda sdp: sdp) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.codec = codec
        self.headers = headers or {}
        self.offer_filter = offer_filter
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.frame: av.VideoFrame | None = None
        self.frames = 0
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._new_frame = asyncio.Condition()
        self._tasks: list[asyncio.Task] = []
        self.channel = None

    async def connect(self, path: str = "/whep") -> None:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        if self.codec:
            caps = [c for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.lower() == f"video/{self.codec}"]
            transceiver.setCodecPreferences(caps)
        self.channel = self.pc.createDataChannel("input")
        opened = asyncio.Event()
        self.channel.on("open", opened.set)
        self.channel.on("message", lambda m: self.messages.put_nowait(json.loads(m)))
        self.pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._receive(track))))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp", **self.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with aiohttp.ClientSession() as http:
            async with http.post(self.base_url + path, data=self.offer_filter(self.pc.localDescription.sdp), headers=headers) as r:
                body = await r.text()
                if r.status != 201:
                    raise AssertionError(f"WHEP answered {r.status}: {body}")
                self.location = r.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        await asyncio.wait_for(opened.wait(), 20)

    async def _receive(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                async with self._new_frame:
                    self.frame = frame
                    self.frames += 1
                    self._new_frame.notify_all()
        except MediaStreamError:
            pass

    async def wait_for(self, predicate, timeout: float = 20.0) -> av.VideoFrame:
        """Wait until a decoded frame satisfies predicate(frame)."""
        async def wait() -> av.VideoFrame:
            async with self._new_frame:
                while self.frame is None or not predicate(self.frame):
                    await self._new_frame.wait()
                return self.frame
        return await asyncio.wait_for(wait(), timeout)

    async def wait_for_colour(self, rgb: tuple[int, int, int], at: tuple[int, int] | None = None,
                              timeout: float = 20.0) -> av.VideoFrame:
        return await self.wait_for(lambda f: colour_close(pixel(f, at), rgb), timeout)

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    async def receive(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                msg = await self.messages.get()
                if msg.get("type") == kind:
                    return msg
        return await asyncio.wait_for(wait(), timeout)

    async def close(self, delete: bool = True) -> None:
        if delete and self.location:
            headers = dict(self.headers)
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            async with aiohttp.ClientSession() as http:
                async with http.delete(urljoin(self.base_url + "/", self.location), headers=headers):
                    pass
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


def pixel(frame: av.VideoFrame, at: tuple[int, int] | None = None) -> tuple[int, int, int]:
    x, y = at if at is not None else (frame.width // 2, frame.height // 2)
    rgb = frame.to_ndarray(format="rgb24")
    return tuple(int(v) for v in rgb[y, x])


def colour_close(a, b, tolerance: int = 24) -> bool:
    return bool(np.all(np.abs(np.array(a, dtype=int) - np.array(b, dtype=int)) <= tolerance))
