"""The WebSocket transport's pure parts: the frame header's bytes and the per-socket gate."""
from __future__ import annotations

import pytest

from streamwire.backpressure import FLOOR_BYTES, KEYFRAME_RETRY_S, SendGate
from streamwire.frame import HEADER, is_keyframe, pack_video, unpack_header


def test_header_layout_is_the_specs():
    au = b"\x00\x00\x00\x01\x67\x42\xc0\x1f"
    data = pack_video(au, keyframe=True, width=1920, height=1080, captured_us=0x0102030405060708)
    assert HEADER.size == 16
    assert data[:16] == bytes([1, 1, 0x07, 0x80, 0x04, 0x38, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert data[16:] == au
    delta = pack_video(b"x", keyframe=False, width=2, height=2, captured_us=5)
    assert delta[1] == 0 and delta[6:8] == b"\x00\x00"
    header = unpack_header(data)
    assert (header.kind, header.keyframe, header.width, header.height, header.captured_us) == \
        (1, True, 1920, 1080, 0x0102030405060708)
    # the relay's test, without parsing: a short message is no keyframe
    assert is_keyframe(data) and not is_keyframe(delta) and not is_keyframe(data[:15])


def test_header_refuses_what_it_cannot_carry():
    with pytest.raises(ValueError):
        pack_video(b"", keyframe=False, width=70000, height=10, captured_us=0)
    with pytest.raises(ValueError):
        unpack_header(b"\x01" * 15)


def test_gate_starts_at_a_keyframe():
    gate = SendGate()
    assert not gate.admit(1000, False, 0)
    assert gate.admit(50_000, True, 0)
    assert gate.admit(1000, False, 0)


def test_gate_drops_deltas_past_two_frames_and_resumes_with_a_keyframe():
    gate = SendGate()
    gate.admit(40_000, True, 0)
    for _ in range(20):
        assert gate.admit(30_000, False, 0)      # a steady 30 kB per frame: limit 60 kB
    assert gate.limit == 60_000
    assert gate.admit(30_000, False, 50_000)
    assert not gate.admit(30_000, False, 70_000)  # backed up: dropped
    assert gate.need_keyframe
    assert not gate.admit(30_000, False, 0)      # no delta after a gap: the decoder would break
    assert not gate.want_keyframe(70_000, 10.0)  # not while the backlog is still there
    assert gate.want_keyframe(0, 10.0)           # drained: ask for one...
    assert not gate.want_keyframe(0, 10.1)       # ...once, and again only if it never came
    assert gate.want_keyframe(0, 10.0 + KEYFRAME_RETRY_S)
    assert not gate.admit(90_000, True, 70_000)  # a keyframe into a full socket waits too
    assert gate.admit(90_000, True, 0)
    assert gate.admit(30_000, False, 0) and not gate.need_keyframe
    assert gate.dropped == 3


def test_a_large_keyframe_draining_does_not_cost_the_deltas_behind_it():
    gate = SendGate()
    assert gate.admit(300_000, True, 0)
    # The socket still holds most of the keyframe: deltas go on, judged by their own backlog.
    assert gate.admit(2_000, False, 290_000)
    assert gate.admit(2_000, False, 280_000)
    assert not gate.need_keyframe
    # Deltas that pile up behind it are latency all the same.
    for _ in range(40):
        gate.admit(2_000, False, 280_000)
    assert gate.need_keyframe


def test_gate_floor_for_a_still_screen():
    gate = SendGate()
    gate.admit(20_000, True, 0)
    for _ in range(10):
        gate.admit(200, False, 0)
    assert gate.limit == FLOOR_BYTES
    assert gate.admit(200, False, FLOOR_BYTES - 1)
