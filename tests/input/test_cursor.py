"""Cursor shape changes reach peers as `cursor` messages with a PNG image and hotspot."""
from __future__ import annotations

import base64
import json
import struct
import zlib

from Xlib import X
from Xlib.display import Display

from session_agent.display.cursor import argb_to_rgba, png_rgba
from session_agent.input.session import InputSession
from tests.input.recorder import Peer
from tests.xserver import Xvfb

XC_CROSSHAIR = 34  # X cursor font glyphs
XC_HAND2 = 60


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and raw RGBA of an unfiltered 8-bit RGBA PNG (what png_rgba writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
            assert body[8:10] == b"\x08\x06"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows = [raw[y * (width * 4 + 1):(y + 1) * (width * 4 + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, b"".join(row[1:] for row in rows)


def test_png_round_trip() -> None:
    rgba = bytes(range(256)) * 3  # 8x24 pixels
    assert decode_png(png_rgba(8, 24, rgba)) == (8, 24, rgba)


def test_premultiplied_argb_becomes_straight_rgba() -> None:
    # 50% opaque pure red, premultiplied: red 0x80; fully transparent; opaque white
    assert argb_to_rgba([0x80800000, 0x00000000, 0xFFFFFFFF]) == bytes(
        [255, 0, 0, 0x80, 0, 0, 0, 0, 255, 255, 255, 255])


def font_cursor_window(d: Display, glyph: int, x: int) -> None:
    font = d.open_font("cursor")
    cursor = font.create_glyph_cursor(font, glyph, glyph + 1, (0, 0, 0), (0xFFFF, 0xFFFF, 0xFFFF))
    screen = d.screen()
    window = screen.root.create_window(x, 0, 100, 100, 0, screen.root_depth, X.InputOutput,
                                       X.CopyFromParent, override_redirect=True, cursor=cursor)
    window.map()
    d.sync()


async def test_cursor_changes_are_sent_to_peers(session: InputSession, xvfb: Xvfb) -> None:
    d = Display(xvfb.display)
    try:
        font_cursor_window(d, XC_CROSSHAIR, 0)
        font_cursor_window(d, XC_HAND2, 200)
        peer = Peer()
        ch = session.channel(peer.send)
        first = peer.of_type("cursor")[0]
        ch.on_message(json.dumps({"type": "pointer", "x": 50, "y": 50}))
        await peer.wait_for(lambda got: len([m for m in got if m["type"] == "cursor"]) == 2)
        ch.on_message(json.dumps({"type": "pointer", "x": 250, "y": 50}))
        await peer.wait_for(lambda got: len([m for m in got if m["type"] == "cursor"]) == 3)
        shapes = peer.of_type("cursor")[1:]
        assert len({m["image"] for m in [first, *shapes]}) == 3
        for msg in shapes:
            png = base64.b64decode(msg["image"].removeprefix("data:image/png;base64,"))
            width, height, rgba = decode_png(png)
            assert (width, height) == (msg["width"], msg["height"])
            assert 0 <= msg["xhot"] < width and 0 <= msg["yhot"] < height
            assert any(rgba[3::4])  # something visible
        # back over the crosshair: the same shape again is sent again (it changed back)
        ch.on_message(json.dumps({"type": "pointer", "x": 60, "y": 60}))
        await peer.wait_for(lambda got: len([m for m in got if m["type"] == "cursor"]) == 4)
        assert peer.of_type("cursor")[-1] == shapes[0]
    finally:
        d.close()
