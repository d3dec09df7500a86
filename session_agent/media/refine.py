"""Exact pixels on a still screen: a lossless overlay the viewer paints over the video.

The video is H.264 4:2:0 at a quality the bitrate allows, so a still photograph or coloured
text is never quite the pixels on the X screen (chroma subsampling alone caps a photograph at
about 41 dB). When the screen has been still for REFINE_AFTER_S, the refiner grabs it, finds
the 64×64 tiles that differ from what it last sent, and publishes one PNG of their bounding box
(tiles it does not resend are transparent): `{"type":"refine","id":N,"x","y","width","height",
"full"}` on every input channel, the PNG at `GET /refine/N`. A viewer keeps the overlay it has
assembled and shows it over the video; on the screen's next change the agent says
`{"type":"unrefine"}` (from the damage notification, before the changed frame is even
grabbed) and the viewer hides the overlay until the next refinement patches it.

One refinement serves every viewer, so all of them must hold the same overlay: a new viewer
(or a resize) makes the next one `full`, and a viewer that misses one waits for a `full` one.
The PNG is made on a thread of its own at low priority, after the fact: a change that comes
while it works costs the video nothing, and the stale refinement is dropped.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np

log = logging.getLogger(__name__)

TILE = 64
REFINE_AFTER_S = 0.2    # still this long → refine (the issue: within about 300 ms)
KEEP = 4                # refinements kept for viewers still fetching the previous ones
PNG_LEVEL = "1"         # zlib level: 1 is about 50 ms for a 1080p screen with a photograph


# -- pure logic ---------------------------------------------------------------------------

def tile_grid(width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of TILE-sized tiles covering the screen."""
    return -(-width // TILE), -(-height // TILE)


def changed_tiles(current: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Boolean (rows, columns) mask of the tiles where two (height, width) uint32 screens
    differ; every tile when there is no previous screen or its size differs."""
    height, width = current.shape
    columns, rows = tile_grid(width, height)
    if previous is None or previous.shape != current.shape:
        return np.ones((rows, columns), dtype=bool)
    diff = (current != previous).view(np.uint8)
    per_row = np.maximum.reduceat(diff, np.arange(0, height, TILE), axis=0)
    return np.maximum.reduceat(per_row, np.arange(0, width, TILE), axis=1).astype(bool)


def bounding_box(mask: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) in pixels of the tiles set in `mask`, clipped to the screen; None if none."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    x, y = int(columns[0]) * TILE, int(rows[0]) * TILE
    x2 = min(width, (int(columns[-1]) + 1) * TILE)
    y2 = min(height, (int(rows[-1]) + 1) * TILE)
    return x, y, x2 - x, y2 - y


def overlay_rgba(screen_bgra: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The RGBA pixels of `box`: the screen where a tile is set (opaque), transparent black
    elsewhere (so it costs nothing in the PNG and leaves the viewer's overlay as it was)."""
    x, y, w, h = box
    region = screen_bgra[y:y + h, x:x + w]
    rgba = np.empty((h, w, 4), dtype=np.uint8)
    rgba[..., 0] = region[..., 2]
    rgba[..., 1] = region[..., 1]
    rgba[..., 2] = region[..., 0]
    opaque = np.repeat(np.repeat(mask, TILE, axis=0), TILE, axis=1)[y:y + h, x:x + w]
    rgba[..., 3] = np.where(opaque, 255, 0)
    rgba[~opaque] = 0
    return rgba


def encode_png(rgba: np.ndarray) -> bytes:
    height, width = rgba.shape[:2]
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "rgba"
    ctx.options = {"compression_level": PNG_LEVEL}
    ctx.open()
    packets = ctx.encode(av.VideoFrame.from_ndarray(rgba, "rgba"))
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


@dataclass(frozen=True)
class Refinement:
    id: int
    x: int
    y: int
    width: int
    height: int
    full: bool
    png: bytes

    def message(self) -> dict:
        return {"type": "refine", "id": self.id, "x": self.x, "y": self.y, "width": self.width,
                "height": self.height, "full": self.full, "bytes": len(self.png)}


# -- the thread ---------------------------------------------------------------------------

Grab = Callable[[], np.ndarray]          # the screen now, (height, width, 4) BGRA
Publish = Callable[[dict], None]         # called on the refiner's thread


class Refiner:
    """Follows the pipeline's damage notifications; refines once the screen is still."""

    def __init__(self, grab: Grab, publish: Publish, *, after_s: float = REFINE_AFTER_S,
                 on_made: Callable[[Refinement, float], None] | None = None) -> None:
        self._grab = grab
        self._publish = publish
        self._after_s = after_s
        self._on_made = on_made
        self._cond = threading.Condition()
        self._generation = 0          # bumped by every change of the screen
        self._refined_generation = -1
        self._changed_at = 0.0
        self._active = False          # someone is watching
        self._shown = False           # viewers show an overlay: the next change must hide it
        self._stop = False
        self._reference: np.ndarray | None = None  # the screen as the overlays hold it
        self._full = True
        self._next_id = 1
        self._kept: OrderedDict[int, Refinement] = OrderedDict()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="refiner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def get(self, refinement_id: int) -> Refinement | None:
        with self._cond:
            return self._kept.get(refinement_id)

    def changed(self) -> None:
        """The screen changed (watcher thread; cheap)."""
        with self._cond:
            self._generation += 1
            self._changed_at = time.monotonic()
            hide = self._shown
            self._shown = False
            self._cond.notify()
        if hide:
            self._publish({"type": "unrefine"})

    def reset(self) -> None:
        """A viewer joined or the screen was resized: the next refinement covers everything."""
        with self._cond:
            self._full = True
            self._reference = None
            self._generation += 1
            self._changed_at = time.monotonic()
            self._cond.notify()

    def set_active(self, active: bool) -> None:
        with self._cond:
            self._active = active
            if not active:  # nobody watches: keep nothing
                self._reference = None
                self._kept.clear()
                self._full = True
            self._cond.notify()

    def _due(self) -> float | None:
        """Seconds until a refinement is due, 0 if now, None if none is wanted. Holds the lock."""
        if not self._active or self._generation == self._refined_generation:
            return None
        return max(0.0, self._changed_at + self._after_s - time.monotonic())

    def _run(self) -> None:
        try:  # below the encode thread: a refinement may wait, a frame may not
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
        while True:
            with self._cond:
                while not self._stop:
                    wait = self._due()
                    if wait == 0.0:
                        break
                    self._cond.wait(wait)
                if self._stop:
                    return
                generation, full, reference = self._generation, self._full, self._reference
            try:
                self._refine(generation, full, reference)
            except Exception:  # the overlay is an extra: never let it take the agent down
                log.exception("refinement failed", extra={"action": "refine_failed"})
                with self._cond:
                    self._refined_generation = generation

    def _refine(self, generation: int, full: bool, reference: np.ndarray | None) -> None:
        started = time.monotonic()
        screen = self._grab()
        height, width = screen.shape[:2]
        pixels = screen.view(np.uint32).reshape(height, width)
        mask = changed_tiles(pixels, None if full else reference)
        box = bounding_box(mask, width, height)
        png = encode_png(overlay_rgba(screen, mask, box)) if box is not None else b""
        with self._cond:
            if generation != self._generation or not self._active:
                return  # the screen changed meanwhile: this one is stale, the next will come
            self._refined_generation = generation
            self._reference = pixels.copy()
            self._full = False
            if box is None:
                # Nothing differs from what the overlays hold: show it again as it is.
                if self._kept:
                    self._shown = True
                    message = {**next(reversed(self._kept.values())).message(), "again": True}
                else:
                    return
            else:
                refinement = Refinement(self._next_id, *box, full, png)
                self._next_id += 1
                self._kept[refinement.id] = refinement
                while len(self._kept) > KEEP:
                    self._kept.popitem(last=False)
                self._shown = True
                message = refinement.message()
        self._publish(message)
        if box is not None and self._on_made is not None:
            self._on_made(refinement, time.monotonic() - started)
