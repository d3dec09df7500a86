"""Sharing benchmark: many viewers of one session, one encode for all.

    python bench/sharing.py [--viewers 20] [--size 640x360] [--quick]

One agent process on its own Xvfb, under full-screen motion (bench/xpaint.py). Figures:
agent CPU with 1 viewer and with N viewers (one encode for all: N ≤ 1 + 20 %), each viewer's
decoded fps with N watching (the slowest and the median), the owner's glass-to-glass latency
p95 alone and with N-1 others watching (within 10 %), and how long a revoked share's viewer
takes to be told and disconnected (SPEC: within 1 s). Every viewer is a real aiortc client
decoding real frames (bench/marker_client.py); the N-1 watchers run in a process of their own
(`--watch`), so that their decoding shares the machine's cores with the owner's client but not
its event loop. Half of the N are WebSocket viewers (tests/ws_client.py, PyAV decoding each
access unit), half WebRTC; revocation is timed on both. CPU is % of one core, from /proc.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AGENT_ICE_ADDRESSES", "127.0.0.1")

import aioice.ice  # noqa: E402
import aiohttp  # noqa: E402

import bench.marker_client  # noqa: E402,F401  (frames complete on the marker bit, as in a browser)
from bench.agent_media import close, cpu_percent, small_rgb  # noqa: E402
from bench.figures import figure  # noqa: E402
from bench.xpaint import PAINTER  # noqa: E402
from tests.agent_process import free_port, wait_healthy  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402
from tests.ws_client import WsViewer  # noqa: E402
from tests.xserver import fill_root, start_xvfb  # noqa: E402

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
TOKEN = "bench-sharing-token"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def latencies(owner: Viewer, display: str, samples: int, seed: int) -> list[float]:
    """Glass to glass for the owner: paint a colour on X, time the first decoded frame showing it."""
    rng = random.Random(seed)
    out = []
    for i in range(samples):
        await asyncio.sleep(rng.uniform(0.15, 0.35))
        rgb = (rng.randrange(40, 256), rng.randrange(0, 256), (i * 97) % 256)
        t0 = time.perf_counter()
        await asyncio.to_thread(fill_root, display, rgb)
        await owner.wait_for(lambda f: close(small_rgb(f), rgb), timeout=10)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def under_motion(pid: int, display: str, viewers: list[Viewer], seconds: float) -> tuple[float, list[float]]:
    """(agent CPU %, each viewer's decoded fps) while the screen is in full motion."""
    painter = subprocess.Popen([sys.executable, "-c", PAINTER, display, str(seconds + 1.5)])
    try:
        await asyncio.sleep(1)
        frames0 = [v.frames for v in viewers]
        t0 = time.monotonic()
        cpu = await cpu_percent(pid, seconds - 0.5)
        elapsed = time.monotonic() - t0
        fps = [(v.frames - f0) / elapsed for v, f0 in zip(viewers, frames0)]
    finally:
        await asyncio.to_thread(painter.wait)
    return cpu, fps


async def join(url: str, share: str | None = None, ws: bool = False) -> Viewer | WsViewer:
    headers = {"X-Viewer-Role": "view", "X-Viewer-Share": share, "X-Viewer-Label": share} if share else {}
    viewer = (WsViewer if ws else Viewer)(url, token=TOKEN, headers=headers)
    await viewer.connect()
    await viewer.wait_for(lambda f: f.width > 0, timeout=60)
    return viewer


async def revoke_ms(url: str, rounds: int) -> list[float]:
    """POST /viewers/disconnect for a share -> answered once the agent has told its viewer
    (`disconnect` message) and closed it; the viewer has the message by then."""
    out = []
    async with aiohttp.ClientSession() as http:
        for i in range(rounds):
            guest = await join(url, f"shrevoke{i}", ws=i % 2 == 1)
            try:
                t0 = time.perf_counter()
                async with http.post(f"{url}/viewers/disconnect", json={"share": f"shrevoke{i}"},
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 200 and (await r.json())["disconnected"] == 1
                await guest.receive("disconnect", timeout=10)
                out.append((time.perf_counter() - t0) * 1000)
            finally:
                await guest.close(delete=False)
    return out


def ws_watchers(count: int) -> int:
    """How many of the `count` watchers use the WebSocket: with the owner (WebRTC), half of all."""
    return (count + 1) // 2


async def watch(url: str, count: int) -> None:
    """`--watch`: keep `count` view-only viewers decoding; on each line "fps" from stdin print
    their fps since the last mark as JSON, "ready" once all are connected; exit at EOF."""
    viewers = [await join(url, f"shwatch{i}", ws=i < ws_watchers(count)) for i in range(count)]
    loop = asyncio.get_running_loop()
    mark, frames = time.monotonic(), [v.frames for v in viewers]
    print(json.dumps({"ready": count}), flush=True)
    try:
        while (line := await loop.run_in_executor(None, sys.stdin.readline)):
            if line.strip() == "fps":
                now = time.monotonic()
                print(json.dumps({"fps": [(v.frames - f) / (now - mark) for v, f in zip(viewers, frames)]}), flush=True)
                mark, frames = now, [v.frames for v in viewers]
    finally:
        for v in viewers:
            await v.close(delete=False)


class Watchers:
    """The `--watch` process, driven over its stdin/stdout."""

    def __init__(self, url: str, count: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--watch", url, "--viewers", str(count)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    async def read(self) -> dict:
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if not line:
            raise RuntimeError("the watchers' process ended")
        return json.loads(line)

    async def fps(self) -> list[float]:
        self.proc.stdin.write("fps\n")
        self.proc.stdin.flush()
        return (await self.read())["fps"]

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def run(count: int, size: str, quick: bool) -> list[dict]:
    xvfb = start_xvfb(size)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = subprocess.Popen([sys.executable, "-m", "session_agent", "--display", xvfb.display,
                              "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN,
                              "--max-peers", str(count + 4)], cwd=ROOT, stderr=subprocess.DEVNULL)
    viewers: list[Viewer] = []
    watchers: Watchers | None = None
    motion_s, samples = (6, 12) if quick else (15, 40)
    try:
        await wait_healthy(url)
        owner = await join(url)
        viewers.append(owner)
        fill_root(xvfb.display, (0, 0, 0))
        await owner.wait_for(lambda f: close(small_rgb(f), (0, 0, 0)), timeout=30)
        alone = await latencies(owner, xvfb.display, samples, 7)
        cpu_one, _ = await under_motion(agent.pid, xvfb.display, viewers, motion_s)
        watchers = Watchers(url, count - 1)
        assert (await watchers.read())["ready"] == count - 1
        await watchers.fps()  # the mark
        cpu_all, owner_fps = await under_motion(agent.pid, xvfb.display, viewers, motion_s)
        fps = owner_fps + await watchers.fps()
        await asyncio.sleep(1)
        crowded = await latencies(owner, xvfb.display, samples, 7)
        revoked = await revoke_ms(url, 5 if quick else 15)
    finally:
        if watchers is not None:
            watchers.stop()
        for v in viewers:
            await v.close(delete=False)
        agent.terminate()
        agent.wait(15)
        xvfb.stop()
    ws = ws_watchers(count - 1)
    common = {"viewers": count, "transports": {"webrtc": count - ws, "ws": ws}, "size": size}
    return [
        figure("sharing.cpu_n_over_1", cpu_all / cpu_one if cpu_one else float("inf"), "ratio", 1.2,
               cpu_1_percent=round(cpu_one, 1), cpu_n_percent=round(cpu_all, 1), **common),
        figure("sharing.viewer_fps_min", min(fps), "fps", None, lower_is_better=False,
               median_fps=round(statistics.median(fps), 1), **common),
        figure("sharing.owner_p95_crowded_over_alone", p95(crowded) / p95(alone), "ratio", 1.1,
               p95_alone_ms=round(p95(alone), 1), p95_crowded_ms=round(p95(crowded), 1),
               samples=samples, **common),
        figure("sharing.revoke_to_disconnect_p95_ms", p95(revoked), "ms", 1000,
               max_ms=round(max(revoked), 1), rounds=len(revoked)),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter phases")
    parser.add_argument("--watch", metavar="URL", help=argparse.SUPPRESS)  # the watchers' process
    args = parser.parse_args()
    if args.watch:
        await watch(args.watch, args.viewers)
        return
    if args.viewers < 2:
        parser.error("--viewers must be at least 2")
    for row in await run(args.viewers, args.size, args.quick):
        print(json.dumps(row))


if __name__ == "__main__":
    asyncio.run(main())
