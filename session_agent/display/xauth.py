"""The Xauthority file of an owned X server: one fresh MIT-MAGIC-COOKIE-1.

Xvfb reads it with `-auth FILE` and then admits only clients that present the cookie; every
client (this agent's python-xlib and mss connections, the window manager, the application)
finds it through XAUTHORITY. The format (what libXau reads and writes) is a list of entries,
each: family (uint16 big-endian), then address, display number, auth name and auth data, each
as a uint16 big-endian length followed by the bytes.
"""
from __future__ import annotations

import os
import secrets
import socket
import struct

COOKIE = b"MIT-MAGIC-COOKIE-1"
FAMILY_LOCAL = 256  # a Unix-socket connection on the host named in the address
FAMILY_WILD = 65535  # any address (libXau honours it; python-xlib only reads FamilyLocal)


def _field(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def entry(family: int, address: bytes, number: str, cookie: bytes) -> bytes:
    return (struct.pack(">H", family) + _field(address) + _field(number.encode())
            + _field(COOKIE) + _field(cookie))


def parse(data: bytes) -> list[tuple[int, bytes, bytes, bytes, bytes]]:
    """(family, address, number, name, data) of every entry; for tests and checks."""
    entries, i = [], 0
    while i < len(data):
        (family,) = struct.unpack_from(">H", data, i)
        i += 2
        fields = []
        for _ in range(4):
            (n,) = struct.unpack_from(">H", data, i)
            fields.append(data[i + 2:i + 2 + n])
            i += 2 + n
        entries.append((family, *fields))
    return entries


def write_cookie(path: str, display: str) -> bytes:
    """Write a fresh cookie for `display` (":N") into `path` and return it.

    An existing file is rewritten in place, so it keeps its owner and mode (the local spawner
    creates it for the uid the application runs as); a new one is made 0600. A symlink is
    refused: the path must be the file itself."""
    number = display.split(":", 1)[1].split(".")[0]
    cookie = secrets.token_bytes(16)
    data = (entry(FAMILY_LOCAL, socket.gethostname().encode(), number, cookie)
            + entry(FAMILY_WILD, b"", number, cookie))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return cookie
