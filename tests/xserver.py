"""Test helpers for real X servers: start an Xvfb on a free display number and paint on it."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from Xlib import X, display as xdisplay


@dataclass
class Xvfb:
    display: str
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_xvfb(size: str = "1280x720") -> Xvfb:
    """Start Xvfb on a display number it picks itself (-displayfd), so parallel runs never collide."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size}x24", "-nolisten", "tcp", "-noreset",
         "+extension", "DAMAGE", "+extension", "RANDR"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        raise RuntimeError("Xvfb did not start")
    return Xvfb(f":{number}", proc)


def fill_root(display_name: str, rgb: tuple[int, int, int],
              rect: tuple[int, int, int, int] | None = None) -> None:
    """Paint a solid rectangle (default: the whole screen) on the root window."""
    d = xdisplay.Display(display_name)
    try:
        screen = d.screen()
        root = screen.root
        pixel = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        gc = root.create_gc(foreground=pixel, subwindow_mode=X.IncludeInferiors)
        x, y, w, h = rect or (0, 0, screen.width_in_pixels, screen.height_in_pixels)
        root.fill_rectangle(gc, x, y, w, h)
        gc.free()
        d.sync()
    finally:
        d.close()
