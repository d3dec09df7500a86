"""Screen capture with MIT-SHM (mss's XCB backend) into a reusable BGRA video frame.

mss's grab() copies the shared-memory segment into a new bytearray on every call (8 MB a frame
at 1920x1080, then copied again into the frame). The hot path instead asks the server for the
image in that segment and copies it once, straight into the reused frame: no allocation per
frame. It uses mss 10.2's XShmGetImage backend attributes; where they are not there (another
mss version, no MIT-SHM) the public grab() is used.
"""
from __future__ import annotations

import av
import mss

try:
    from mss.linux import xcb as _xcb
    from mss.linux.base import ALL_PLANES as _ALL_PLANES
except ImportError:  # not the XCB backend
    _xcb = None


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
            if self._grab_shm(width, height, pix_fmt):
                return self._frame
            shot = self._grabber().grab({"left": 0, "top": 0, "width": width, "height": height})
        except (mss.ScreenShotError, *((_xcb.XError,) if _xcb else ())):
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
        frame = self._frame_of(width, height, pix_fmt)
        self._fill(frame, shot.raw)
        return frame

    def _grab_shm(self, width: int, height: int, pix_fmt: str) -> bool:
        """The screen into the reused frame through mss's shared-memory segment; False where
        that segment is not there or too small (then mss's own grab() handles it)."""
        impl = getattr(self._grabber(), "_impl", None)
        buf, segment = getattr(impl, "_buf", None), getattr(impl, "_shmseg", None)
        size = width * height * 4
        if _xcb is None or buf is None or segment is None or size > getattr(impl, "_bufsize", 0):
            return False
        _xcb.shm_get_image(impl.conn, impl.drawable, 0, 0, width, height, _ALL_PLANES,
                           _xcb.ImageFormat.ZPixmap, segment, 0)
        frame = self._frame_of(width, height, pix_fmt)
        # Views released at once: mss cannot close the segment while one is exported.
        with memoryview(buf) as whole, whole[:size] as pixels:
            self._fill(frame, pixels)
        return True

    def _frame_of(self, width: int, height: int, pix_fmt: str) -> av.VideoFrame:
        frame = self._frame
        if frame is None or (frame.width, frame.height, frame.format.name) != (width, height, pix_fmt):
            # bgra and bgr0 share a memory layout; NVENC takes bgr0 without a colour conversion.
            frame = self._frame = av.VideoFrame(width, height, pix_fmt)
        return frame

    @staticmethod
    def _fill(frame: av.VideoFrame, raw) -> None:
        plane = frame.planes[0]
        stride = frame.width * 4
        if plane.line_size == stride:
            plane.update(raw)
        else:  # padded rows: copy row by row
            view = memoryview(plane)
            raw = memoryview(raw)
            for row in range(frame.height):
                view[row * plane.line_size:row * plane.line_size + stride] = raw[row * stride:(row + 1) * stride]

    def close(self) -> None:
        """Also drops the frame buffer: a capture nobody uses holds no screen-sized memory."""
        self._frame = None
        if self._sct is not None:
            try:
                self._sct.close()
            except Exception:
                pass
            self._sct = None
