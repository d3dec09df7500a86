"""Painting on a benchmark's X display: full-screen motion in a process of its own, and
single flashes from the benchmark's process over one kept X connection."""
from __future__ import annotations

import time

from Xlib import X, display as xdisplay

# argv: display, seconds. Three large random rectangles per frame, 30 frames a second.
PAINTER = """
import random, sys, time
from Xlib import X, display
d = display.Display(sys.argv[1]); s = d.screen(); root = s.root
w, h = s.width_in_pixels, s.height_in_pixels
gc = root.create_gc(subwindow_mode=X.IncludeInferiors)
end = time.monotonic() + float(sys.argv[2]); nxt = time.monotonic()
while time.monotonic() < end:
    for _ in range(3):
        rw, rh = random.randint(w // 4, w // 2), random.randint(h // 4, h // 2)
        gc.change(foreground=random.randint(0, 0xFFFFFF))
        root.fill_rectangle(gc, random.randint(0, w - rw), random.randint(0, h - rh), rw, rh)
    d.sync()
    nxt += 1 / 30
    time.sleep(max(0, nxt - time.monotonic()))
"""


class Flasher:
    """Fills the whole screen with one colour, over a connection opened once (opening one per
    flash would add its cost to every measurement)."""

    def __init__(self, display: str) -> None:
        self._d = xdisplay.Display(display)
        screen = self._d.screen()
        self._root = screen.root
        self.size = (screen.width_in_pixels, screen.height_in_pixels)
        self._gc = self._root.create_gc(subwindow_mode=X.IncludeInferiors)

    def flash(self, rgb: tuple[int, int, int]) -> float:
        """Paint; returns the epoch time (time.time()) just before the request was sent."""
        self._gc.change(foreground=(rgb[0] << 16) | (rgb[1] << 8) | rgb[2])
        t0 = time.time()
        self._root.fill_rectangle(self._gc, 0, 0, *self.size)
        self._d.sync()
        return t0

    def close(self) -> None:
        self._d.close()
