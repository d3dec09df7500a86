"""`/ws`: real Xvfb → real agent process → WebSocket viewers decoding real frames with PyAV."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import aiohttp
import pytest
from Xlib import display as xdisplay

from bench.xpaint import PAINTER
from session_agent.media.h264 import sps_profile
from tests.agent.test_streaming import metric, quiet_counts
from tests.agent_process import start_agent
from tests.whep_client import Viewer
from tests.ws_client import WsViewer
from tests.xserver import fill_root, start_xvfb


@pytest.fixture(scope="module")
def agent():
    x = start_xvfb("1280x720")
    agent = start_agent(x.display)
    yield agent
    agent.stop()
    x.stop()


async def test_ws_viewer_decodes_the_screen_starting_at_a_keyframe(agent):
    viewer = WsViewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        for rgb in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]:
            fill_root(agent.display, rgb)
            frame = await viewer.wait_for_colour(rgb)
            assert (frame.width, frame.height) == (1280, 720)
        keyframe, captured_us, arrived = viewer.received[0]
        assert keyframe
        assert all(0 <= arrived - c / 1e6 < 5 for _, c, arrived in viewer.received)  # epoch µs
        resized = await viewer.receive("resized")
        assert (resized["width"], resized["height"]) == (1280, 720)
    finally:
        await viewer.close()


async def test_first_frame_carries_sps_and_pps(agent):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(agent.url + "/ws", headers={"Authorization": f"Bearer {agent.token}"}) as ws:
            fill_root(agent.display, (9, 99, 199))
            while (message := await asyncio.wait_for(ws.receive(), 20)).type != aiohttp.WSMsgType.BINARY:
                pass
            data = message.data
            assert data[0] == 1 and data[1] & 1
            assert (int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:6], "big")) == (1280, 720)
            profile = sps_profile(data[16:])
            assert profile is not None and profile.constrained_baseline
            assert b"\x00\x00\x01\x68" in data[16:] or b"\x00\x00\x01\x28" in data[16:]  # a PPS


async def test_input_over_the_socket_lands_on_x_and_ping_has_the_agent_clock(agent):
    viewer = WsViewer(agent.url, token=agent.token)
    await viewer.connect()
    d = xdisplay.Display(agent.display)
    try:
        viewer.send({"type": "pointer", "x": 123, "y": 321})
        viewer.send({"type": "ping", "t": 7})
        pong = await viewer.receive("pong")
        assert pong["t"] == 7 and isinstance(pong["time"], int)
        p = d.screen().root.query_pointer()
        assert (p.root_x, p.root_y) == (123, 321)
        viewer.send({"type": "ack", "t": 12345})  # accepted silently
        viewer.send({"type": "nonsense"})
        assert "nonsense" in (await viewer.receive("error"))["message"]
    finally:
        d.close()
        await viewer.close()


async def test_keyframe_requests_are_debounced(agent):
    viewer = WsViewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        fill_root(agent.display, (40, 80, 120))
        await viewer.wait_for_colour((40, 80, 120))
        await quiet_counts(agent)
        before = await metric(agent, "agent_keyframes_total")
        for _ in range(40):
            viewer.send({"type": "keyframe"})
            await asyncio.sleep(0.02)
        await quiet_counts(agent)
        made = await metric(agent, "agent_keyframes_total") - before
        assert 1 <= made <= 5, made  # 40 requests in 0.8 s, at most one per 0.25 s
        assert viewer.received[-1][0] or any(k for k, _, _ in viewer.received[-20:])
    finally:
        await viewer.close()


async def test_refused_without_the_token_or_an_upgrade(agent):
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(agent.url + "/ws")
        assert refused.value.status == 401
        async with http.get(agent.url + "/ws", headers={"Authorization": f"Bearer {agent.token}"}) as r:
            assert r.status == 426
            assert "WebSocket" in (await r.json())["error"]


async def test_ws_viewers_count_toward_the_peer_limit():
    x = start_xvfb("320x240")
    agent = start_agent(x.display, "--max-peers", "2")
    rtc, ws = Viewer(agent.url, token=agent.token), WsViewer(agent.url, token=agent.token)
    try:
        await rtc.connect()
        await ws.connect()
        fill_root(x.display, (200, 100, 0))
        await ws.wait_for_colour((200, 100, 0))
        assert agent.health()[1]["peers"] == 2
        third = WsViewer(agent.url, token=agent.token)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await third.connect()
        assert refused.value.status == 503
        with pytest.raises(AssertionError, match="503"):
            await Viewer(agent.url, token=agent.token).connect()
        await ws.close()
        for _ in range(50):  # the agent notices the close
            if agent.health()[1]["peers"] == 1:
                break
            await asyncio.sleep(0.1)
        assert agent.health()[1]["peers"] == 1
        again = WsViewer(agent.url, token=agent.token)
        await again.connect()
        fill_root(x.display, (0, 100, 200))
        await again.wait_for_colour((0, 100, 200))
        await again.close()
    finally:
        await ws.close()
        await rtc.close()
        agent.stop()
        x.stop()


async def test_a_viewer_that_stops_reading_skips_frames_and_nobody_else_does(agent):
    slow = WsViewer(agent.url, token=agent.token, read=False)
    fast = WsViewer(agent.url, token=agent.token)
    rtc = Viewer(agent.url, token=agent.token)
    await slow.connect()
    # A small receive window: the backlog builds in the agent, not in loopback's megabytes.
    slow.ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    await fast.connect()
    await rtc.connect()
    try:
        fill_root(agent.display, (10, 10, 10))
        await asyncio.gather(fast.wait_for_colour((10, 10, 10)), rtc.wait_for_colour((10, 10, 10)))
        encoded0, _ = await quiet_counts(agent)
        fast0, rtc0 = len(fast.received), rtc.frames
        dropped0 = await metric(agent, "agent_frames_dropped_total")
        painter = subprocess.Popen([sys.executable, "-c", PAINTER, agent.display, "3"])
        await asyncio.get_running_loop().run_in_executor(None, painter.wait)
        fill_root(agent.display, (250, 250, 0))
        await asyncio.gather(fast.wait_for_colour((250, 250, 0)), rtc.wait_for_colour((250, 250, 0)))
        encoded1, _ = await quiet_counts(agent)
        encoded = encoded1 - encoded0
        assert encoded > 30
        # The fast viewers got every frame the one encoder made; the slow one was skipped.
        assert len(fast.received) - fast0 == encoded
        assert rtc.frames - rtc0 >= 0.9 * encoded
        assert await metric(agent, "agent_frames_dropped_total") - dropped0 > 0
        assert fast.decoder is not None and agent.health()[0] == 200
        # The slow viewer reads again: what was buffered for it, then a keyframe, then the present.
        slow.resume()
        await slow.wait_for_colour((250, 250, 0))
        keyframes = [i for i, (key, _, _) in enumerate(slow.received) if key]
        assert len(keyframes) >= 2 and keyframes[0] == 0
        assert len(slow.received) < len(fast.received)
    finally:
        for v in (slow, fast, rtc):
            await v.close()
