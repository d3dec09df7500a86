"""The RTP header extension that puts Chromium's receiver on its low-latency path.

`playout-delay` (http://www.webrtc.org/experiments/rtp-hdrext/playout-delay) carries the
smallest and largest delay the sender wants the receiver to add, 12 bits each in 10 ms units.
With min = max = 0 Chromium skips its jitter-buffer delay and render-time model and decodes and
shows each frame once it is complete. Without it, on our sparse, change-driven stream (a
frame when the screen changes, a refresh every few seconds) Chromium's estimates held complete
frames for over a second (docs/ARCHITECTURE.md, "Latency").

aiortc neither negotiates nor writes this extension; two narrow hooks on one peer's
transceiver do, both here:
  - negotiate_playout_delay(): after the offer is applied, add the extension (with the
    offer's id) to the transceiver's negotiated extensions, which aiortc answers with and
    configures its sender from;
  - install(): give the sender a HeaderExtensionsMap that adds min = max = 0 to every packet
    it serializes (RTX retransmissions included).
They touch aiortc's private attributes (`_headerExtensions`, the sender's name-mangled map);
tests/agent/test_latency.py parses the packets a real sender emits, so an aiortc that changes
them fails a test rather than silently dropping the extension.
"""
from __future__ import annotations

import re

from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpTransceiver
from aiortc import rtp

PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
PLAYOUT_DELAY_ZERO = b"\x00\x00\x00"  # min = 0, max = 0


def offered_extension_id(offer_sdp: str, uri: str, kind: str = "video") -> int | None:
    """The id the offer's first `kind` media section gives extension `uri`, or None (pure)."""
    section = None
    for line in offer_sdp.splitlines():
        if line.startswith("m="):
            if section is not None:
                break
            if line.startswith(f"m={kind} "):
                section = True
        elif section and (m := re.match(r"a=extmap:(\d+)(?:/\w+)? (\S+)", line)) and m.group(2) == uri:
            return int(m.group(1))
    return None


def playout_delay(value: bytes) -> tuple[int, int]:
    """(min, max) in milliseconds of a playout-delay extension value (pure; for tests and logs)."""
    if len(value) != 3:
        raise ValueError(f"playout-delay is 3 bytes, not {len(value)}")
    bits = int.from_bytes(value, "big")
    return (bits >> 12) * 10, (bits & 0xFFF) * 10


class _ExtensionsMap(rtp.HeaderExtensionsMap):
    """aiortc's map, plus playout-delay min = max = 0 on every packet once negotiated."""

    def __init__(self) -> None:
        super().__init__()
        self._constant: list[tuple[int, bytes]] = []

    def configure(self, parameters) -> None:
        super().configure(parameters)
        self._constant = [(ext.id, PLAYOUT_DELAY_ZERO) for ext in parameters.headerExtensions
                          if ext.uri == PLAYOUT_DELAY_URI]

    def set(self, values: rtp.HeaderExtensions) -> tuple[int, bytes]:
        profile, value = super().set(values)
        if not self._constant:
            return profile, value
        return rtp.pack_header_extensions(rtp.unpack_header_extensions(profile, value) + self._constant)


def install(transceiver: RTCRtpTransceiver) -> None:
    """Before the peer connects: its sender will write what negotiate_playout_delay() agreed."""
    transceiver.sender._RTCRtpSender__rtp_header_extensions_map = _ExtensionsMap()


def negotiate_playout_delay(transceiver: RTCRtpTransceiver, offer_sdp: str) -> bool:
    """After setRemoteDescription, before createAnswer: answer the offer's playout-delay id.
    Returns whether the offer had it (Chromium's does; aiortc's and Firefox's do not)."""
    ext_id = offered_extension_id(offer_sdp, PLAYOUT_DELAY_URI, transceiver.kind)
    if ext_id is None:
        return False
    if not any(e.uri == PLAYOUT_DELAY_URI for e in transceiver._headerExtensions):
        transceiver._headerExtensions.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=PLAYOUT_DELAY_URI))
    return True
