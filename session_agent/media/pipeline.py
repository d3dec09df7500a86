"""Capture → colour conversion → encode, on a thread of its own, once for every peer.

The thread sleeps until the screen changes (XDamage), a keyframe is wanted, or a periodic
refresh is due. It always encodes the newest screen content: while it works, further damage
just marks the screen dirty again, so latency never piles up in a queue. Packets go to the
asyncio loop with call_soon_threadsafe and from there to every subscribed track.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
import threading
import time
from typing import Callable, NamedTuple

import av

from .bitrate import BitrateController
from .capture import DisplayGone, ScreenCapture
from .damage import ScreenWatcher
from .encoder import TIME_BASE, VP8, EncoderKind, VideoEncoder
from .refine import Refiner

log = logging.getLogger(__name__)

# After a change, the unchanged screen is encoded again until the encoder has converged (its
# output is tiny) or this many frames: a frame squeezed by the one-frame VBV gets refined, and
# clients whose jitter buffer releases a frame only when the next one starts (aiortc's) see
# the final picture.
SETTLE_FRAMES = 8
CONVERGED_BYTES = 600
# Keyframe requests (PLI/FIR from every peer, joins) closer together than this share one.
KEYFRAME_DEBOUNCE_S = 0.25
# How long a thread that wants the GIL waits before the running one must hand it over
# (CPython's default: 5 ms). The watcher, the encode thread and the loop (aiortc packetizing a
# frame in Python) pass the GIL back and forth at every step of a frame; at 5 ms a woken
# thread can lose milliseconds per step to whichever runs Python at that moment.
GIL_SWITCH_S = 0.001

Subscriber = Callable[[av.Packet], None]


class FrameStamp(NamedTuple):
    """What every subscriber learns about a packet besides its bytes (`packet.opaque`)."""
    encoded_at: float   # time.monotonic() when the encoder returned it
    captured_us: int    # when the screen looked like this: epoch microseconds (SPEC "WebSocket transport")
    width: int
    height: int

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _libc = None


def _trim_heap() -> None:
    """Return the freed megabyte-sized frame buffers to the OS. glibc keeps them on the heap
    for reuse, which is what we want while the screen moves, not once it is still."""
    if _libc is not None:
        _libc.malloc_trim(0)


class MediaPipeline:
    def __init__(self, display: str, h264: EncoderKind, *, max_fps: int, refresh_s: float,
                 bitrate: BitrateController, metrics, on_display_lost: Callable[[str], None],
                 refine_s: float = 0.0) -> None:
        self.display = display
        self.h264 = h264
        self.min_interval = 1.0 / max_fps
        self.refresh_s = refresh_s
        self.bitrate = bitrate
        self.metrics = metrics
        self._on_display_lost = on_display_lost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._dirty = True
        self._damage_at = 0.0  # when the screen first changed since the last grab (monotonic)
        self._keyframe_wanted = False
        self._keyframe_allowed_at = 0.0
        self._size = (0, 0)
        self._subscribers: dict[str, set[Subscriber]] = {}   # codec → callbacks, loop thread only
        self._codecs: frozenset[str] = frozenset()             # what the encode thread serves
        self._subscribed_at = 0.0  # when the first viewer after none subscribed (monotonic)
        self._watcher = ScreenWatcher(display, self._mark_dirty, self._resized, self._lost)
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        # Messages for every viewer's input channel (refine/unrefine), called on the loop.
        self.broadcast: Callable[[dict], None] = lambda message: None
        self.refiner = Refiner(self._refine_grab, self._refine_publish, after_s=refine_s,
                               on_made=self._refined, release=self._refine_release) if refine_s > 0 else None
        self._refine_capture: ScreenCapture | None = None

    # -- lifecycle (loop thread) ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Raises when the display cannot be opened."""
        self._loop = loop
        sys.setswitchinterval(GIL_SWITCH_S)
        self._size = self._watcher.start()
        self.metrics.bitrate_cap.set(self.bitrate.current_kbps)
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        self._thread.start()
        if self.refiner is not None:
            self.refiner.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.refiner is not None:
            self.refiner.stop()
            if self._refine_capture is not None:
                self._refine_capture.close()

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def encoder_for(self, codec: str) -> str:
        return self.h264.name if codec == "h264" else VP8.name

    # -- peers (loop thread) --------------------------------------------------------------

    def subscribe(self, codec: str, callback: Subscriber) -> None:
        if not self._subscribers:
            self._subscribed_at = time.monotonic()  # the first viewer: timed to its keyframe
        self._subscribers.setdefault(codec, set()).add(callback)
        self._set_codecs()
        self.request_keyframe()
        if self.refiner is not None:
            self.refiner.reset()  # the new viewer holds no overlay yet

    def unsubscribe(self, codec: str, callback: Subscriber) -> None:
        subs = self._subscribers.get(codec)
        if subs is not None:
            subs.discard(callback)
            if not subs:
                del self._subscribers[codec]
        self._set_codecs()

    def _set_codecs(self) -> None:
        with self._cond:
            self._codecs = frozenset(self._subscribers)
            self._cond.notify()
        if self.refiner is not None:
            self.refiner.set_active(bool(self._codecs))

    def request_keyframe(self) -> None:
        with self._cond:
            self._keyframe_wanted = True
            self._cond.notify()

    def report_bandwidth(self, peer: str, bps: int) -> None:
        self.bitrate.report(peer, bps)

    def report_loss(self, peer: str, fraction_lost: int, highest_sequence: int) -> None:
        self.bitrate.report_loss(peer, fraction_lost, highest_sequence, time.monotonic())

    def report_drained(self, peer: str, kbps: int) -> None:
        self.bitrate.report_drained(peer, kbps)

    def forget_peer(self, peer: str) -> None:
        self.bitrate.forget(peer)

    def _publish(self, codec: str, packets: list[av.Packet]) -> None:
        for packet in packets:
            for callback in list(self._subscribers.get(codec, ())):
                callback(packet)

    # -- X events (watcher thread) --------------------------------------------------------

    def _mark_dirty(self) -> None:
        with self._cond:
            if not self._dirty:
                self._damage_at = time.monotonic()
            self._dirty = True
            self._cond.notify()
        if self.refiner is not None:
            self.refiner.changed()

    def _resized(self, width: int, height: int) -> None:
        with self._cond:
            self._size = (width - width % 2, height - height % 2)
            if not self._dirty:
                self._damage_at = time.monotonic()
            self._dirty = True
            self._cond.notify()
        if self.refiner is not None:
            self.refiner.changed()
            self.refiner.reset()

    # -- the lossless overlay (refiner thread) ---------------------------------------------

    def _refine_grab(self):
        if self._refine_capture is None:  # XCB: a connection of the refiner thread's own
            self._refine_capture = ScreenCapture(self.display)
        width, height = self._size
        return self._refine_capture.grab(width, height, "bgra").to_ndarray()

    def _refine_release(self) -> None:
        """Nobody watches (refiner thread): its capture and frame go, as the encode thread's do."""
        if self._refine_capture is not None:
            self._refine_capture.close()
            self._refine_capture = None
        _trim_heap()

    def _refine_publish(self, message: dict) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.broadcast, message)

    def _refined(self, refinement, seconds: float) -> None:
        self.metrics.refinements.inc()
        self.metrics.refinement_bytes.inc(len(refinement.png))
        self.metrics.refine_seconds.observe(seconds)

    def _lost(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
            log.error("display lost", extra={"action": "display_lost", "reason": reason})
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_display_lost, reason)
        with self._cond:
            self._stop = True
            self._cond.notify()

    # -- the encode thread ----------------------------------------------------------------

    def _next_job(self, state: dict) -> tuple[bool, bool, frozenset[str]] | None:
        """Wait for work; returns (capture, keyframe, codecs) or None to stop. Holds the lock."""
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                if not self._codecs:
                    if state["holding"]:
                        # The last viewer left: hand back the encoders and buffers first.
                        return False, False, frozenset()
                    self._cond.wait()
                    continue
                settle_due = state["settle"] > 0 and now >= state["settle_at"]
                key_due = self._keyframe_wanted and now >= self._keyframe_allowed_at
                refresh_due = now >= state["last"] + self.refresh_s
                if self._dirty or settle_due or key_due or refresh_due:
                    # --max-fps caps how often changed frames start: a change that comes while
                    # one is encoded waits only for the rest of the interval, not a whole one
                    # after it, and a settle or refresh frame takes no change's turn.
                    wait = state["started"] + self.min_interval - now if self._dirty else 0.0
                    if wait <= 0:
                        # DAMAGE reports every change, so settle and refresh frames re-encode
                        # the last capture: the screen is as it was.
                        capture = self._dirty
                        changed = self._dirty
                        self._dirty = False
                        if key_due:
                            self._keyframe_wanted = False
                            self._keyframe_allowed_at = now + KEYFRAME_DEBOUNCE_S
                        state["changed"] = changed
                        state["damage_at"] = self._damage_at if changed else 0.0
                        return capture or key_due, key_due, self._codecs
                else:
                    deadlines = [state["last"] + self.refresh_s]
                    if state["settle"] > 0:
                        deadlines.append(state["settle_at"])
                    if self._keyframe_wanted:
                        deadlines.append(self._keyframe_allowed_at)
                    wait = min(deadlines) - now
                self._cond.wait(max(wait, 0.001))
        return None

    def _run(self) -> None:
        capture = ScreenCapture(self.display)
        encoders: dict[str, VideoEncoder] = {}
        converted: dict[str, av.VideoFrame] = {}
        state = {"started": 0.0, "last": 0.0, "settle": 0, "settle_at": 0.0, "changed": False, "damage_at": 0.0,
                 "holding": False, "resumed_at": 0.0}
        frame: av.VideoFrame | None = None
        stage = self.metrics.stage
        damage_to_grab, grab_time, convert_time, encode_time = (
            stage["damage_to_grab"], stage["grab"], stage["convert"], stage["encode"])
        t0 = time.monotonic()
        last_pts = -1
        try:
            while (job := self._next_job(state)) is not None:
                grab, keyframe, codecs = job
                if not codecs:
                    # Nobody watches: no capture, no encoder, no frame buffers until somebody
                    # does (the watcher still marks the screen dirty). Idle sessions cost only this.
                    for encoder in encoders.values():
                        encoder.close()
                    encoders, converted, frame = {}, {}, None
                    capture.close()
                    state.update(holding=False, settle=0)
                    _trim_heap()
                    continue
                started = time.monotonic()
                if not state["holding"]:
                    state.update(holding=True, resumed_at=self._subscribed_at)
                # A settle or refresh frame re-encodes the last grab, but DAMAGE says the screen
                # has not changed since: the picture is the screen as of now, not of that grab.
                captured_us = time.time_ns() // 1000
                if state["damage_at"]:
                    damage_to_grab.observe(started - state["damage_at"])
                width, height = self._size
                if grab or not converted:
                    # One grab; converted once per pixel format and shared by the encoders.
                    pix_fmt = "bgr0" if self.h264.pix_fmt == "bgr0" and codecs == {"h264"} else "bgra"
                    frame = capture.grab(width, height, pix_fmt)
                    grab_time.observe(time.monotonic() - started)
                    self.metrics.frames_captured.inc()
                    converted = {}
                cap = self._apply_bitrate(encoders, started)
                pts = max(int((started - t0) * 90000), last_pts + 1)
                last_pts = pts
                largest = 0
                converting = encoding = 0.0
                for codec in codecs:
                    kind = self.h264 if codec == "h264" else VP8
                    encoder = encoders.get(codec)
                    if encoder is None:
                        encoder = encoders[codec] = VideoEncoder(kind, cap)
                        keyframe = True
                    src = converted.get(kind.pix_fmt)
                    converted_at = time.monotonic()
                    if src is None:
                        if frame.format.name == kind.pix_fmt:
                            src = frame
                        else:
                            src = frame.reformat(format=kind.pix_fmt)
                            t, converted_at = converted_at, time.monotonic()
                            converting += converted_at - t
                        converted[kind.pix_fmt] = src
                    src.pts = pts
                    src.time_base = TIME_BASE
                    packets = self._encode(encoder, src, keyframe, codec)
                    encoded_at = time.monotonic()
                    encoding += encoded_at - converted_at
                    stamp = FrameStamp(encoded_at, captured_us, src.width, src.height)
                    for packet in packets:
                        packet.opaque = stamp  # the track times its way to aiortc from here
                    largest = max([largest, *(p.size for p in packets)])
                    if packets and self._loop is not None:
                        self._loop.call_soon_threadsafe(self._publish, codec, packets)
                for codec in set(encoders) - codecs:  # no viewer left for this codec
                    encoders.pop(codec).close()
                finished = time.monotonic()
                if converting:
                    convert_time.observe(converting)
                encode_time.observe(encoding)
                self.metrics.encode_seconds.observe(finished - started)
                if state["resumed_at"]:
                    self.metrics.resume_seconds.observe(finished - state["resumed_at"])
                    state["resumed_at"] = 0.0
                state["last"] = finished
                if state["changed"]:
                    state["started"] = started
                    state["settle"] = SETTLE_FRAMES
                elif state["settle"] > 0:
                    state["settle"] = 0 if largest < CONVERGED_BYTES else state["settle"] - 1
                    if state["settle"] == 0:
                        _trim_heap()  # the screen went still: hand the frame buffers back
                state["settle_at"] = finished + self.min_interval
        except DisplayGone as exc:
            self._lost(str(exc))
        except Exception:
            log.exception("encode loop failed", extra={"action": "encode_failed"})
            self._lost("the encoder failed; see the agent log")
        finally:
            capture.close()
            for encoder in encoders.values():
                encoder.close()

    def _apply_bitrate(self, encoders: dict[str, VideoEncoder], now: float) -> int:
        new = self.bitrate.update(now)
        if new is not None:
            for encoder in encoders.values():
                encoder.set_bitrate(new)
            self.metrics.bitrate_cap.set(new)
            log.info("bitrate cap changed", extra={"action": "bitrate", "bitrate_kbps": new})
        return self.bitrate.current_kbps

    def _encode(self, encoder: VideoEncoder, frame: av.VideoFrame, keyframe: bool, codec: str) -> list[av.Packet]:
        packets = encoder.encode(frame, keyframe)
        for packet in packets:
            self.metrics.frames_encoded.labels(codec).inc()
            self.metrics.bytes_encoded.labels(codec).inc(packet.size)
            if packet.is_keyframe:
                self.metrics.keyframes.labels(codec).inc()
        return packets
