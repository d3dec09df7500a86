"""Which NACKed packets a peer's sender sends again (pure logic).

aiortc retransmits every packet a NACK names, as often as it is named. On a link that is losing
packets because its queue is full, that is more traffic into the same queue: each retransmission
is dropped in turn and asked for again, and the stream drowns in its own repairs (at a 5 Mbit/s
cap the relay saw five times the encoded rate). So a packet goes again at most once per
MIN_INTERVAL_S (a NACK repeated within a round trip asks for what is already on its way), and
retransmissions together stay within RTX_SHARE of the encoder's cap (a token bucket holding
BURST_S of it), as libwebrtc bounds its RTX rate.
"""
from __future__ import annotations

from collections import OrderedDict

RTX_SHARE = 0.15
BURST_S = 0.2
MIN_INTERVAL_S = 0.1
PACKET_BYTES = 1200
REMEMBERED = 4096  # sequence numbers whose last retransmission is kept


class RetransmitBudget:
    def __init__(self) -> None:
        self._tokens = 0.0
        self._at: float | None = None
        self._sent: OrderedDict[int, float] = OrderedDict()
        self.refused = 0

    def allow(self, sequence_number: int, now: float, cap_kbps: int) -> bool:
        rate = cap_kbps * 1000 / 8 * RTX_SHARE  # bytes per second
        if self._at is None:
            self._tokens = rate * BURST_S
        else:
            self._tokens = min(rate * BURST_S, self._tokens + (now - self._at) * rate)
        self._at = now
        last = self._sent.get(sequence_number)
        if (last is not None and now - last < MIN_INTERVAL_S) or self._tokens < PACKET_BYTES:
            self.refused += 1
            return False
        self._tokens -= PACKET_BYTES
        self._sent[sequence_number] = now
        self._sent.move_to_end(sequence_number)
        while len(self._sent) > REMEMBERED:
            self._sent.popitem(last=False)
        return True
