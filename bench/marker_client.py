"""The measuring aiortc client of the latency benchmarks: aiortc with one change.

Its jitter buffer hands a frame to the decoder when the RTP marker bit arrives, as browsers
do (stock aiortc waits for the first packet of the next frame, which adds a frame interval to
every measurement). Importing this module installs it for every aiortc receiver of the process.
"""
from __future__ import annotations

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame


class MarkerJitterBuffer(JitterBuffer):
    """Completes a frame on its marker bit, like a browser."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if packets and packet.timestamp != packets[0].timestamp:  # previous frame had no marker
                self.remove(count)
                return JitterFrame(b"".join(p._data for p in packets), packets[0].timestamp)
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(b"".join(p._data for p in packets), packets[0].timestamp)
        return None


aiortc.rtcrtpreceiver.JitterBuffer = MarkerJitterBuffer
