"""What keeps the stream on the browser's low-latency path, and the agent's latency budget.

Real Xvfb → real agent process → a real aiortc viewer whose receiving transport records every
RTP packet as it arrived (decrypted, before aiortc parses it), so the header extensions the
agent's real sender wrote are read back byte for byte. No timing assertions: speed is in
bench/browser_latency.py.
"""
from __future__ import annotations

import asyncio
import re

import aiortc.rtcdtlstransport
import pytest
from aiortc.rtp import RtpPacket, unpack_header_extensions

from bench.session_harness import bucket_quantile, histograms
from session_agent.media.rtpext import PLAYOUT_DELAY_URI, offered_extension_id, playout_delay
from session_agent.metrics import FRAME_STAGES
from tests.agent.test_streaming import metrics_text, metric_sum
from tests.agent_process import start_agent
from tests.whep_client import Viewer
from tests.xserver import fill_root, start_xvfb

# Chromium offers playout-delay with this id (Chromium 156); the test offers it as a browser does.
OFFERED_ID = 5


@pytest.fixture(scope="module")
def agent():
    x = start_xvfb("640x360")
    agent = start_agent(x.display)
    yield agent
    agent.stop()
    x.stop()


@pytest.fixture
def received(monkeypatch) -> list[bytes]:
    """Every RTP packet this process's peers receive, as the bytes SRTP decrypted."""
    packets: list[bytes] = []

    class Recording(RtpPacket):
        @classmethod
        def parse(cls, data, *args):
            packets.append(bytes(data))
            return RtpPacket.parse(data, *args)

    monkeypatch.setattr(aiortc.rtcdtlstransport, "RtpPacket", Recording)
    return packets


def offering_playout_delay(sdp: str) -> str:
    """The aiortc client's offer with playout-delay in its video section, as Chromium offers it."""
    eol = "\r\n" if "\r\n" in sdp else "\n"
    head, video, rest = re.split(r"(?m)^(m=video [^\r\n]*)", sdp, maxsplit=1)
    return f"{head}{video}{eol}a=extmap:{OFFERED_ID} {PLAYOUT_DELAY_URI}{rest}"


def extensions(packet: bytes) -> dict[int, bytes]:
    """Header extensions of a raw RTP packet, by id (RFC 8285)."""
    if not packet[0] & 0x10:
        return {}
    cc = packet[0] & 0x0F
    pos = 12 + 4 * cc
    profile, words = int.from_bytes(packet[pos:pos + 2], "big"), int.from_bytes(packet[pos + 2:pos + 4], "big")
    return dict(unpack_header_extensions(profile, packet[pos + 4:pos + 4 + 4 * words]))


def answered_ids(sdp: str) -> set[int]:
    return {int(i) for i in re.findall(r"(?m)^a=extmap:(\d+)", sdp)}


async def paint_and_receive(agent, viewer: Viewer, colours) -> None:
    for rgb in colours:
        fill_root(agent.display, rgb)
        await viewer.wait_for_colour(rgb)


async def test_offered_playout_delay_is_answered_and_every_packet_says_zero(agent, received):
    viewer = Viewer(agent.url, token=agent.token, offer_filter=offering_playout_delay)
    await viewer.connect()
    try:
        answer = viewer.pc.remoteDescription.sdp
        assert f"a=extmap:{OFFERED_ID} {PLAYOUT_DELAY_URI}" in answer
        await paint_and_receive(agent, viewer, [(255, 0, 0), (0, 0, 255), (0, 255, 0)])
    finally:
        await viewer.close()
    assert len(received) >= 3
    for packet in received:
        ext = extensions(packet)
        assert set(ext) <= answered_ids(answer)
        assert playout_delay(ext[OFFERED_ID]) == (0, 0)


async def test_without_the_offer_the_extension_is_neither_answered_nor_sent(agent, received):
    viewer = Viewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        answer = viewer.pc.remoteDescription.sdp
        assert PLAYOUT_DELAY_URI not in answer
        await paint_and_receive(agent, viewer, [(255, 255, 0), (0, 255, 255)])
    finally:
        await viewer.close()
    assert received
    # Only what was answered (mid, abs-send-time): nothing the viewer did not agree to.
    assert all(set(extensions(p)) <= answered_ids(answer) for p in received)


async def test_every_stage_of_the_budget_is_measured_per_frame(agent):
    def stage_counts(text: str) -> dict[str, float]:
        return {s: metric_sum(text, rf'agent_frame_stage_seconds_count\{{stage="{s}"\}}') for s in FRAME_STAGES}

    viewer = Viewer(agent.url, token=agent.token)
    await viewer.connect()
    try:
        first = await metrics_text(agent)
        before = stage_counts(first)
        await paint_and_receive(agent, viewer, [(200, 40, 40), (40, 200, 40), (40, 40, 200), (90, 90, 90)])
        # Counted once the agent is quiet (settle frames done), so the counts belong together.
        previous = None
        for _ in range(100):
            text = await metrics_text(agent)
            if text == previous:
                break
            previous = text
            await asyncio.sleep(0.3)
        counts = stage_counts(text)
    finally:
        await viewer.close()
    grown = {s: counts[s] - before[s] for s in FRAME_STAGES}
    # What the benchmarks read from it: every stage's median over the frames between scrapes.
    for stage in FRAME_STAGES:
        median, observed = bucket_quantile(histograms(first, "agent_frame_stage_seconds", "stage")[stage],
                                           histograms(text, "agent_frame_stage_seconds", "stage")[stage])
        assert observed == grown[stage] and 0 <= median < 0.25, (stage, median, observed)
    # Four changes seen by XDamage, each grabbed, converted and encoded, then sent.
    assert all(grown[s] >= 4 for s in FRAME_STAGES), grown
    # Every capture is timed, and every frame a track handed to aiortc.
    assert counts["grab"] == metric_sum(text, "agent_frames_captured_total")
    assert counts["to_transport"] == metric_sum(text, "agent_frames_sent_total")
    assert counts["encode"] == metric_sum(text, "agent_encode_seconds_count")


def test_offered_extension_ids_are_read_from_the_video_section():
    offer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:5 " + PLAYOUT_DELAY_URI + "\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:2 urn:x\r\na=extmap:7/recvonly " + PLAYOUT_DELAY_URI + "\r\n"
             "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")
    assert offered_extension_id(offer, PLAYOUT_DELAY_URI) == 7
    assert offered_extension_id(offer, PLAYOUT_DELAY_URI, "audio") == 5
    assert offered_extension_id(offer.replace(PLAYOUT_DELAY_URI, "urn:other"), PLAYOUT_DELAY_URI) is None


def test_bucket_quantile_interpolates_within_the_bucket_like_prometheus():
    before = [(0.001, 2), (0.002, 2), (0.004, 2), (float("inf"), 2)]
    after = [(0.001, 2), (0.002, 6), (0.004, 12), (float("inf"), 12)]  # 4 in (1, 2] ms, 6 in (2, 4] ms
    assert bucket_quantile(before, after, 0.5) == (pytest.approx(0.002 + 0.002 / 6), 10)
    assert bucket_quantile(after, after) == (None, 0)


def test_playout_delay_values():
    assert playout_delay(b"\x00\x00\x00") == (0, 0)
    assert playout_delay(bytes([0x00, 0x10, 0x0A])) == (10, 100)  # 12 bits each, 10 ms units
    with pytest.raises(ValueError):
        playout_delay(b"\x00")
