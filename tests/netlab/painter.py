"""Screen motion for the lab: large random rectangles over the whole screen at 30 Hz (as
bench/agent_media.py paints), and a marker square in the top-left corner whose colour changes
at random moments, so a viewer that reports the corner's colour per frame gives the
glass-to-glass latency of each change.

    python -m tests.netlab.painter DISPLAY SECONDS [--markers] [--noise N]

`--noise N` also paints N patches of random pixels (1/6 of the screen each) per tick: content
that does not compress, so the stream needs several Mbit/s, as photos or video being edited do.
With `--markers` one JSON line per marker change on stdout: `{"t": CLOCK_MONOTONIC, "wall":
Unix time (what a browser's clock can be compared with), "rgb"}`
(taken after the X server has the change, like bench/agent_media.py's flashes).
"""
from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
from Xlib import X, display

MARKER = 6  # the marker is 1/MARKER of the screen's width and height
PROBE = (1 / (2 * MARKER), 1 / (2 * MARKER))  # where viewers look: the marker's centre (fractions)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("display")
    p.add_argument("seconds", type=float)
    p.add_argument("--markers", action="store_true")
    p.add_argument("--hz", type=float, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--noise", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    noise = np.random.default_rng(a.seed)
    d = display.Display(a.display)
    root = d.screen().root
    gc = root.create_gc(subwindow_mode=X.IncludeInferiors)
    w, h = d.screen().width_in_pixels, d.screen().height_in_pixels
    mw, mh = w // MARKER, h // MARKER
    end = time.monotonic() + a.seconds
    tick = time.monotonic()
    next_marker = tick + rng.uniform(0.15, 0.4)
    while time.monotonic() < end:
        for _ in range(3):
            rw, rh = rng.randint(w // 4, w // 2), rng.randint(h // 4, h // 2)
            gc.change(foreground=rng.randint(0, 0xFFFFFF))
            # Rectangles stay clear of the marker's corner.
            x, y = rng.randint(0, w - rw), rng.randint(0, h - rh)
            if x < mw and y < mh:
                x = mw
            root.fill_rectangle(gc, x, y, rw, rh)
        for _ in range(a.noise):
            pixels = noise.integers(0, 256, size=mw * mh * 4, dtype=np.uint8).tobytes()
            root.put_image(gc, rng.randint(mw, w - mw), rng.randint(0, h - mh), mw, mh, X.ZPixmap,
                           d.screen().root_depth, 0, pixels)
        if a.markers and time.monotonic() >= next_marker:
            rgb = (rng.randrange(40, 256), rng.randrange(0, 256), rng.randrange(0, 256))
            gc.change(foreground=(rgb[0] << 16) | (rgb[1] << 8) | rgb[2])
            root.fill_rectangle(gc, 0, 0, mw, mh)
            d.sync()
            print(json.dumps({"t": time.monotonic(), "wall": time.time(), "rgb": rgb}), flush=True)
            next_marker = time.monotonic() + rng.uniform(0.15, 0.4)
        d.sync()
        tick += 1 / a.hz
        time.sleep(max(0.0, tick - time.monotonic()))


if __name__ == "__main__":
    main()
