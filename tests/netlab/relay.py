"""The lab's impairment: a userspace router between two TUN devices that delays, drops and
rate-limits packets, one setting per direction (this kernel has no `sch_netem`).

    python -m tests.netlab.relay --up tun-up --down tun-down \
        [--up-delay-ms 20] [--up-loss 0.01] [--up-rate-kbit 5000] [--up-queue-ms 200] \
        [--down-…] [--seed 1]

Run inside the namespace that owns both (persistent) TUN devices. Each device is read and
written by this process: the namespace routes a direction's packets into its device, the
relay writes each one back into the same device after its delay, and the kernel forwards it
on from there (packets that come out of a TUN device are routed by the main table). A relay
that is not running therefore loses packets instead of passing them unimpaired.

Per direction: a packet is lost with probability `loss`; with a rate cap it is sent when the
link is free (FIFO, its size at `rate`), dropped when it would wait longer than `queue-ms`
(a router's tail drop); then it waits `delay` more. Delay is constant, so order is kept.

It prints `{"ready": true}` once both devices are open, one JSON line of counters on
SIGUSR1, and the counters again when SIGTERM/SIGINT end it.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import select
import signal
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_BATCH = 256  # packets read from one device before the other gets its turn


@dataclass(frozen=True)
class Impairment:
    """One direction's impairment; the default is a plain wire."""

    delay_ms: float = 0.0
    loss: float = 0.0  # probability, 0..1
    rate_kbit: float = 0.0  # 0: no cap
    queue_ms: float = 200.0  # with a rate cap: longest wait in the queue before a drop

    def args(self, prefix: str) -> list[str]:
        return [f"--{prefix}-delay-ms", str(self.delay_ms), f"--{prefix}-loss", str(self.loss),
                f"--{prefix}-rate-kbit", str(self.rate_kbit), f"--{prefix}-queue-ms", str(self.queue_ms)]


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass
class Direction:
    fd: int
    impairment: Impairment
    rng: random.Random
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    busy_until: float = 0.0
    received: int = 0
    lost: int = 0
    overflowed: int = 0
    sent: int = 0
    sent_bytes: int = 0
    max_queue: int = 0
    other: int = 0  # not IPv4: dropped

    def take(self, packet: bytes, now: float) -> None:
        if not packet or packet[0] >> 4 != 4:  # the lab is IPv4 only
            self.other += 1
            return
        self.received += 1
        imp = self.impairment
        if imp.loss and self.rng.random() < imp.loss:
            self.lost += 1
            return
        release = now
        if imp.rate_kbit:
            start = max(now, self.busy_until)
            if start - now > imp.queue_ms / 1000:
                self.overflowed += 1
                return
            self.busy_until = start + len(packet) * 8 / (imp.rate_kbit * 1000)
            release = self.busy_until
        self.queue.append((release + imp.delay_ms / 1000, packet))
        self.max_queue = max(self.max_queue, len(self.queue))

    def read(self, now: float) -> None:
        for _ in range(MAX_BATCH):
            try:
                packet = os.read(self.fd, 65535)
            except BlockingIOError:
                return
            self.take(packet, now)

    def flush(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, packet = self.queue.popleft()
            try:
                os.write(self.fd, packet)
            except OSError:  # the device's queue is full: the packet is lost, as on a wire
                self.overflowed += 1
                continue
            self.sent += 1
            self.sent_bytes += len(packet)

    def next_release(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def counters(self) -> dict[str, int]:
        return {"received": self.received, "lost": self.lost, "overflowed": self.overflowed,
                "sent": self.sent, "sent_bytes": self.sent_bytes, "max_queue": self.max_queue, "other": self.other}


def serve(up: Direction, down: Direction) -> None:
    stop = False

    def report(*_: object) -> None:
        print(json.dumps({"up": up.counters(), "down": down.counters(),
                          "cpu_s": round(time.process_time(), 3)}), flush=True)

    def end(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    by_fd = {up.fd: up, down.fd: down}
    print(json.dumps({"ready": True}), flush=True)
    while not stop:
        now = time.monotonic()
        releases = [t for t in (up.next_release(), down.next_release()) if t is not None]
        timeout = max(0.0, min(releases) - now) if releases else 0.5
        try:
            readable, _, _ = select.select(list(by_fd), [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in readable:
            by_fd[fd].read(now)
        up.flush(now)
        down.flush(now)
    report()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--up", required=True, help="TUN device of the client → server direction")
    p.add_argument("--down", required=True, help="TUN device of the server → client direction")
    for side in ("up", "down"):
        p.add_argument(f"--{side}-delay-ms", type=float, default=0.0)
        p.add_argument(f"--{side}-loss", type=float, default=0.0)
        p.add_argument(f"--{side}-rate-kbit", type=float, default=0.0)
        p.add_argument(f"--{side}-queue-ms", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    try:  # a router is not slowed down by the hosts around it: ahead of them for the CPU
        os.nice(-10)
    except OSError:
        pass
    directions = []
    for side in ("up", "down"):
        imp = Impairment(getattr(a, f"{side}_delay_ms"), getattr(a, f"{side}_loss"),
                         getattr(a, f"{side}_rate_kbit"), getattr(a, f"{side}_queue_ms"))
        if not (0 <= imp.loss <= 1 and imp.delay_ms >= 0 and imp.rate_kbit >= 0 and imp.queue_ms > 0):
            p.error(f"invalid {side} impairment: {imp}")
        try:
            directions.append(Direction(open_tun(getattr(a, side)), imp, rng))
        except OSError as exc:
            print(f"relay: cannot open TUN device {getattr(a, side)}: {exc.strerror}", file=sys.stderr)
            return 1
    serve(*directions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
