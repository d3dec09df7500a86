"""Screen capture with MIT-SHM (mss's XCB backend) into a reusable BGRA video frame."""
from __future__ import annotations

import av
import mss


class DisplayGone(Exception):
    """The X server cannot be reached any more."""


class ScreenCapture:
    """Grabs the top-left `width`x`height` of the screen. Used from one thread only (XCB)."""

    def __init__(self, display: str) -> None:
        self._display = display
        self._sct: mss.MSS | None = None
        self._frame: av.VideoFrame | None = None

    def _grabber(self) -> mss.MSS:
        if self._sct is None:
            try:
                self._sct = mss.MSS(display=self._display)
            except Exception as exc:
                raise DisplayGone(f"cannot open display {self._display}: {exc}") from exc
        return self._sct

    def grab(self, width: int, height: int, pix_fmt: str = "bgra") -> av.VideoFrame:
        """The current screen content, at most `width`x`height` from the top left. The frame
        object is reused: copy before keeping it."""
        try:
            shot = self._grabber().grab({"left": 0, "top": 0, "width": width, "height": height})
        except mss.ScreenShotError:
            # The screen changed size since connecting: mss sized its shared memory then, and
            # the size we were told may already be stale (a resize passes through intermediate
            # sizes). Reconnect and take what the screen has now.
            self.close()
            try:
                root = self._grabber().monitors[0]
                width, height = min(width, root["width"]), min(height, root["height"])
                width, height = width - width % 2, height - height % 2
                shot = self._grabber().grab({"left": 0, "top": 0, "width": width, "height": height})
            except Exception as exc:
                self.close()
                raise DisplayGone(f"capture failed: {exc}") from exc
        except Exception as exc:
            self.close()
            raise DisplayGone(f"capture failed: {exc}") from exc
        frame = self._frame
        if frame is None or (frame.width, frame.height, frame.format.name) != (width, height, pix_fmt):
            # bgra and bgr0 share a memory layout; NVENC takes bgr0 without a colour conversion.
            frame = self._frame = av.VideoFrame(width, height, pix_fmt)
        plane = frame.planes[0]
        if plane.line_size == width * 4:
            plane.update(shot.raw)
        else:  # padded rows: copy row by row
            view = memoryview(plane)
            raw = memoryview(shot.raw)
            stride = width * 4
            for row in range(height):
                view[row * plane.line_size:row * plane.line_size + stride] = raw[row * stride:(row + 1) * stride]
        return frame

    def close(self) -> None:
        if self._sct is not None:
            try:
                self._sct.close()
            except Exception:
                pass
            self._sct = None
