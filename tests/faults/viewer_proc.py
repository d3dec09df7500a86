"""A WHEP viewer in its own process, so that a test can SIGKILL or SIGSTOP it like a browser
tab that vanishes or stalls:

    python -m tests.faults.viewer_proc BASE_URL WHEP_PATH TOKEN [--hold]

It connects (aiortc), waits for a first frame, with --hold presses ShiftLeft and the left
button (and waits for a pong, so they were injected), prints `ready`, then prints the centre
colour of every new frame as `colour R G B` until it is killed."""
from __future__ import annotations

import asyncio
import os
import sys

import aioice.ice

from tests.whep_client import Viewer, pixel

if os.environ.get("AGENT_ICE_ADDRESSES"):  # loopback only, as in the test process
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: os.environ["AGENT_ICE_ADDRESSES"].split(",")


async def main(base_url: str, path: str, token: str, hold: bool) -> None:
    viewer = Viewer(base_url, token=token)
    await viewer.connect(path)
    frame = await viewer.wait_for(lambda f: f.width > 0, timeout=60)
    if hold:
        viewer.send({"type": "pointer", "x": 20, "y": 20})
        viewer.send({"type": "key", "code": "ShiftLeft", "key": "Shift", "down": True})
        viewer.send({"type": "button", "button": 1, "down": True})
        viewer.send({"type": "ping", "t": 1})
        await viewer.receive("pong", timeout=30)
    print("ready", flush=True)
    last = None
    while True:
        frame = await viewer.wait_for(lambda f: f is not frame, timeout=3600)
        colour = pixel(frame)
        if colour != last:
            print("colour", *colour, flush=True)
            last = colour


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], "--hold" in sys.argv[4:]))
