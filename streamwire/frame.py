"""The WebSocket transport's binary message (SPEC "WebSocket transport"): a 16-byte header,
then one H.264 access unit in Annex-B form (pure)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

# kind, flags, width, height, reserved, capture time (epoch microseconds); big-endian
HEADER = struct.Struct(">BBHHHQ")
KIND_VIDEO = 1
FLAG_KEYFRAME = 0x01


@dataclass(frozen=True)
class FrameHeader:
    kind: int
    keyframe: bool
    width: int
    height: int
    captured_us: int


def pack_video(access_unit: bytes, *, keyframe: bool, width: int, height: int, captured_us: int) -> bytes:
    if not (0 < width < 65536 and 0 < height < 65536):
        raise ValueError(f"frame size {width}x{height} does not fit the header")
    return HEADER.pack(KIND_VIDEO, FLAG_KEYFRAME if keyframe else 0, width, height, 0, captured_us) + access_unit


def unpack_header(message: bytes) -> FrameHeader:
    """The header of a binary message; ValueError when it is shorter than one."""
    if len(message) < HEADER.size:
        raise ValueError(f"a binary message has at least {HEADER.size} bytes, got {len(message)}")
    kind, flags, width, height, _, captured_us = HEADER.unpack_from(message)
    return FrameHeader(kind, bool(flags & FLAG_KEYFRAME), width, height, captured_us)


def is_keyframe(message: bytes) -> bool:
    """Whether a binary message is a video keyframe, without parsing the rest (a relay's test)."""
    return len(message) >= HEADER.size and bool(message[1] & FLAG_KEYFRAME)
