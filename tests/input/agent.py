"""A real session agent (the lead's create_app) and a real aiortc client over loopback, run on
an event loop in a background thread so that synchronous code (hypothesis) can drive them."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Callable, Coroutine

import aiohttp
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

from session_agent.config import AgentConfig
from session_agent.input.session import InputSession
from session_agent.media.encoder import probe
from session_agent.server import create_app
from tests.input.recorder import TIMEOUT


class AgentClient:
    """Agent on `display` plus one WHEP client with an `input` data channel and a video track."""

    def __init__(self, display: str, rate: float | None = None) -> None:
        """With `rate`, peers get channels of an InputSession with that rate limit instead of
        the agent's own (create_app's channel_factory)."""
        self.display = display
        self._rate = rate
        self._session: InputSession | None = None
        self.got: list[dict[str, Any]] = []
        self.frame_size: tuple[int, int] | None = None
        self._changed = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT * 3)

    def send(self, msg: dict[str, Any] | str | bytes) -> None:
        raw = msg if isinstance(msg, (str, bytes)) else json.dumps(msg)
        self.loop.call_soon_threadsafe(self.dc.send, raw)

    def wait_for(self, done: Callable[[], bool]) -> None:
        with self._changed:
            if not self._changed.wait_for(done, TIMEOUT):
                raise TimeoutError("the agent did not answer in time")

    def close(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT)
        self.loop.close()

    async def _start(self) -> None:
        config = AgentConfig(display=self.display, host="127.0.0.1", port=0, encoder="x264",
                             max_fps=30, max_width=1280, max_height=720)
        factory = None
        if self._rate is not None:
            self._session = InputSession(self.display, rate=self._rate, burst=self._rate)
            await self._session.start()
            factory = self._session.channel
        self.runner = web.AppRunner(create_app(config, probe("x264"), channel_factory=factory))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]

        self.pc = pc = RTCPeerConnection()
        transceiver = pc.addTransceiver("video", direction="recvonly")
        # H.264 only: an offer listing VP8 first gets H.264 packets under VP8's payload type
        # from the agent as of this writing (reported to the lead)
        transceiver.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                                         if c.mimeType in ("video/H264", "video/rtx")])
        self.dc = pc.createDataChannel("input")
        opened = asyncio.Event()
        self.dc.on("open", opened.set)
        self.dc.on("message", self._on_message)
        pc.on("track", lambda track: asyncio.ensure_future(self._read_frames(track)))
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/whep", data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == 201, await resp.text()
                answer = await resp.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(opened.wait(), TIMEOUT)

    async def _stop(self) -> None:
        await self.pc.close()
        await self.runner.cleanup()
        if self._session is not None:
            await self._session.stop()

    def _on_message(self, raw: str) -> None:
        with self._changed:
            self.got.append(json.loads(raw))
            self._changed.notify_all()

    async def _read_frames(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended with the peer
                return
            with self._changed:
                self.frame_size = (frame.width, frame.height)
                self._changed.notify_all()
