"""A stalled viewer (its process SIGSTOPped: it reads nothing, its socket buffer fills and the
kernel drops what follows) does not slow the other viewers of the session: a healthy viewer
keeps getting every new colour painted on X while the slow one is stalled."""
from __future__ import annotations

import asyncio
import json
import random
import signal
import urllib.request

from tests.agent_process import start_agent
from tests.faults import procs
from tests.whep_client import Viewer, colour_close
from tests.xserver import Xvfb, fill_root

TOKEN = "slow-token"


def peers(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
        return json.loads(r.read())["peers"]


async def test_stalled_viewer_does_not_slow_the_others(xvfb: Xvfb) -> None:
    rng = random.Random(7)
    colours = [tuple(rng.choice((30, 110, 190, 250)) for _ in range(3)) for _ in range(12)]
    colours = [c for i, c in enumerate(colours) if i == 0 or c != colours[i - 1]][:5]
    agent = start_agent(xvfb.display, token=TOKEN)
    healthy = Viewer(agent.url, token=TOKEN)
    slow = None
    try:
        fill_root(xvfb.display, (0, 0, 0))
        await healthy.connect()
        slow = procs.ViewerProcess(agent.url, "/whep", TOKEN)
        await asyncio.to_thread(slow.wait_ready)
        assert peers(agent.url) == 2
        slow.signal(signal.SIGSTOP)  # stalled from here on
        for colour in colours:
            fill_root(xvfb.display, colour)
            await healthy.wait_for_colour(colour, timeout=30)
        slow.signal(signal.SIGCONT)
        # Afterwards the slow viewer catches up (a keyframe) or, silent too long, was reaped.
        await asyncio.to_thread(
            procs.wait_until,
            lambda: any(colour_close(c, colours[-1]) for c in slow.colours()) or peers(agent.url) == 1,
            60, what="the slow viewer catches up or is reaped")
        # The healthy one still follows.
        fill_root(xvfb.display, (5, 5, 5))
        await healthy.wait_for_colour((5, 5, 5), timeout=30)
        assert agent.proc.poll() is None
    finally:
        if slow is not None:
            slow.kill()
        await healthy.close()
        agent.stop()
