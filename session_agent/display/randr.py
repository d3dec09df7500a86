"""Change the X screen size with RandR.

Xvfb (RandR 1.5) starts with one output "screen", one CRTC and one mode: the `-screen` size,
which is also the largest screen size it allows (its framebuffer). `xrandr --fb` alone fails
(the CRTC would no longer fit) and `xrandr --newmode` with a zero clock is rejected, so this does
what works: create a mode WxH (zero timings are fine on Xvfb), add it to the output, then
RRSetScreenSize and RRSetCrtcConfig in the order that keeps the CRTC inside the screen. Modes
created for earlier sizes are removed, so repeated resizes do not pile up modes.
RRScreenChangeNotify then reaches every client that selected it (capture, window manager).
The screen's size in millimetres says its DPI (96 unless the viewer says otherwise: `dpi`).
"""
from __future__ import annotations

import re

from Xlib import X
from Xlib.display import Display

MIN_SIZE = (64, 64)  # smaller is no use to anybody and trips up encoders
DEFAULT_DPI = 96


def clamp_size(width: int, height: int, maximum: tuple[int, int]) -> tuple[int, int]:
    """Clamp to [MIN_SIZE, maximum] and round down to even numbers (H.264 needs even sizes)."""
    w = max(MIN_SIZE[0], min(width, maximum[0]))
    h = max(MIN_SIZE[1], min(height, maximum[1]))
    return w - w % 2, h - h % 2


def screen_size(display: Display) -> tuple[int, int]:
    """The current size (the connection's setup data keeps the size at connect time)."""
    geom = display.screen().root.get_geometry()
    return geom.width, geom.height


def max_screen_size(display: Display) -> tuple[int, int]:
    rng = display.screen().root.xrandr_get_screen_size_range()
    return rng.max_width, rng.max_height


def set_screen_size(display: Display | str, width: int, height: int,
                    limit: tuple[int, int] | None = None, dpi: int | None = None) -> tuple[int, int]:
    """Resize the screen to (width, height), clamped by clamp_size to the framebuffer and to
    `limit` (the agent's --max-size) when given; returns the size set. The millimetres are at
    `dpi`; without it a new size gets DEFAULT_DPI and the same size keeps what it has."""
    if isinstance(display, str):
        d = Display(display)
        # The mode we create belongs to this connection: without RetainPermanent the server
        # frees it when we disconnect, and the screen falls back to its old size.
        d.set_close_down_mode(X.RetainPermanent)
        try:
            return set_screen_size(d, width, height, limit, dpi)
        finally:
            d.close()
    # The server treats a client that never asked for the RandR version as RandR 1.0 and
    # silently ignores the 1.2 requests below.
    display.xrandr_query_version()
    root = display.screen().root
    fb_w, fb_h = max_screen_size(display)
    lim_w, lim_h = limit or (fb_w, fb_h)
    w, h = clamp_size(width, height, (min(fb_w, lim_w), min(fb_h, lim_h)))
    res = root.xrandr_get_screen_resources()
    output, crtc = res.outputs[0], res.crtcs[0]
    info = display.xrandr_get_crtc_info(crtc, res.config_timestamp)
    if (info.width, info.height) == (w, h) and screen_size(display) == (w, h):
        if dpi is not None and _current_mm(display) != _mm(w, h, dpi):  # the same size at another DPI
            root.xrandr_set_screen_size(w, h, *_mm(w, h, dpi))
            display.sync()
        return w, h
    name = f"{w}x{h}"
    mode = next((m.id for m in res.modes if (m.width, m.height) == (w, h)), None)
    if mode is None:
        mode = root.xrandr_create_mode(_mode_info(w, h, name), name).mode
    display.xrandr_add_output_mode(output, mode)
    # the CRTC must fit the screen at every step: grow the screen first, shrink it last
    grown = max(w, info.width), max(h, info.height)
    root.xrandr_set_screen_size(*grown, *_mm(*grown, dpi))
    display.xrandr_set_crtc_config(crtc, res.config_timestamp, 0, 0, mode, info.rotation, [output])
    root.xrandr_set_screen_size(w, h, *_mm(w, h, dpi))
    _drop_old_modes(display, output, keep={mode, *_original_modes(res)})
    display.sync()
    return w, h


def _mode_info(w: int, h: int, name: str) -> dict[str, int]:
    return dict(id=0, width=w, height=h, dot_clock=0, h_sync_start=w, h_sync_end=w, h_total=w,
                h_skew=0, v_sync_start=h, v_sync_end=h, v_total=h, name_length=len(name), flags=0)


def _mm(w: int, h: int, dpi: int | None) -> tuple[int, int]:
    dpi = dpi or DEFAULT_DPI
    return round(w * 25.4 / dpi), round(h * 25.4 / dpi)


def _current_mm(display: Display) -> tuple[int, int]:
    """The screen's millimetres now (the connection's setup data has those at connect time)."""
    info = display.screen().root.xrandr_get_screen_info()
    size = info.sizes[info.size_id] if info.size_id < len(info.sizes) else None
    return (size.width_in_millimeters, size.height_in_millimeters) if size else (0, 0)


def _original_modes(res: object) -> set[int]:
    # modes like the ones we create (zero timings, a WxH name) are ours to drop; others came
    # from somebody else. Xvfb's own mode looks like ours, _drop_old_modes keeps it by size.
    names, out, pos = res.mode_names, set(), 0
    for m in res.modes:
        name = names[pos:pos + m.name_length]
        pos += m.name_length
        if m.dot_clock or not re.fullmatch(r"\d+x\d+", name):
            out.add(m.id)
    return out


def _drop_old_modes(display: Display, output: int, keep: set[int]) -> None:
    root = display.screen().root
    res = root.xrandr_get_screen_resources()
    maximum = max_screen_size(display)
    for m in res.modes:
        if m.id in keep or (m.width, m.height) == maximum:
            continue
        display.xrandr_delete_output_mode(output, m.id)
        display.xrandr_destroy_mode(m.id)
