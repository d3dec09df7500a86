"""The shared encoder's bitrate cap from what the receivers report (pure logic).

One encode serves every viewer, so the cap follows the most constrained one, within configured
bounds. What each receiver says, and what it is taken to mean:

- REMB, a delay-based estimate. A change-driven stream is bursty and mostly idle, and such an
  estimator ramps up slowly on it (tens of seconds): a steady low REMB means "not probed yet",
  not "congested", and following it would crush the picture after every join. What does mean
  congestion is an estimate that falls (the receiver saw queuing delay grow): a fall of FALL or
  more lowers the cap to it, and a rising estimate lets the cap climb back.
- Loss, from RTCP receiver reports (the fraction of packets lost since the previous report).
  A router queue that overflows drops packets; a delay-based estimate need not fall fast when
  it does (Chromium's did not at a 5 Mbit/s cap). Loss above LOSS_HIGH over enough packets
  lowers the cap by at least DROP_MIN, as GCC's loss-based controller does (half the loss
  fraction). Random loss of a percent or two on a good link is no congestion and changes nothing.
- A stream transport's drain rate (the WebSocket): a socket that has to skip frames reports
  what it did get through, and the cap goes just under that.

After congestion at some rate (the cap while packets were lost, the rate a socket drained), the
cap does not rise back above HEADROOM of it for CEILING_HOLD_S:
probing up straight away would refill the queue it just drained. Reopening an encoder costs a
keyframe, so small or frequent changes are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

# A rise is applied only when it is this much above the current cap...
HYSTERESIS = 0.25
# ...and a drop only when it is at least this much below it.
DROP_MIN = 0.15
# Not more often than this (seconds); a drop may come sooner than a rise.
RAISE_INTERVAL_S = 4.0
DROP_INTERVAL_S = 1.0
# An estimate this much below the same receiver's previous one signals over-use.
FALL = 0.85
# Loss over a receiver-report interval that means an overflowing queue, and the fewest packets
# an interval must cover for its fraction to count (one lost of ten is noise, not congestion).
LOSS_HIGH = 0.05
MIN_PACKETS = 50
# Loss reported this soon after a change is the old rate's (time for the queue to drain).
SETTLE_S = 1.0
# Under a rate that proved too much, the cap stays this fraction of it for this long.
HEADROOM = 0.9
CEILING_HOLD_S = 30.0


@dataclass
class _Receiver:
    estimate: int | None = None   # kbit/s, its latest REMB
    highest: int | None = None    # extended highest sequence number of its previous report
    expected: int = 0             # packets the reports since the last judgement covered...
    lost: float = 0.0             # ...and how many of them were lost


class BitrateController:
    """Fed from the asyncio loop (report, report_loss, report_drained, forget), read by the
    encode thread (update)."""

    def __init__(self, start_kbps: int, min_kbps: int, max_kbps: int) -> None:
        self.min_kbps = min_kbps
        self.max_kbps = max_kbps
        self.current_kbps = start_kbps
        self.start_kbps = start_kbps
        self._receivers: dict[str, _Receiver] = {}
        self._drop_to: int | None = None
        self._too_much: int | None = None  # a rate that proved too much since the last update
        self._changed_at = float("-inf")
        self._ceiling: int | None = None
        self._ceiling_at = float("-inf")

    def _receiver(self, peer: str) -> _Receiver:
        return self._receivers.setdefault(peer, _Receiver())

    def _want(self, kbps: int) -> None:
        self._drop_to = kbps if self._drop_to is None else min(self._drop_to, kbps)

    def report(self, peer: str, bps: int) -> None:
        """A REMB estimate."""
        kbps = max(bps // 1000, 1)
        receiver = self._receiver(peer)
        previous, receiver.estimate = receiver.estimate, kbps
        if previous is not None and kbps < previous * FALL:
            self._want(kbps)

    def report_loss(self, peer: str, fraction_lost: int, highest_sequence: int, now: float) -> None:
        """A receiver report: `fraction_lost` in 1/256 since its previous report, and its
        extended highest sequence number (how many packets that interval covered)."""
        receiver = self._receiver(peer)
        previous, receiver.highest = receiver.highest, highest_sequence
        if previous is None or highest_sequence <= previous:
            return
        if now - self._changed_at < SETTLE_S:
            # What the receiver lost just after a change was sent before it, into the queue
            # that is still draining: judged again, it would take the cap down twice.
            receiver.expected, receiver.lost = 0, 0.0
            return
        # Chromium sends a report with every NACK and PLI, tens a second: they are added up
        # until they cover enough packets to judge.
        covered = highest_sequence - previous
        receiver.expected += covered
        receiver.lost += covered * fraction_lost / 256
        if receiver.expected < MIN_PACKETS:
            return
        loss = receiver.lost / receiver.expected
        receiver.expected, receiver.lost = 0, 0.0
        if loss >= LOSS_HIGH:
            self._too_much = min(self._too_much or self.current_kbps, self.current_kbps)
            self._want(int(self.current_kbps * min(1 - DROP_MIN, 1 - loss / 2)))

    def report_drained(self, peer: str, kbps: int) -> None:
        """A stream socket that had to skip frames got this much through. One that barely
        drains is a stalled reader (a frozen tab), not a link to size everybody's stream for."""
        if kbps < self.min_kbps:
            return
        self._receiver(peer)
        self._too_much = min(self._too_much or kbps, kbps)  # what got through is the known limit
        self._want(max(int(kbps * HEADROOM), 1))

    def forget(self, peer: str) -> None:
        self._receivers.pop(peer, None)

    def _clamp(self, kbps: int) -> int:
        return max(self.min_kbps, min(self.max_kbps, kbps))

    def update(self, now: float) -> int | None:
        """The new cap in kbit/s when it should change now, else None."""
        drop, self._drop_to = self._drop_to, None
        if self._too_much is not None:
            self._ceiling, self._ceiling_at, self._too_much = self._too_much, now, None
        if drop is not None:
            target = self._clamp(drop)
            if target <= self.current_kbps * (1 - DROP_MIN) and now - self._changed_at >= DROP_INTERVAL_S:
                return self._apply(target, now)
            if target < self.current_kbps:
                self._drop_to = drop  # keep it for when the interval allows
            return None
        estimates = [r.estimate for r in list(self._receivers.values()) if r.estimate is not None]
        if estimates:
            target = self._clamp(min(estimates))
        elif self._receivers:
            # Nobody sends estimates (WebSocket viewers): back to the starting cap, the one
            # chosen without any, once the hold after congestion is over.
            target = self._clamp(self.start_kbps)
        else:
            return None
        if self._ceiling is not None and now - self._ceiling_at < CEILING_HOLD_S:
            target = min(target, int(self._ceiling * HEADROOM))
        if target > self.current_kbps * (1 + HYSTERESIS) and now - self._changed_at >= RAISE_INTERVAL_S:
            return self._apply(target, now)
        return None

    def _apply(self, kbps: int, now: float) -> int:
        self.current_kbps = kbps
        self._changed_at = now
        return kbps
