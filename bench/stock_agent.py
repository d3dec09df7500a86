"""The stock approach, for comparison only: mss capture inside an aiortc VideoStreamTrack.

What a developer gets by following aiortc's examples: every peer has its own track, which
grabs the screen at 30 fps whether or not it changed, and aiortc's own encoder (one per peer,
VP8 or H.264 as negotiated, aiortc's fixed settings). Serves WHEP like the agent.

    python bench/stock_agent.py --display :1 --port 7000
"""
from __future__ import annotations

import argparse
import asyncio
import os

import av
import mss
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack


class ScreenTrack(VideoStreamTrack):
    def __init__(self, display: str) -> None:
        super().__init__()
        self.sct = mss.MSS(display=display)
        self.monitor = self.sct.monitors[0]

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        shot = self.sct.grab(self.monitor)
        frame = av.VideoFrame.from_ndarray(np.asarray(shot), format="bgra")
        frame.pts, frame.time_base = pts, time_base
        return frame


def create_app(display: str) -> web.Application:
    pcs: dict[str, RTCPeerConnection] = {}

    async def whep(request: web.Request) -> web.Response:
        pc = RTCPeerConnection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        pc.addTrack(ScreenTrack(display))
        await pc.setLocalDescription(await pc.createAnswer())
        peer = str(len(pcs))
        pcs[peer] = pc
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whep/{peer}"})

    async def delete(request: web.Request) -> web.Response:
        pc = pcs.pop(request.match_info["peer"], None)
        if pc:
            await pc.close()
        return web.Response()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def close_all(app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc in pcs.values()))

    app = web.Application()
    app.router.add_post("/whep", whep)
    app.router.add_delete("/whep/{peer}", delete)
    app.router.add_get("/health", health)
    app.on_shutdown.append(close_all)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--display", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from session_agent.whep import restrict_ice_addresses  # same loopback-only ICE as the agent
    restrict_ice_addresses(tuple(a for a in os.environ.get("AGENT_ICE_ADDRESSES", "").split(",") if a))
    web.run_app(create_app(args.display), host="127.0.0.1", port=args.port, print=None)
