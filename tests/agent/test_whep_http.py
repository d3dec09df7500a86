"""Every WHEP/HTTP status of the agent, against a real agent process."""
from __future__ import annotations

import re

import aiohttp
import av
import pytest

from session_agent.media.encoder import NVENC, X264, VideoEncoder, _try_open
from session_agent.media.h264 import sdp_profile, sps_profile

from tests.agent_process import start_agent
from tests.whep_client import Viewer
from tests.xserver import fill_root, start_xvfb


@pytest.fixture(scope="module")
def agent():
    x = start_xvfb("640x480")
    agent = start_agent(x.display, "--max-peers", "1")
    yield agent
    agent.stop()
    x.stop()


def auth(agent) -> dict[str, str]:
    return {"Authorization": f"Bearer {agent.token}"}


async def post(agent, body: bytes | str, content_type: str = "application/sdp", headers=None):
    async with aiohttp.ClientSession() as http:
        async with http.post(agent.url + "/whep", data=body,
                             headers={"Content-Type": content_type, **(headers if headers is not None else auth(agent))}) as r:
            return r.status, dict(r.headers), await r.text()


async def test_health_reports_display_encoder_and_peers(agent):
    async with aiohttp.ClientSession() as http:
        async with http.get(agent.url + "/health") as r:
            assert r.status == 200
            body = await r.json()
    assert body["status"] == "ok" and body["display"] == agent.display
    assert body["encoder"] == "x264" and body["peers"] == 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}])
async def test_whep_without_the_token_is_401(agent, headers):
    status, hdrs, body = await post(agent, "v=0\r\n", headers=headers)
    assert status == 401 and "error" in body and "Bearer" in hdrs["WWW-Authenticate"]


async def test_other_content_type_is_415(agent):
    status, _, body = await post(agent, '{"sdp": "v=0"}', content_type="application/json")
    assert status == 415 and "application/sdp" in body


@pytest.mark.parametrize("body", [b"", b"hello", b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                                  b"\xff\xfe\x00garbage", b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"])
async def test_a_body_that_is_not_a_usable_offer_is_400_json(agent, body):
    status, hdrs, text = await post(agent, body)
    assert status == 400, text
    assert hdrs["Content-Type"].startswith("application/json")


async def test_offer_without_h264_or_vp8_is_400(agent):
    viewer = Viewer(agent.url, token=agent.token,
                    offer_filter=lambda sdp: sdp.replace("H264/90000", "AV1X/90000").replace("VP8/90000", "VP9X/90000"))
    with pytest.raises(AssertionError, match="400"):
        await viewer.connect()
    await viewer.close(delete=False)


async def test_peer_resource_delete_patch_and_limit(agent):
    viewer = Viewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        assert viewer.location.startswith("/whep/")
        async with aiohttp.ClientSession() as http:
            async with http.patch(agent.url + viewer.location, headers=auth(agent)) as r:
                assert r.status == 405 and "error" in await r.json()
            async with http.patch(agent.url + "/whep/nope", headers=auth(agent)) as r:
                assert r.status == 404
            async with http.delete(agent.url + "/whep/nope", headers=auth(agent)) as r:
                assert r.status == 404 and "error" in await r.json()
            async with http.delete(agent.url + viewer.location) as r:
                assert r.status == 401
        # --max-peers 1: a second viewer is refused while the first is connected...
        second = Viewer(agent.url, token=agent.token)
        with pytest.raises(AssertionError, match="503"):
            await second.connect()
        await second.close(delete=False)
        # ...and the refusal changed nothing for the first.
        fill_root(agent.display, (0, 200, 0))
        await viewer.wait_for_colour((0, 200, 0))
        async with aiohttp.ClientSession() as http:
            async with http.delete(agent.url + viewer.location, headers=auth(agent)) as r:
                assert r.status == 200
            async with http.delete(agent.url + viewer.location, headers=auth(agent)) as r:
                assert r.status == 404
    finally:
        await viewer.close(delete=False)
    # The slot is free again.
    third = Viewer(agent.url, token=agent.token)
    await third.connect()
    await third.close()


async def test_cors_preflight_and_exposed_headers(agent):
    async with aiohttp.ClientSession() as http:
        async with http.options(agent.url + "/whep", headers={
                "Origin": "https://player.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as r:
            assert r.status in (200, 204)
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    viewer = Viewer(agent.url, token=agent.token, headers={"Origin": "https://player.example"})
    await viewer.connect()
    await viewer.close()
    status, hdrs, _ = await post(agent, "x", headers={**auth(agent), "Origin": "https://player.example"})
    exposed = hdrs["Access-Control-Expose-Headers"].lower()
    assert "location" in exposed and "link" in exposed


async def test_metrics_need_the_token_and_name_the_figures(agent):
    async with aiohttp.ClientSession() as http:
        async with http.get(agent.url + "/metrics") as r:
            assert r.status == 401
        async with http.get(agent.url + "/metrics", headers=auth(agent)) as r:
            text = await r.text()
    for name in ("agent_frames_captured_total", "agent_frames_encoded_total", "agent_frames_sent_total",
                 "agent_encode_seconds_bucket", "agent_bitrate_cap_kbps", "agent_peers"):
        assert name in text


async def test_unknown_path_is_json_404(agent):
    async with aiohttp.ClientSession() as http:
        async with http.get(agent.url + "/nope") as r:
            assert r.status == 404 and "error" in await r.json()


async def test_offer_without_direction_attributes_is_answered(agent):
    """SDP's default direction is sendrecv; a player that leaves it out still gets video."""
    strip = lambda sdp: "\r\n".join(l for l in sdp.split("\r\n") if l not in ("a=recvonly", "a=sendrecv"))
    viewer = Viewer(agent.url, token=agent.token, offer_filter=strip)
    await viewer.connect()
    try:
        fill_root(agent.display, (0, 90, 200))
        await viewer.wait_for_colour((0, 90, 200))
    finally:
        await viewer.close()


async def test_every_usable_h264_encoder_emits_the_profile_the_answer_announces(agent):
    """The SDP answer promises a profile; each H.264 encoder this machine can open (libx264
    always, NVENC where a GPU and driver are present) must emit an SPS of that profile."""
    viewer = Viewer(agent.url, agent.token, codec="h264")
    try:
        await viewer.connect()
        answer = viewer.pc.remoteDescription.sdp
    finally:
        await viewer.close()
    ids = re.findall(r"profile-level-id=([0-9a-fA-F]{6})", answer)
    assert ids, answer
    announced = sdp_profile(ids[0])
    assert announced.constrained_baseline
    usable = [kind for kind in (X264, NVENC) if kind is X264 or _try_open(kind) is None]
    for kind in usable:
        encoder = VideoEncoder(kind, 4000)
        frame = av.VideoFrame(1920, 1080, kind.pix_fmt)
        for plane in frame.planes:
            plane.update(bytes([90]) * plane.buffer_size)
        frame.pts = 0
        data = b"".join(bytes(p) for p in encoder.encode(frame, keyframe=True))
        emitted = sps_profile(data)
        assert emitted is not None, f"{kind.name}: the keyframe carries no SPS"
        assert emitted.constrained_baseline, f"{kind.name} emits {emitted.profile_level_id}"
        assert emitted.profile_idc == announced.profile_idc, (kind.name, emitted, announced)


async def test_an_offer_aiortc_half_applies_is_400_and_the_agent_still_serves(agent):
    """Found by the fuzz benchmark (seed 1796156289): a BUNDLE group naming a mid no media
    section has left aiortc half set up, and closing that connection raised (a 500)."""
    offerer = Viewer(agent.url, agent.token)
    offerer.pc.addTransceiver("video", direction="recvonly")
    offerer.pc.createDataChannel("input")
    await offerer.pc.setLocalDescription(await offerer.pc.createOffer())
    sdp = offerer.pc.localDescription.sdp.replace("a=group:BUNDLE ", "a=group:BUNDLE 7 ", 1)
    await offerer.pc.close()
    status, hdrs, text = await post(agent, sdp)
    assert status == 400 and hdrs["Content-Type"].startswith("application/json"), text
    assert "BUNDLE" in text
    viewer = Viewer(agent.url, agent.token)
    try:
        await viewer.connect()
        await viewer.wait_for(lambda f: True)
    finally:
        await viewer.close()


async def test_a_bearer_token_that_is_not_ascii_is_401_not_500(agent):
    from tests.fuzz.test_raw_http import raw, request
    status, headers, body = raw(agent.url, request(b"POST /whep", b"Authorization: Bearer \xff\xfe\r\n",
                                                   b"Content-Type: application/sdp\r\n",
                                                   b"Content-Length: 4\r\n", body=b"v=0\n"))
    assert status == 401 and b"error" in body
