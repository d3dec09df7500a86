"""Video encoders behind one small interface, and the probe that picks one.

Every encoder takes raw frames and returns `av.Packet`s in a 1/90000 time base, which aiortc
sends as-is (one encode for every peer). Settings are for interactive screen content: no
B-frames, no lookahead, a VBV of about one frame so a burst never queues behind itself, and a
long GOP because keyframes are sent on demand (peer joins, PLI/FIR) rather than on a timer.
"""
from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass

import av

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, 90000)
# VBV: the buffer holds about one frame at this rate, however fast frames actually come.
VBV_FPS = 30
# Constant quality for screen content; the VBV cap keeps bursts inside the bitrate.
X264_CRF = 23


@dataclass(frozen=True)
class EncoderKind:
    name: str          # "x264" | "nvenc" | "vp8"
    codec: str         # what the SDP negotiates: "h264" | "vp8"
    av_codec: str      # PyAV/FFmpeg encoder name
    pix_fmt: str       # the frame format it takes (NVENC converts BGR on the GPU itself)


X264 = EncoderKind("x264", "h264", "libx264", "yuv420p")
NVENC = EncoderKind("nvenc", "h264", "h264_nvenc", "bgr0")
VP8 = EncoderKind("vp8", "vp8", "libvpx", "yuv420p")


def encoder_options(kind: EncoderKind, bitrate_kbps: int) -> dict[str, str]:
    """FFmpeg options for a low-latency stream capped at `bitrate_kbps` (pure, for tests)."""
    bufsize = max(bitrate_kbps // VBV_FPS, 1)
    if kind is X264:
        params = (f"keyint=infinite:scenecut=0:bframes=0:rc-lookahead=0:crf={X264_CRF}"
                  f":vbv-maxrate={bitrate_kbps}:vbv-bufsize={bufsize}")
        # The profile is set, not left to the preset: the SDP answer announces constrained
        # baseline (42e01f), and a decoder may refuse what it was not promised.
        return {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "forced-idr": "1",
                "x264-params": params}
    if kind is NVENC:
        return {"preset": "p1", "tune": "ull", "profile": "baseline", "zerolatency": "1", "delay": "0", "rc": "cbr",
                "bf": "0", "g": "1000000", "forced-idr": "1", "maxrate": f"{bitrate_kbps}k",
                "bufsize": f"{bufsize}k"}
    if kind is VP8:
        return {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1",
                "g": "1000000", "maxrate": f"{bitrate_kbps}k", "bufsize": f"{bufsize}k",
                "undershoot-pct": "95"}
    raise ValueError(f"unknown encoder {kind.name}")


class VideoEncoder:
    """One FFmpeg encoder, (re)opened lazily when the frame size or the bitrate cap changes."""

    def __init__(self, kind: EncoderKind, bitrate_kbps: int) -> None:
        self.kind = kind
        self.bitrate_kbps = bitrate_kbps
        self._ctx: av.CodecContext | None = None
        self._size = (0, 0)

    def set_bitrate(self, kbps: int) -> None:
        """Takes effect at the next frame; reopening starts with a keyframe."""
        if kbps != self.bitrate_kbps:
            self.bitrate_kbps = kbps
            self._ctx = None

    def _open(self, width: int, height: int) -> av.CodecContext:
        ctx = av.CodecContext.create(self.kind.av_codec, "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = self.kind.pix_fmt
        ctx.time_base = TIME_BASE
        ctx.framerate = fractions.Fraction(VBV_FPS, 1)
        ctx.bit_rate = self.bitrate_kbps * 1000
        ctx.options = encoder_options(self.kind, self.bitrate_kbps)
        ctx.open()
        self._size = (width, height)
        return ctx

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[av.Packet]:
        if self._ctx is None or (frame.width, frame.height) != self._size:
            self._ctx = self._open(frame.width, frame.height)
            keyframe = True
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = self._ctx.encode(frame)
        for packet in packets:
            packet.time_base = TIME_BASE
        return packets

    def close(self) -> None:
        self._ctx = None


def _try_open(kind: EncoderKind) -> str | None:
    """Open the encoder and encode one frame: listing a codec says nothing about a usable GPU."""
    try:
        enc = VideoEncoder(kind, 2000)
        frame = av.VideoFrame(256, 256, kind.pix_fmt)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        enc.encode(frame, keyframe=True)
        enc.close()
        return None
    except Exception as exc:  # FFmpeg reports a missing driver/NVENC as various av.error types
        # FFmpeg errors carry the encoder's whole option dict in str(); strerror is the point.
        reason = getattr(exc, "strerror", None) or str(exc)
        return f"{type(exc).__name__}: {reason}".splitlines()[0][:200]


def probe(preference: str) -> EncoderKind:
    """The H.264 encoder to use: NVENC when it really opens (auto/nvenc), else libx264.

    Raises RuntimeError when `nvenc` was asked for explicitly and is not usable.
    """
    if preference in ("auto", "nvenc"):
        error = _try_open(NVENC)
        if error is None:
            log.info("using NVENC", extra={"action": "encoder_probe", "encoder": "nvenc"})
            return NVENC
        if preference == "nvenc":
            raise RuntimeError(f"--encoder nvenc: NVENC is not usable ({error})")
        log.info("NVENC not usable (%s); using libx264", error,
                 extra={"action": "encoder_probe", "encoder": "x264", "reason": error})
        return X264
    if preference == "vp8":
        return VP8
    return X264
