"""Moving a large HTTP body between two sockets inside the kernel (splice(2) through a pipe).

The files proxy (`gateway/files.py`) relays uploads and downloads of any size; copying every
byte through Python twice per hop halves what the disk could do. For a body of known length
on plain TCP the gateway hands it to the kernel instead: the browser's socket → a pipe → the
agent's socket (uploads), or the other way (downloads). The agent side is a stdlib
`http.client` connection, so that the request head and the agent's answer are still parsed by
a real HTTP implementation. Everything here blocks: it runs on the files proxy's threads.
"""
from __future__ import annotations

import fcntl
import http.client
import os
import select
import socket

PIPE_SIZE = 1 << 20
BATCH = 256 << 10  # bytes the sender's socket holds before a wake-up (SO_RCVLOWAT)
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux (Python ≥ 3.10 names it; older ones do not)
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class SenderGone(ConnectionError):
    """The side the body comes from closed or reset its connection before the end."""


class ReceiverGone(ConnectionError):
    """The side the body goes to closed or reset its connection (it may have answered early)."""


def move(src: int, dst: int, count: int, timeout: float, answer: bool = False) -> None:
    """Moves exactly `count` bytes from socket `src` to socket `dst` (both non-blocking).
    Raises SenderGone, ReceiverGone (also, with `answer`, when `dst` answers before the end:
    an agent refusing an upload), or TimeoutError when nothing moves for `timeout` s.

    A splice() is made only after poll() said it can move bytes, and `src` is not polled while
    the pipe is full: a pipe holds a number of buffers, not of bytes, and a socket's small
    segments fill them long before PIPE_SIZE. Polling `src` then (it is readable) and splicing
    into the full pipe (BlockingIOError) was a busy loop, most of this thread's CPU while the
    receiver was the slower side. SO_RCVLOWAT on `src` makes a wake-up bring a batch rather
    than what one segment carried."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    lowat = 0
    try:
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # the default 64 KiB pipe works too, in more calls
        in_pipe, pipe_full = 0, False
        poller = select.poll()
        registered: dict[int, int] = {}
        while count or in_pipe:
            if count and min(count, BATCH) != lowat and _set_lowat(src, min(count, BATCH)):
                lowat = min(count, BATCH)  # the last bytes of the body must wake us too
            masks = {src: select.POLLIN} if count and not pipe_full else {}
            if in_pipe or answer:
                masks[dst] = (select.POLLOUT if in_pipe else 0) | (select.POLLIN if answer else 0)
            for fd in registered.keys() - masks.keys():
                poller.unregister(fd)
            for fd, mask in masks.items():
                if registered.get(fd) != mask:
                    poller.register(fd, mask)  # registers or modifies
            registered = masks
            events = dict(poller.poll(timeout * 1000))
            if not events:
                raise TimeoutError(f"no data moved for {timeout:g} s")
            if answer and events.get(dst, 0) & (select.POLLIN | select.POLLHUP | select.POLLERR):
                raise ReceiverGone("the receiver answered before the end of the body")
            if src in masks and events.get(src, 0):
                n = _splice(src, write_end, min(count, PIPE_SIZE - in_pipe), SenderGone)
                if n == 0:
                    raise SenderGone("the sender closed the connection")
                if n > 0:
                    count, in_pipe = count - n, in_pipe + n
                pipe_full = in_pipe >= PIPE_SIZE or (n < 0 and in_pipe > 0)
            if in_pipe and events.get(dst, 0) & (select.POLLOUT | select.POLLHUP | select.POLLERR):
                n = _splice(read_end, dst, in_pipe, ReceiverGone)
                if n > 0:
                    in_pipe, pipe_full = in_pipe - n, False
    finally:
        if lowat:
            _set_lowat(src, 1)  # the connection may carry on (a download's browser)
        os.close(read_end)
        os.close(write_end)


def _set_lowat(sock: int, value: int) -> bool:
    try:
        with socket.socket(fileno=os.dup(sock)) as s:  # a duplicate: closing it leaves `sock` open
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, value)
        return True
    except OSError:
        return False


def _splice(src: int, dst: int, count: int, gone: type[ConnectionError]) -> int:
    """splice(2); -1 when it would block after all (rare: poll said it would not)."""
    try:
        return os.splice(src, dst, count, flags=_FLAGS)
    except BlockingIOError:
        return -1
    except OSError as exc:
        raise gone(exc.errno, exc.strerror) from None


def upload(host: str, port: int, target: str, headers: dict[str, str], head: bytes, client: int,
           remaining: int, timeout: float) -> tuple[int, list[tuple[str, str]], bytes]:
    """PUT `target` on the agent: the head of the body the gateway already read, then
    `remaining` bytes straight from the browser's socket `client`; the agent's answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        assert conn.sock is not None
        try:
            if head:
                conn.sock.sendall(head)
            move(client, conn.sock.fileno(), remaining, timeout, answer=True)
        except (ReceiverGone, BrokenPipeError, ConnectionResetError):
            pass  # the agent stopped reading: its answer (413, 507, …) says why
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()  # before the end of the body, this is what tells the agent it was cut


class Download:
    """GET on the agent, its head read; `rest()` moves the body to the browser's socket."""

    def __init__(self, host: str, port: int, target: str, headers: dict[str, str],
                 timeout: float) -> None:
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            self.conn.request("GET", target, headers=headers)
            self.response = self.conn.getresponse()
        except BaseException:
            self.conn.close()
            raise
        self.status = self.response.status
        self.headers = self.response.getheaders()
        length = self.response.getheader("Content-Length")
        self.length = int(length) if length and length.isdigit() else None

    def read(self) -> bytes:
        """A small body, whole (an error, a listing)."""
        try:
            return self.response.read()
        finally:
            self.close()

    def buffered(self) -> bytes:
        """What http.client already read beyond the head (at most its buffer)."""
        assert self.length is not None and self.response.fp is not None
        return self.response.fp.read(min(len(self.response.fp.peek(1)), self.length))

    def rest(self, client: int, count: int) -> None:
        assert self.conn.sock is not None
        move(self.conn.sock.fileno(), client, count, self.timeout)

    def close(self) -> None:
        self.conn.close()
