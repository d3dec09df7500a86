"""How many sent RTP packets a sender keeps to answer NACKs: aiortc keeps 128
(`aiortc.rtcrtpsender.RTP_HISTORY_SIZE`, a module global its sender reads on every packet), a
sixth of a second at 8 Mbit/s and less than one keyframe of a full-HD screen. A loss whose
retransmission cannot be sent any more stalls the receiver until the next keyframe; at 40 ms RTT
a NACK and its answer, asked twice, already take longer than that. This sizes the history for
the highest bitrate the encoder may reach (the one narrow hook; the sender is otherwise aiortc's).
"""
from __future__ import annotations

import math

import aiortc.rtcrtpsender

HISTORY_S = 1.0          # of packets at the highest bitrate
PACKET_BYTES = 1100      # a full video packet's payload (aiortc packetizes to ~1,200 bytes)
MIN_PACKETS = 128        # aiortc's own
MAX_PACKETS = 32768      # half the 16-bit sequence space: a slot is never reused within one wrap


def history_size(max_kbps: int) -> int:
    packets = math.ceil(max_kbps * 1000 / 8 / PACKET_BYTES * HISTORY_S)
    return max(MIN_PACKETS, min(MAX_PACKETS, packets))


def install(max_kbps: int) -> int:
    """Size every sender's history for `max_kbps`; returns the size in packets."""
    size = history_size(max_kbps)
    aiortc.rtcrtpsender.RTP_HISTORY_SIZE = size
    return size
