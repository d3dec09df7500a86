"""The bare X application of bench/motion_to_photon.py: a full-screen white window that paints a
black square where it is clicked, at once (one fill request, flushed). What the stream adds to a
click when the application itself costs nothing.

    python bench/click_window.py        (on $DISPLAY; started as the session's application)
"""
from __future__ import annotations

from Xlib import X, display

SQUARE = 24


def main() -> None:
    d = display.Display()
    screen = d.screen()
    root = screen.root
    window = root.create_window(0, 0, screen.width_in_pixels, screen.height_in_pixels, 0, screen.root_depth,
                                background_pixel=screen.white_pixel, override_redirect=True,
                                event_mask=X.ButtonPressMask)
    black = window.create_gc(foreground=screen.black_pixel)
    window.map()
    d.flush()
    while True:
        event = d.next_event()
        if event.type == X.ButtonPress:
            window.fill_rectangle(black, event.event_x - SQUARE // 2, event.event_y - SQUARE // 2, SQUARE, SQUARE)
            d.flush()


if __name__ == "__main__":
    main()
