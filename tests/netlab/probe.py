"""Measuring the lab itself: a UDP echo (round-trip time, loss, the source address the server
sees), a TCP echo, and a TCP bulk transfer (throughput). Sockets are opened inside the
namespaces with `Namespace.call`, so these run in the test process and need no binary."""
from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from tests.netlab.lab import Namespace

_PROBE = struct.Struct("!Id")  # sequence number, send time


@dataclass
class Echo:
    """A UDP and TCP echo server on `address:port` inside a namespace, until `close()`."""

    ns: Namespace
    address: str
    port: int = 7
    sources: list[tuple[str, int]] = field(default_factory=list)  # who sent UDP, as seen here
    _udp: socket.socket | None = None
    _tcp: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Echo:
        def sockets() -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.address, self.port))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.address, self.port))
            tcp.listen(8)
            return udp, tcp
        self._udp, self._tcp = self.ns.call(sockets)
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _serve_udp(self) -> None:
        while True:
            try:
                data, source = self._udp.recvfrom(65535)
            except OSError:
                return
            if not source:  # closed meanwhile
                return
            if source not in self.sources:
                self.sources.append(source)
            try:
                self._udp.sendto(data, source)
            except OSError:
                return

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    @staticmethod
    def _pipe(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def __exit__(self, *exc: object) -> None:
        for sock in (self._udp, self._tcp):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        for thread in self._threads:
            thread.join(5)


def udp_rtts(ns: Namespace, address: str, port: int = 7, count: int = 20, interval_s: float = 0.01,
             size: int = 100, wait_s: float = 1.0) -> list[float | None]:
    """Round-trip times in ms of `count` UDP probes from `ns` (None for each one lost). Echoes
    are timed as they arrive (select until the next send), not at a polling interval."""
    def probe() -> list[float | None]:
        rtts: list[float | None] = [None] * count
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((address, port))
            sock.setblocking(False)
            padding = b"\0" * max(0, size - _PROBE.size)
            sent, next_send, end = 0, time.monotonic(), None
            while True:
                now = time.monotonic()
                while sent < count and now >= next_send:
                    sock.send(_PROBE.pack(sent, now) + padding)
                    sent += 1
                    next_send += interval_s
                    if sent == count:
                        end = now + wait_s
                if end is not None and now >= end:
                    return rtts
                wake = end if sent == count else next_send
                readable, _, _ = select.select([sock], [], [], max(0.0, wake - time.monotonic()))
                while readable:
                    try:
                        data = sock.recv(65535)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    seq, t0 = _PROBE.unpack_from(data)
                    rtts[seq] = (time.monotonic() - t0) * 1000
    return ns.call(probe)


def tcp_echo(ns: Namespace, address: str, port: int = 7, payload: bytes = b"ping", timeout: float = 5) -> bytes:
    def talk() -> bytes:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got
    return ns.call(talk)


def tcp_throughput_kbit(client: Namespace, server: Namespace, address: str, port: int = 5001,
                        seconds: float = 4.0, download: bool = True) -> float:
    """kbit/s of a TCP bulk transfer between `client` and a listener on `address` in `server`
    (server → client when `download`), counted at the receiving end over `seconds` after one
    second of ramp-up. The client connects, as a client behind a NAT must."""
    listener = server.call(lambda: _listen(address, port))
    result: dict[str, float] = {}

    def pump(sock: socket.socket, sending: bool) -> None:
        if sending:
            chunk = b"\0" * (1 << 16)
            end = time.monotonic() + seconds + 1.0
            try:
                while time.monotonic() < end:
                    sock.sendall(chunk)
            finally:
                sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):
                pass
            return
        start = time.monotonic()
        counted, t0 = 0, None
        while data := sock.recv(1 << 16):
            now = time.monotonic()
            if t0 is None and now - start >= 1.0:
                t0 = now
            elif t0 is not None:
                counted += len(data)
        if t0 is not None:
            result["kbit"] = counted * 8 / 1000 / (time.monotonic() - t0)
        sock.close()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            pump(conn, sending=download)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def connect() -> None:
        with socket.create_connection((address, port), timeout=10) as sock:
            pump(sock, sending=not download)
    try:
        client.call(connect)
        thread.join(30)
    finally:
        listener.close()
    return result.get("kbit", 0.0)


def _listen(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1)
    return sock


def udp_blast(sender: Namespace, receiver: Namespace, address: str, port: int = 5002, pps: int = 2000,
              seconds: float = 5.0, size: int = 1200) -> tuple[int, int]:
    """(sent, received) of `pps` UDP datagrams a second for `seconds`, paced in 5 ms batches."""
    sink = receiver.call(lambda: _udp_socket(address, port))
    sink.settimeout(0.5)
    received = [0]

    def count() -> None:
        while True:
            try:
                sink.recv(65535)
            except socket.timeout:
                return
            except OSError:
                return
            received[0] += 1
    thread = threading.Thread(target=count, daemon=True)
    thread.start()

    def send() -> int:
        sent = 0
        payload = b"\0" * size
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((address, port))
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * pps) + 1
                while sent < due:
                    try:
                        sock.send(payload)
                    except OSError:  # a full socket buffer
                        pass
                    sent += 1
                time.sleep(0.005)
        return sent
    try:
        sent = sender.call(send)
        thread.join(5)
    finally:
        sink.close()
    return sent, received[0]


def _udp_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((address, port))
    return sock
