"""The X cursor shape as a message for peers, so the browser draws the cursor itself.

XFixes reports every change of the displayed cursor (DisplayCursorNotify); the image comes
from XFixesGetCursorImage as premultiplied ARGB and goes out as a PNG data URL with its hotspot,
ready for CSS `cursor: url(...) xhot yhot, auto`.
"""
from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

from Xlib.display import Display
from Xlib.ext import xfixes

from session_agent.display.xevents import is_extension_event


def png_rgba(width: int, height: int, rgba: bytes) -> bytes:
    """Encode 8-bit RGBA pixels, row-major, as a PNG (no filters: cursors are tiny)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    stride = width * 4
    rows = b"".join(b"\0" + rgba[y * stride:(y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def argb_to_rgba(pixels: list[int]) -> bytes:
    """XFixes pixels are premultiplied ARGB words; PNG wants straight RGBA bytes."""
    out = bytearray(len(pixels) * 4)
    for i, p in enumerate(pixels):
        a = p >> 24 & 0xFF
        if a:
            r, g, b = p >> 16 & 0xFF, p >> 8 & 0xFF, p & 0xFF
            out[i * 4:i * 4 + 4] = (min(255, r * 255 // a), min(255, g * 255 // a),
                                    min(255, b * 255 // a), a)
    return bytes(out)


def cursor_message(width: int, height: int, xhot: int, yhot: int, pixels: list[int]) -> dict[str, Any]:
    png = png_rgba(width, height, argb_to_rgba(pixels))
    return {"type": "cursor", "width": width, "height": height, "xhot": xhot, "yhot": yhot,
            "image": "data:image/png;base64," + base64.b64encode(png).decode()}


class CursorWatcher:
    """Turns DisplayCursorNotify events into `cursor` messages, skipping repeats of the shape
    already sent. Messages are kept by cursor serial: applications switch between a few cursors
    all the time, and each is fetched and encoded once."""

    CACHE = 64

    def __init__(self, display: Display) -> None:
        self._d = display
        self.current: dict[str, Any] | None = None
        self._by_serial: dict[int, dict[str, Any]] = {}
        display.xfixes_select_cursor_input(display.screen().root, xfixes.XFixesDisplayCursorNotifyMask)

    def read(self, serial: int | None = None) -> dict[str, Any] | None:
        """The cursor now: its message if it differs from the last one sent, else None."""
        msg = self._by_serial.get(serial) if serial is not None else None
        if msg is None:
            img = self._d.xfixes_get_cursor_image(self._d.screen().root)
            msg = cursor_message(img.width, img.height, img.xhot, img.yhot, list(img.cursor_image))
            if len(self._by_serial) >= self.CACHE:
                self._by_serial.clear()
            self._by_serial[img.cursor_serial] = msg
        if msg == self.current:
            return None
        self.current = msg
        return msg

    def handle(self, ev: Any) -> dict[str, Any] | None:
        if is_extension_event(self._d, ev, "DisplayCursorNotify"):
            return self.read(ev.cursor_serial)
        return None
