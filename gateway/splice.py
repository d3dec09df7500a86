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

PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux (Python ≥ 3.10 names it; older ones do not)
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class SenderGone(ConnectionError):
    """The side the body comes from closed or reset its connection before the end."""


class ReceiverGone(ConnectionError):
    """The side the body goes to closed or reset its connection (it may have answered early)."""


def move(src: int, dst: int, count: int, timeout: float, answer: bool = False) -> None:
    """Moves exactly `count` bytes from socket `src` to socket `dst` (both non-blocking).
    Raises SenderGone, ReceiverGone (also, with `answer`, when `dst` answers before the end:
    an agent refusing an upload), or TimeoutError when nothing moves for `timeout` s."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # the default 64 KiB pipe works too, in more calls
        in_pipe = 0
        poller = select.poll()
        while count or in_pipe:
            moved = False
            if count and in_pipe < PIPE_SIZE:
                try:
                    n = os.splice(src, write_end, min(count, PIPE_SIZE - in_pipe), flags=_FLAGS)
                except BlockingIOError:
                    n = -1
                except OSError as exc:
                    raise SenderGone(exc.errno, exc.strerror) from None
                if n == 0:
                    raise SenderGone("the sender closed the connection")
                if n > 0:
                    count, in_pipe, moved = count - n, in_pipe + n, True
            if in_pipe:
                try:
                    in_pipe -= os.splice(read_end, dst, in_pipe, flags=_FLAGS)
                    moved = True
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise ReceiverGone(exc.errno, exc.strerror) from None
            if not moved and _wait(poller, src if count and in_pipe < PIPE_SIZE else None,
                                   dst if in_pipe else None, dst if answer else None, timeout):
                raise ReceiverGone("the receiver answered before the end of the body")
    finally:
        os.close(read_end)
        os.close(write_end)


def _wait(poller: select.poll, readable: int | None, writable: int | None, answering: int | None,
          timeout: float) -> bool:
    """Until `readable` can be read or `writable` written; True if `answering` spoke first."""
    masks: dict[int, int] = {}
    if readable is not None:
        masks[readable] = masks.get(readable, 0) | select.POLLIN
    if writable is not None:
        masks[writable] = masks.get(writable, 0) | select.POLLOUT
    if answering is not None:
        masks[answering] = masks.get(answering, 0) | select.POLLIN
    for fd, mask in masks.items():
        poller.register(fd, mask)
    try:
        events = poller.poll(timeout * 1000)
    finally:
        for fd in masks:
            poller.unregister(fd)
    if not events:
        raise TimeoutError(f"no data moved for {timeout:g} s")
    return any(fd == answering and event & (select.POLLIN | select.POLLHUP | select.POLLERR)
               for fd, event in events)


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
