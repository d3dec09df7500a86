"""Real Xvfb → real agent process → real aiortc viewers decoding real frames."""
from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from tests.agent_process import start_agent
from tests.whep_client import Viewer, colour_close, pixel
from session_agent.display.randr import set_screen_size
from tests.xserver import fill_root, start_xvfb


@pytest.fixture(scope="module")
def agent():
    x = start_xvfb("1280x720")
    agent = start_agent(x.display)
    yield agent
    agent.stop()
    x.stop()


async def metrics_text(agent) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(agent.url + "/metrics", headers={"Authorization": f"Bearer {agent.token}"}) as r:
            return await r.text()


def metric_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


async def metric(agent, name: str) -> float:
    return metric_sum(await metrics_text(agent), name)


async def test_colours_painted_on_x_arrive_decoded(agent):
    viewer = Viewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        for rgb in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]:
            fill_root(agent.display, rgb)
            frame = await viewer.wait_for_colour(rgb)
            assert (frame.width, frame.height) == (1280, 720)
        # A small change lands where it was painted and nowhere else.
        fill_root(agent.display, (255, 255, 0), (100, 100, 64, 64))
        frame = await viewer.wait_for_colour((255, 255, 0), at=(130, 130))
        assert colour_close(pixel(frame, (600, 400)), (0, 0, 255))
    finally:
        await viewer.close()


async def test_h264_is_chosen_though_the_offer_lists_vp8_first(agent):
    viewer = Viewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        fill_root(agent.display, (10, 200, 30))
        await viewer.wait_for_colour((10, 200, 30))
        receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
        assert isinstance(receiver, RTCRtpReceiver)
        answer = viewer.pc.remoteDescription.sdp
        video = answer[answer.index("m=video"):]
        first_pt = video.split("\r\n")[0].split()[3]
        assert re.search(rf"a=rtpmap:{first_pt} H264/90000", video)
    finally:
        await viewer.close()


async def test_vp8_only_client_gets_vp8(agent):
    viewer = Viewer(agent.url, token=agent.token, codec="vp8")
    await viewer.connect()
    try:
        assert "H264" not in viewer.pc.remoteDescription.sdp
        fill_root(agent.display, (200, 0, 200))
        await viewer.wait_for_colour((200, 0, 200))
    finally:
        await viewer.close()


async def quiet_counts(agent) -> tuple[float, float]:
    """(frames encoded, frames handed to peers) once neither moves: nothing is in flight."""
    last = None
    for _ in range(200):
        text = await metrics_text(agent)  # one scrape: both counts from the same moment
        counts = tuple(metric_sum(text, name) for name in ("agent_frames_encoded_total", "agent_frames_sent_total"))
        if counts == last:
            return counts
        last = counts
        await asyncio.sleep(0.3)
    raise AssertionError("the agent never went quiet")


async def test_two_viewers_share_one_encode(agent):
    first, second = Viewer(agent.url, token=agent.token), Viewer(agent.url, token=agent.token)
    await first.connect()
    await second.connect()
    try:
        fill_root(agent.display, (0, 128, 255))
        await asyncio.gather(first.wait_for_colour((0, 128, 255)), second.wait_for_colour((0, 128, 255)))
        encoded0, sent0 = await quiet_counts(agent)
        fill_root(agent.display, (255, 128, 0))
        await asyncio.gather(first.wait_for_colour((255, 128, 0)), second.wait_for_colour((255, 128, 0)))
        encoded1, sent1 = await quiet_counts(agent)
        # Every frame encoded once reached both viewers (one encoder per peer would make
        # the two counts equal instead).
        assert encoded1 > encoded0
        assert sent1 - sent0 == 2 * (encoded1 - encoded0)
        # The first viewer leaving does not disturb the second.
        await first.close()
        fill_root(agent.display, (90, 90, 90))
        await second.wait_for_colour((90, 90, 90))
    finally:
        await second.close()


async def test_picture_loss_gets_a_keyframe(agent):
    viewer = Viewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        fill_root(agent.display, (1, 2, 250))
        await viewer.wait_for_colour((1, 2, 250))
        before = await metric(agent, "agent_keyframes_total")
        receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
        media_ssrc = next(iter(receiver._RTCRtpReceiver__remote_streams))
        await receiver._send_rtcp_pli(media_ssrc)

        async def keyframe_sent() -> None:
            while await metric(agent, "agent_keyframes_total") <= before:
                await asyncio.sleep(0.1)
        await asyncio.wait_for(keyframe_sent(), 20)
    finally:
        await viewer.close()


async def test_offer_without_candidates_still_connects(agent):
    """Players that trickle candidates post an offer with none; PATCH is refused, ICE still works."""
    posted = []

    def strip_candidates(sdp: str) -> str:
        posted.append("\r\n".join(line for line in sdp.split("\r\n")
                                   if not line.startswith(("a=candidate", "a=end-of-candidates"))))
        return posted[-1]

    viewer = Viewer(agent.url, token=agent.token, offer_filter=strip_candidates)
    await viewer.connect()
    try:
        assert "a=candidate" not in posted[0]
        fill_root(agent.display, (250, 250, 250))
        await viewer.wait_for_colour((250, 250, 250))
    finally:
        await viewer.close()


async def test_input_channel_answers_ping_and_reports_errors(agent):
    viewer = Viewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        viewer.send({"type": "ping", "t": 42})
        assert (await viewer.receive("pong"))["t"] == 42
        viewer.channel.send("not json")
        assert "message" in await viewer.receive("error")
        viewer.send({"type": "ping", "t": 43})
        assert (await viewer.receive("pong"))["t"] == 43
    finally:
        await viewer.close()


async def test_the_stream_follows_the_screen_growing_past_its_size_at_start():
    # The agent connects while the screen is small; growing it outgrows the shared memory
    # capture sized at connect time, and passes through intermediate sizes.
    x = start_xvfb("1920x1080")
    set_screen_size(x.display, 640, 480)
    agent = start_agent(x.display)
    viewer = Viewer(agent.url, token=agent.token)
    try:
        await viewer.connect()
        fill_root(x.display, (200, 30, 30))
        await viewer.wait_for(lambda f: (f.width, f.height) == (640, 480))
        for size in [(1600, 900), (800, 1000), (1920, 1080)]:
            set_screen_size(x.display, *size)
            fill_root(x.display, (30, 30, 200))
            await viewer.wait_for(lambda f: (f.width, f.height) == size)
            assert agent.health()[0] == 200
        fill_root(x.display, (30, 200, 30))
        await viewer.wait_for_colour((30, 200, 30), at=(1900, 1000))
    finally:
        await viewer.close()
        agent.stop()
        x.stop()


async def test_a_peer_whose_ice_never_completes_stops_counting_toward_the_limit(agent):
    from aiortc import RTCPeerConnection
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("input")
    await pc.setLocalDescription(await pc.createOffer())
    # No candidates and no answer applied: ICE can never complete (a viewer that went away).
    offer = "\r\n".join(line for line in pc.localDescription.sdp.split("\r\n")
                        if not line.startswith(("a=candidate", "a=end-of-candidates")))
    before = agent.health()[1]["peers"]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(agent.url + "/whep", data=offer, headers={
                    "Authorization": f"Bearer {agent.token}", "Content-Type": "application/sdp"}) as r:
                assert r.status == 201
        assert agent.health()[1]["peers"] == before + 1
        for _ in range(300):
            if agent.health()[1]["peers"] == before:
                break
            await asyncio.sleep(0.1)
        assert agent.health()[1]["peers"] == before
        assert any('"never_connected"' in line for line in agent.log)
    finally:
        await pc.close()
