"""Motion-to-photon with the real application: a click at a random point of a GIMP image with the
pencil, through the data channel, until that pixel changes in the decoded stream; next to the
same with a bare X window that paints where it is clicked, so that what users will feel and how
much of it is GIMP's own drawing are both visible.

    python -m bench.motion_to_photon [--clicks 100] [--size 1920x1080] [--no-chromium] [--quick]

Two sessions of a real gateway (local spawner, token mode, loopback): one runs GIMP (its
configured command, a fresh home), one runs bench/click_window.py. Each is watched by an aiortc
client (bench/marker_client.py), which sends input on its `input` channel as the viewer does,
and by the real viewer page in Chromium (the picture 1:1, bench/browser_probe.js watching it).
GIMP is driven like a user: Ctrl+N, Enter (a new white image), N (the pencil, black, its
default brush). Each click: the pointer moves to a white point of the image not drawn yet,
100 ms later (GIMP draws its brush outline on hover) the button goes down, and the time until
the picture shows that pixel dark is the figure; then the button goes up. Through the aiortc
client: from `time.time()` just before the button message is sent to the decoded frame.
Through Chromium: a real mouse click on the page (playwright), from the page's pointerdown
event (its time stamp) to the probe seeing the pixel, both in the page's clock; the viewer's
input.js sends it. Clicks go to the four (session, viewer) pairs in random order after random
pauses, so all are measured under the same machine load. The Chromium figures are printed,
the aiortc client's next to them, and the agents' stage medians over the clicks.

Prints one JSON object per figure (bench/figures.py), `load_average` in each.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aioice.ice  # noqa: E402

import bench.marker_client  # noqa: E402,F401  (frames complete on the marker bit, as in a browser)
from bench.browser_latency import PROBE_JS, stage_medians, summary  # noqa: E402
from bench.figures import figure  # noqa: E402
from bench.session_harness import TOKEN, Gateway, chromium, load_average  # noqa: E402
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
    """One session, its aiortc viewer and (optionally) a Chromium page with the real viewer;
    `clicks[viewer]` are the measured latencies."""

    def __init__(self, name: str, app_command: str, size: str) -> None:
        self.name, self.app_command, self.size = name, app_command, size
        self.clicks: dict[str, list[float]] = {"aiortc": [], "chromium": []}
        self.done: list[tuple[int, int]] = []
        self.page = None

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

    async def settled(self, predicate, timeout: float, quiet_s: float = 0.5) -> Any:
        """Wait for a frame satisfying predicate, then for the stream to go quiet: no new frame
        for quiet_s (shorter than the agent's 2 s refresh, whose frames never stop)."""
        await self.viewer.wait_for(predicate, timeout=timeout)
        deadline = time.monotonic() + timeout
        frames = -1
        while frames != self.viewer.frames and time.monotonic() < deadline:
            frames = self.viewer.frames
            await asyncio.sleep(quiet_s)
        return self.viewer.frame

    async def prepare(self) -> None:
        """Find the white area to click in (GIMP: a new image, the pencil)."""
        if self.name == "gimp":
            # GIMP's window painted (many distinct values), then quiet: it is ready for keys.
            await self.settled(lambda f: luma(f).std() > 10, timeout=180, quiet_s=1.0)
            await asyncio.sleep(2.0)
            self.press("n", "KeyN", ctrl=True)     # File > New: the dialog
            await asyncio.sleep(2.0)
            self.press("Enter", "Enter")           # its default size, white
            await self.settled(lambda f: white_box(luma(f)) is not None, timeout=60, quiet_s=1.0)
            self.press("n", "KeyN")                # the pencil
            await asyncio.sleep(1.0)
        frame = await self.settled(lambda f: white_box(luma(f)) is not None, timeout=60, quiet_s=0.5)
        x0, y0, x1, y1 = white_box(luma(frame))
        self.box = (x0 + MIN_DISTANCE, y0 + MIN_DISTANCE, x1 - MIN_DISTANCE, y1 - MIN_DISTANCE)

    async def open_page(self, browser, stack: AsyncExitStack) -> None:
        """The real viewer in Chromium, the picture 1:1; clicks go through its input.js."""
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        stack.push_async_callback(context.close)
        page = await context.new_page()
        await page.add_init_script(PROBE_JS)
        await page.goto(self.gateway.viewer_url(self.sid))
        await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
        width, height = self.viewer.frame.width, self.viewer.frame.height
        self.origin = await page.evaluate("(() => { const r = document.getElementById('screen')"
                                          ".getBoundingClientRect(); return [r.left, r.top]; })()")
        await page.set_viewport_size({"width": width, "height": height + int(self.origin[1])})
        await page.evaluate("([s, m]) => __probe.attach(s, m)", ["#video", "videoframe"])
        await page.wait_for_function("__probe.playing()", timeout=60_000)
        await page.wait_for_function(f"window.viewer.display.width === {width}", timeout=30_000)
        self.page = page

    def point(self, rng: random.Random) -> tuple[int, int]:
        y = luma(self.viewer.frame)
        x0, y0, x1, y1 = self.box
        for _ in range(1000):
            p = (rng.randrange(x0, x1), rng.randrange(y0, y1))
            if y[p[1], p[0]] >= WHITE and all(abs(p[0] - q[0]) + abs(p[1] - q[1]) >= MIN_DISTANCE for q in self.done):
                return p
        raise RuntimeError(f"{self.name}: no white point left to click in {self.box}")

    async def click(self, rng: random.Random, via: str) -> None:
        x, y = self.point(rng)
        self.done.append((x, y))
        if via == "chromium":
            await self.click_in_page(x, y)
            return
        self.viewer.send({"type": "pointer", "x": x, "y": y})
        await asyncio.sleep(HOVER_S)
        t0 = time.time()
        self.viewer.send({"type": "button", "button": 1, "down": True})
        try:
            await self.viewer.wait_for(lambda f: luma(f)[y, x] < DARK, timeout=CLICK_TIMEOUT_S)
        except asyncio.TimeoutError:
            seen = luma(self.viewer.frame)[y, x]
            raise RuntimeError(f"{self.name}: the click at {(x, y)} never showed (luma {seen})") from None
        self.clicks["aiortc"].append((time.time() - t0) * 1000)
        self.viewer.send({"type": "button", "button": 1, "down": False})

    async def click_in_page(self, x: int, y: int) -> None:
        """A real mouse click on the page (playwright → Chromium's input → the viewer's
        input.js → the data channel), timed from the page's pointerdown event to the probe
        seeing the pixel dark, both in the page's clock."""
        page = self.page
        await page.mouse.move(self.origin[0] + x + 0.5, self.origin[1] + y + 0.5)
        await asyncio.sleep(HOVER_S)
        await page.evaluate("([x, y]) => __probe.arm([0, 0, 0], x, y, 255 - DARK)".replace("DARK", str(DARK)),
                            [x, y])
        await page.mouse.down()
        r = await page.evaluate(f"__probe.wait({CLICK_TIMEOUT_S * 1000}, false)")
        down = await page.evaluate("__probe.lastDown")
        await page.mouse.up()
        if r is None or r["poll"] is None or down is None:
            raise RuntimeError(f"{self.name}: the page never showed the click at {(x, y)} ({r}, down {down})")
        self.clicks["chromium"].append(r["poll"] - down)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=100, help="clicks per session and viewer")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--chromium", action=argparse.BooleanOptionalAction, default=True,
                        help="also click through the real viewer in Chromium")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20 clicks each")
    args = parser.parse_args()
    if args.quick:
        args.clicks = 20
    targets = [Target("gimp", "gimp --no-splash", args.size),
               Target("bare_x", f"{sys.executable} {ROOT / 'bench' / 'click_window.py'}", args.size)]
    vias = ["aiortc", "chromium"] if args.chromium else ["aiortc"]
    rng = random.Random(args.seed)
    async with AsyncExitStack() as stack:
        for t in targets:
            stack.push_async_callback(t.stop)
            await t.start()
        for t in targets:
            await t.prepare()
        if args.chromium:
            browser = await stack.enter_async_context(chromium())
            for t in targets:
                await t.open_page(browser, stack)
        before = [t.agent.metrics() for t in targets]
        turns = [(t, via) for t in targets for via in vias]
        for _ in range(args.clicks):
            for t, via in rng.sample(turns, len(turns)):
                await asyncio.sleep(rng.uniform(0.15, 0.5))
                await t.click(rng, via)
        stages = [stage_medians([(b, t.agent.metrics())]) for b, t in zip(before, targets)]
    load = load_average()
    # The figures are the Chromium viewer's (what users feel) when it ran, the aiortc client's next to them.
    main_via = "chromium" if args.chromium else "aiortc"
    results = {t.name: {via: summary(t.clicks[via]) for via in vias} for t in targets}
    for t, st in zip(targets, stages):
        other = "bare_x" if t.name == "gimp" else "gimp"
        mine = results[t.name][main_via]
        for q in ("p50", "p95"):
            extra = {"viewer": main_via, "clicks": mine["n"], "max_ms": mine["max"],
                     f"{other}_{q}_ms": results[other][main_via][q], "stages_median_ms": st,
                     "size": args.size, "load_average": load}
            if main_via != "aiortc":
                extra["aiortc_client"] = results[t.name]["aiortc"][q]
            print(json.dumps(figure(f"motion_to_photon.{t.name}_{q}_ms", mine[q], "ms", None, **extra)))


if __name__ == "__main__":
    asyncio.run(main())
