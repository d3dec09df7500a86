"""A light X application for the refinement tests and benchmark: one window, maximized by the
agent's window manager, whose background is a fixed picture: seeded noise with a smooth
photograph-like gradient on the left, small coloured text on a coloured ground on the right.
The X server repaints it from the pixmap itself, so it stays exactly as drawn.

    python still_image_app.py [WIDTHxHEIGHT] [SEED]
"""
from __future__ import annotations

import sys
import time

import numpy as np
from PIL import Image, ImageDraw
from Xlib import X, display as xdisplay


def picture(width: int, height: int, seed: int = 7) -> np.ndarray:
    """(height, width, 3) uint8 RGB: what the window shows (pure, for comparing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    smooth = np.stack([128 + 100 * np.sin(x / 37 + c) * np.cos(y / 53 + 2 * c) for c in (0.0, 1.3, 2.6)], -1)
    image = np.clip(smooth + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    half = width // 2
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([half, 0, width, height], fill=(30, 60, 170))
    for row, colour in enumerate([(255, 40, 40), (40, 255, 40), (255, 220, 0), (255, 255, 255)] * 40):
        top = 8 + row * 14
        if top + 12 > height:
            break
        draw.text((half + 8, top), "The quick brown fox jumps over the lazy dog 0123456789", fill=colour)
    return np.asarray(canvas)


def put(drawable, gc, rgb: np.ndarray) -> None:
    height, width = rgb.shape[:2]
    bgrx = np.zeros((height, width, 4), np.uint8)
    bgrx[..., 0], bgrx[..., 1], bgrx[..., 2] = rgb[..., 2], rgb[..., 1], rgb[..., 0]
    rows = max(1, 200_000 // (width * 4))  # stay under the core protocol's request size
    for top in range(0, height, rows):
        chunk = bgrx[top:top + rows]
        drawable.put_image(gc, 0, top, width, chunk.shape[0], X.ZPixmap, 24, 0, chunk.tobytes())


def main() -> None:
    d = xdisplay.Display()
    screen = d.screen()
    size = sys.argv[1] if len(sys.argv) > 1 else f"{screen.width_in_pixels}x{screen.height_in_pixels}"
    width, height = (int(v) for v in size.split("x"))
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    pixmap = screen.root.create_pixmap(width, height, screen.root_depth)
    gc = pixmap.create_gc()
    put(pixmap, gc, picture(width, height, seed))
    window = screen.root.create_window(0, 0, width, height, 0, screen.root_depth,
                                       background_pixmap=pixmap, event_mask=X.StructureNotifyMask)
    window.set_wm_name("still image")
    window.map()
    d.flush()
    while True:
        while d.pending_events():
            d.next_event()
        time.sleep(0.5)


if __name__ == "__main__":
    main()
