"""Motion-to-photon with the real application: a click at a random point of a GIMP image with the
pencil, through the data channel, until that pixel changes in the decoded stream; next to the
same with a bare X window that paints where it is clicked, so that what users will feel and how
much of it is GIMP's own drawing are both visible.

    python -m bench.motion_to_photon [--clicks 100] [--size 1920x1080] [--quick]

Two sessions of a real gateway (local spawner, token mode, loopback): one runs GIMP (its
configured command, a fresh home), one runs bench/click_window.py. An aiortc client
(bench/marker_client.py) watches each and sends input on its `input` channel, as the viewer
does. GIMP is driven like a user: Ctrl+N, Enter (a new white image), N (the pencil, black,
its default brush). Each click: the pointer moves to a white point of the image not drawn yet,
100 ms later (GIMP draws its brush outline on hover) the button goes down (`time.time()` just
before the message is sent) and the time until a decoded frame shows that pixel dark is the
figure; then the button goes up. Clicks alternate between the two sessions, after random
pauses, so both are measured under the same machine load. The agents' stage medians over the
clicks are printed with the figures.

Prints one JSON object per figure (bench/figures.py), `load_average` in each.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aioice.ice  # noqa: E402

import bench.marker_client  # noqa: E402,F401  (frames complete on the marker bit, as in a browser)
from bench.browser_latency import stage_medians, summary  # noqa: E402
from bench.figures import figure  # noqa: E402
from bench.session_harness import TOKEN, Gateway, load_average  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

WHITE, DARK = 200, 100        # luma: the image's white, and "drawn"
CLICK_TIMEOUT_S = 5.0
HOVER_S = 0.1
MIN_DISTANCE = 40             # display pixels between clicks: a new dot never lands on an old one


def luma(frame) -> np.ndarray:
    """The decoded frame's Y plane as a height × width array (no colour conversion)."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return rows[:frame.height, :frame.width]


def white_box(y: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the largest white rectangle-ish area: the rows and columns of the
    frame that are mostly white. GIMP's image is the only large white area of its window."""
    white = y >= WHITE
    cols = np.flatnonzero(white.mean(axis=0) > 0.5)
    rows = np.flatnonzero(white.mean(axis=1) > 0.5)
    if len(cols) < 100 or len(rows) < 100:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


class Target:
    """One session and its viewer; `clicks` are the measured latencies."""

    def __init__(self, name: str, app_command: str, size: str) -> None:
        self.name, self.app_command, self.size = name, app_command, size
        self.clicks: list[float] = []
        self.done: list[tuple[int, int]] = []

    async def start(self) -> None:
        self.gateway = Gateway(size=self.size, app_command=self.app_command)
        self.sid = await self.gateway.start_session(timeout=180)
        self.agent = self.gateway.agent(self.sid)
        self.viewer = Viewer(self.gateway.base, token=TOKEN)
        await self.viewer.connect(f"/streaming/{self.sid}/whep")

    async def stop(self) -> None:
        try:
            await self.viewer.close()
        finally:
            self.gateway.stop()

    def key(self, key: str, code: str, down: bool) -> None:
        self.viewer.send({"type": "key", "key": key, "code": code, "down": down})

    def press(self, key: str, code: str, ctrl: bool = False) -> None:
        if ctrl:
            self.key("Control", "ControlLeft", True)
        self.key(key, code, True)
        self.key(key, code, False)
        if ctrl:
            self.key("Control", "ControlLeft", False)

    async def settled(self, predicate, timeout: float, quiet_s: float = 1.0) -> Any:
        """Wait for a frame satisfying predicate, then for the stream to go quiet (no new frame for quiet_s)."""
        await self.viewer.wait_for(predicate, timeout=timeout)
        frames = -1
        while frames != self.viewer.frames:
            frames = self.viewer.frames
            await asyncio.sleep(quiet_s)
        return self.viewer.frame

    async def prepare(self) -> None:
        """Find the white area to click in (GIMP: a new image, the pencil)."""
        if self.name == "gimp":
            # GIMP's window painted (many distinct values), then quiet: it is ready for keys.
            await self.settled(lambda f: luma(f).std() > 10, timeout=180, quiet_s=2.0)
            self.press("n", "KeyN", ctrl=True)     # File > New: the dialog
            await asyncio.sleep(2.0)
            self.press("Enter", "Enter")           # its default size, white
            await self.settled(lambda f: white_box(luma(f)) is not None, timeout=60, quiet_s=1.0)
            self.press("n", "KeyN")                # the pencil
            await asyncio.sleep(1.0)
        frame = await self.settled(lambda f: white_box(luma(f)) is not None, timeout=60, quiet_s=0.5)
        x0, y0, x1, y1 = white_box(luma(frame))
        self.box = (x0 + MIN_DISTANCE, y0 + MIN_DISTANCE, x1 - MIN_DISTANCE, y1 - MIN_DISTANCE)

    def point(self, rng: random.Random) -> tuple[int, int]:
        y = luma(self.viewer.frame)
        x0, y0, x1, y1 = self.box
        for _ in range(1000):
            p = (rng.randrange(x0, x1), rng.randrange(y0, y1))
            if y[p[1], p[0]] >= WHITE and all(abs(p[0] - q[0]) + abs(p[1] - q[1]) >= MIN_DISTANCE for q in self.done):
                return p
        raise RuntimeError(f"{self.name}: no white point left to click in {self.box}")

    async def click(self, rng: random.Random) -> None:
        x, y = self.point(rng)
        self.viewer.send({"type": "pointer", "x": x, "y": y})
        await asyncio.sleep(HOVER_S)
        t0 = time.time()
        self.viewer.send({"type": "button", "button": 1, "down": True})
        try:
            await self.viewer.wait_for(lambda f: luma(f)[y, x] < DARK, timeout=CLICK_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise RuntimeError(f"{self.name}: the click at {(x, y)} never showed (luma {luma(self.viewer.frame)[y, x]})") from None
        self.clicks.append((time.time() - t0) * 1000)
        self.viewer.send({"type": "button", "button": 1, "down": False})
        self.done.append((x, y))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=100, help="clicks per session")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20 clicks each")
    args = parser.parse_args()
    if args.quick:
        args.clicks = 20
    targets = [Target("gimp", "gimp --no-splash", args.size),
               Target("bare_x", f"{sys.executable} {ROOT / 'bench' / 'click_window.py'}", args.size)]
    rng = random.Random(args.seed)
    try:
        for t in targets:
            await t.start()
        for t in targets:
            await t.prepare()
        before = [t.agent.metrics() for t in targets]
        for _ in range(args.clicks):
            for t in rng.sample(targets, len(targets)):
                await asyncio.sleep(rng.uniform(0.15, 0.5))
                await t.click(rng)
        stages = [stage_medians([(b, t.agent.metrics())]) for b, t in zip(before, targets)]
    finally:
        for t in targets:
            await t.stop()
    load = load_average()
    gimp, bare = (summary(t.clicks) for t in targets)
    for name, s, other, st in (("gimp", gimp, bare, stages[0]), ("bare_x", bare, gimp, stages[1])):
        for q in ("p50", "p95"):
            print(json.dumps(figure(f"motion_to_photon.{name}_{q}_ms", s[q], "ms", None, clicks=s["n"],
                                    max_ms=s["max"], stages_median_ms=st, size=args.size, load_average=load,
                                    **{f"{'bare_x' if name == 'gimp' else 'gimp'}_{q}_ms": other[q]})))


if __name__ == "__main__":
    asyncio.run(main())
