"""How much unsent data the kernel keeps for a stream socket (pure stdlib)."""
from __future__ import annotations

import asyncio
import socket

# Unsent bytes the kernel keeps for a socket (TCP_NOTSENT_LOWAT). Without it Linux accepts
# megabytes into the send buffer, seconds of video on a slow link, and the backlog the gate
# (backpressure.py) judges stays invisible in user space.
NOTSENT_LOWAT = 16 * 1024
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


def limit_unsent(transport: asyncio.BaseTransport | None, lowat: int = NOTSENT_LOWAT) -> None:
    """Sets TCP_NOTSENT_LOWAT on the transport's TCP socket; anything else is left as it is."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, lowat)
        except OSError:  # not Linux: the gate still sees what asyncio buffers
            pass
