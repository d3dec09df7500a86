"""gateway/splice.py's `move` between real loopback sockets: every byte in order, the sides
that go away, and no busy loop while the receiver is the slower side."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from gateway import splice

MB = 1 << 20


def _pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


@pytest.fixture
def sockets():
    """sender → (src) move (dst) → receiver, src and dst non-blocking as the gateway's are."""
    sender, src = _pair()
    dst, receiver = _pair()
    src.setblocking(False)
    dst.setblocking(False)
    yield sender, src, dst, receiver
    for s in (sender, src, dst, receiver):
        s.close()


def _send_small_segments(sock: socket.socket, data: bytes) -> None:
    """Many small segments: each takes a pipe buffer of its own, and the pipe fills by buffers
    long before its size in bytes."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), 1400):
        sock.sendall(data[i:i + 1400])


def test_moves_every_byte_in_order_and_waits_without_spinning_on_a_slow_receiver(sockets) -> None:
    sender, src, dst, receiver = sockets
    data = os.urandom(24 * MB)
    received = hashlib.sha256()
    stalled = threading.Event()

    def receive() -> None:
        got = 0
        while got < len(data):
            if got > 4 * MB and not stalled.is_set():
                time.sleep(1.0)  # the receiver stops reading for a second: dst and the pipe fill
                stalled.set()
            chunk = receiver.recv(65536)
            if not chunk:
                break
            received.update(chunk)
            got += len(chunk)

    threads = [threading.Thread(target=_send_small_segments, args=(sender, data)),
               threading.Thread(target=receive)]
    for t in threads:
        t.start()
    cpu = time.thread_time()
    splice.move(src.fileno(), dst.fileno(), len(data), timeout=10)
    cpu = time.thread_time() - cpu
    for t in threads:
        t.join(10)
    assert stalled.is_set()
    assert received.hexdigest() == hashlib.sha256(data).hexdigest()
    # While the receiver stalled for a second, move() waited in poll(): a busy loop (polling the
    # readable sender, splicing into the full pipe) spends most of that second on the CPU.
    assert cpu < 0.5, f"move() used {cpu:.2f} s of CPU for 24 MB with a one-second stall"
    # The sender's socket is left as it was found (a download's browser connection carries on).
    assert src.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_the_last_bytes_of_a_body_shorter_than_a_batch_arrive(sockets) -> None:
    sender, src, dst, receiver = sockets
    data = os.urandom(splice.BATCH + 1234)
    sender.sendall(data[:1000])
    threading.Timer(0.2, sender.sendall, args=(data[1000:],)).start()
    splice.move(src.fileno(), dst.fileno(), len(data), timeout=5)
    got = b""
    while len(got) < len(data):
        got += receiver.recv(len(data))
    assert got == data


def test_a_sender_that_closes_early_is_sender_gone(sockets) -> None:
    sender, src, dst, receiver = sockets
    sender.sendall(b"x" * 1000)
    sender.close()
    with pytest.raises(splice.SenderGone):
        splice.move(src.fileno(), dst.fileno(), 5000, timeout=5)


def test_a_receiver_that_answers_before_the_end_is_receiver_gone(sockets) -> None:
    sender, src, dst, receiver = sockets
    sender.sendall(b"x" * 1000)
    receiver.sendall(b"HTTP/1.1 507 Insufficient Storage\r\n\r\n")
    with pytest.raises(splice.ReceiverGone):
        splice.move(src.fileno(), dst.fileno(), 5000, timeout=5, answer=True)


def test_nothing_moving_times_out(sockets) -> None:
    sender, src, dst, receiver = sockets
    sender.sendall(b"x" * 10)
    with pytest.raises(TimeoutError):
        splice.move(src.fileno(), dst.fileno(), 5000, timeout=0.3)
