"""Pure pieces of the media path: codec choice, encoder settings, bitrate control, config."""
from __future__ import annotations

import av
import pytest

from session_agent.media.h264 import nal_type, nal_units, sdp_profile, sps_profile
from session_agent.config import parse_args
from session_agent.media.bitrate import BitrateController
from session_agent.media.encoder import NVENC, VP8, X264, VideoEncoder, encoder_options, probe
from session_agent.media.negotiation import (OfferError, choose_codec, codec_preferences, validate_offer,
                                             video_codecs, with_default_directions)

OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104",
    "a=ice-ufrag:abcd", "a=ice-pwd:efghijklmnopqrstuvwxyz01", "a=fingerprint:sha-256 00:11",
    "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102",
    "a=rtpmap:104 H264/90000", "a=fmtp:104 packetization-mode=1;profile-level-id=640032", ""])


def test_offered_codecs_in_order():
    codecs = video_codecs(OFFER)
    assert [(c.payload_type, c.name) for c in codecs] == [(96, "vp8"), (97, "rtx"), (102, "h264"), (103, "rtx"),
                                                           (104, "h264")]
    assert codecs[2].fmtp["profile-level-id"] == "42e01f"


def test_h264_preferred_over_vp8_listed_first():
    assert choose_codec(video_codecs(OFFER), "h264").payload_type == 102


def test_vp8_when_asked_or_when_no_usable_h264():
    assert choose_codec(video_codecs(OFFER), "vp8").name == "vp8"
    high_only = OFFER.replace("profile-level-id=42e01f", "profile-level-id=640032")
    assert choose_codec(video_codecs(high_only), "h264").name == "vp8"
    mode0 = OFFER.replace("packetization-mode=1", "packetization-mode=0")
    assert choose_codec(video_codecs(mode0), "h264").name == "vp8"


def test_no_common_codec_is_an_offer_error():
    with pytest.raises(OfferError, match="H.264"):
        choose_codec(video_codecs(OFFER.replace("VP8", "VP9").replace("H264", "AV1")), "h264")


def test_preferences_name_one_codec_and_rtx():
    prefs = codec_preferences("h264")
    assert {c.mimeType for c in prefs} == {"video/H264", "video/rtx"}
    assert prefs[0].parameters["profile-level-id"] == "42e01f"
    assert {c.mimeType for c in codec_preferences("vp8")} == {"video/VP8", "video/rtx"}


@pytest.mark.parametrize("sdp, reason", [
    ("", "empty"), ("hello", "not SDP"), ("v=0\r\ns=-\r\n", "no video"),
    ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "ICE credentials"),
])
def test_validate_offer_reasons(sdp, reason):
    with pytest.raises(OfferError, match=reason):
        validate_offer(sdp)


def test_x264_settings_are_low_latency():
    opts = encoder_options(X264, 6000)
    assert opts["preset"] == "ultrafast" and opts["tune"] == "zerolatency"
    params = dict(p.split("=") for p in opts["x264-params"].split(":"))
    assert params["bframes"] == "0" and params["keyint"] == "infinite"
    assert params["vbv-maxrate"] == "6000" and params["vbv-bufsize"] == "200"  # one frame at 30 fps
    assert encoder_options(NVENC, 6000)["bf"] == "0"
    assert encoder_options(VP8, 6000)["lag-in-frames"] == "0"


def test_probe_falls_back_to_x264_without_a_usable_nvenc():
    # No NVIDIA driver here: opening h264_nvenc fails, and the probe says so and moves on.
    assert probe("auto") is X264
    assert probe("x264") is X264
    assert probe("vp8") is VP8
    with pytest.raises(RuntimeError, match="NVENC is not usable"):
        probe("nvenc")


def _frame(w: int, h: int, luma: int) -> av.VideoFrame:
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes([luma]) * plane.buffer_size)
    return frame


@pytest.mark.parametrize("kind", [X264, VP8])
def test_encoder_keyframes_on_request_and_on_size_change(kind):
    enc = VideoEncoder(kind, 4000)
    keys = []
    for i, (size, key) in enumerate([((320, 240), False), ((320, 240), False), ((320, 240), True),
                                      ((320, 240), False), ((480, 320), False)]):
        frame = _frame(*size, 40 + i * 30)
        frame.pts = i * 3000
        keys.append([p.is_keyframe for p in enc.encode(frame, key)])
    assert keys == [[True], [False], [True], [False], [True]]


def test_a_falling_estimate_lowers_the_cap_to_the_slowest_receiver():
    c = BitrateController(8000, 1000, 12000)
    c.report("a", 9_000_000)
    c.report("b", 7_000_000)
    assert c.update(0.0) is None                      # within the hysteresis of 8000
    c.report("b", 4_000_000)                          # b's estimate falls: over-use
    assert c.update(1.0) == 4000
    c.report("b", 3_800_000)
    assert c.update(2.0) is None                      # small change: no reopen
    c.report("b", 100_000)
    assert c.update(1.5) is None                      # too soon after the last change...
    assert c.update(2.5) == 1000                      # ...then clamped to the floor


def test_a_rising_estimate_raises_the_cap_within_bounds():
    c = BitrateController(2000, 1000, 12000)
    c.report("a", 50_000_000)
    assert c.update(10.0) == 12000
    c.forget("a")
    assert c.update(30.0) is None


def test_a_steady_low_estimate_of_an_unprobed_link_changes_nothing():
    c = BitrateController(8000, 500, 20000)
    for t in range(10):
        c.report("a", 300_000)                        # a delay-based estimator that never ramped up
        assert c.update(float(t * 5)) is None
    assert c.current_kbps == 8000


def test_config_env_equivalents(monkeypatch):
    monkeypatch.setenv("AGENT_TOKEN", "secret")
    monkeypatch.setenv("AGENT_SIZE", "1281x721")
    monkeypatch.setenv("AGENT_ICE_ADDRESSES", "127.0.0.1, ::1")
    config = parse_args([])
    assert config.token == "secret"
    assert (config.width, config.height) == (1280, 720)  # evened for 4:2:0
    assert config.ice_addresses == ("127.0.0.1", "::1")
    assert parse_args(["--token", "flag"]).token == "flag"


def test_media_sections_without_a_direction_get_the_sdp_default():
    sdp = "v=0\r\ns=-\r\nm=video 9 UDP 96\r\na=rtpmap:96 VP8/90000\r\nm=application 9 DTLS 5000\r\na=recvonly\r\n"
    assert with_default_directions(sdp).split("\r\n") == [
        "v=0", "s=-", "m=video 9 UDP 96", "a=sendrecv", "a=rtpmap:96 VP8/90000",
        "m=application 9 DTLS 5000", "a=recvonly", ""]


def test_nal_units_and_sps_profile_of_an_annex_b_access_unit():
    sps = bytes([0x67, 0x42, 0xC0, 0x28, 0xAA])
    pps = bytes([0x68, 0xCE, 0x3C, 0x80])
    idr = bytes([0x65, 0x88, 0x84, 0x00, 0x00])  # ends in zeros, as slice data may
    au = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + b"\x00\x00\x01" + idr
    assert [nal_type(u) for u in nal_units(au)] == [7, 8, 5]
    assert list(nal_units(au))[0] == sps and list(nal_units(au))[1] == pps
    profile = sps_profile(au)
    assert profile is not None and profile.profile_level_id == "42c028" and profile.constrained_baseline
    assert sps_profile(b"\x00\x00\x01" + idr) is None
    assert sdp_profile("42e01f").constrained_baseline and not sdp_profile("42001f").constrained_baseline
    assert not sdp_profile("640028").constrained_baseline
    with pytest.raises(ValueError):
        sdp_profile("42e0")


def test_loss_from_receiver_reports_lowers_the_cap_and_holds_it_under_that_rate():
    from session_agent.media.bitrate import CEILING_HOLD_S
    c = BitrateController(8000, 1000, 20000)
    c.report("a", 300_000)                            # its delay-based estimate never ramped up
    c.report_loss("a", 0, 1000, 0.0)
    c.report_loss("a", 95, 1800, 0.5)                 # 37 % of 800 packets: the queue overflows
    assert c.update(1.0) == 6515                      # half the loss fraction, as GCC does
    c.report_loss("a", 90, 2200, 1.5)                 # the old rate's loss, still draining: ignored
    assert c.update(1.6) is None
    c.report_loss("a", 40, 2900, 2.1)                 # still 16 % at the new rate
    assert c.update(2.2) == 5537                      # at least 15 % lower
    c.report_loss("a", 0, 3600, 3.5)
    c.report("a", 20_000_000)                         # a clear link and a high estimate again
    assert c.update(10.0) is None                     # held under 90 % of where loss was seen
    assert c.update(2.2 + CEILING_HOLD_S + 1) == 20000


def test_random_loss_and_loss_over_few_packets_change_nothing():
    c = BitrateController(8000, 1000, 20000)
    c.report_loss("a", 0, 0, 0.0)
    for n in range(1, 20):
        c.report_loss("a", 3, n * 1000, float(n))     # 1 % random loss, every report
        assert c.update(float(n)) is None
    c.report_loss("b", 0, 0, 20.0)
    c.report_loss("b", 128, 10, 21.0)                 # half of ten packets: a still screen's noise
    assert c.update(30.0) is None


def test_a_socket_that_skips_frames_sizes_the_cap_to_its_drain_rate_unless_it_stalled():
    c = BitrateController(8000, 1000, 20000)
    c.report_drained("ws", 200)                       # a frozen tab, not a link
    assert c.update(1.0) is None
    c.report_drained("ws", 4000)
    assert c.update(2.0) == 3600


def test_rtp_history_covers_a_second_at_the_highest_bitrate():
    import aiortc.rtcrtpsender
    from session_agent.media.rtphistory import MIN_PACKETS, history_size, install
    assert history_size(100) == MIN_PACKETS          # never below aiortc's own
    assert history_size(8000) == 910                 # 8 Mbit/s: ~910 packets a second
    assert history_size(10_000_000) == 32768
    old = aiortc.rtcrtpsender.RTP_HISTORY_SIZE
    try:
        assert install(20000) == aiortc.rtcrtpsender.RTP_HISTORY_SIZE == 2273
    finally:
        aiortc.rtcrtpsender.RTP_HISTORY_SIZE = old


def test_retransmissions_are_once_per_interval_and_within_a_share_of_the_cap():
    from session_agent.media.retransmit import MIN_INTERVAL_S, RetransmitBudget
    b = RetransmitBudget()
    assert b.allow(1, 0.0, 8000)
    assert not b.allow(1, 0.05, 8000)                 # asked again within a round trip
    assert b.allow(1, 0.05 + MIN_INTERVAL_S, 8000)
    # 8 Mbit/s: 150 kB/s for repairs, 30 kB at once: a NACK storm gets about 25 packets...
    sent = sum(b.allow(seq, 0.2, 8000) for seq in range(100, 300))
    assert 20 <= sent <= 30 and b.refused >= 170
    # ...and then about 125 a second.
    assert 100 <= sum(b.allow(seq, 0.2 + seq / 1000, 8000) for seq in range(1000, 2000)) <= 150


def test_without_estimates_the_cap_returns_to_the_start_after_the_hold():
    from session_agent.media.bitrate import CEILING_HOLD_S
    c = BitrateController(8000, 1000, 20000)
    c.report_drained("ws", 4000)
    assert c.update(1.0) == 3600
    assert c.update(20.0) is None                     # held
    assert c.update(2.0 + CEILING_HOLD_S) == 8000     # then the starting cap again


def test_frequent_small_receiver_reports_are_added_up():
    c = BitrateController(8000, 1000, 20000)
    c.report_loss("a", 0, 0, 0.0)
    for n in range(1, 12):
        c.report_loss("a", 128, n * 10, n / 20)       # a report with every NACK: ten packets each, half lost
    assert c.update(1.0) == 6000
