"""Benchmark: exact pixels on a still screen (session_agent/media/refine.py).

    python -m bench.refine [--quick] [--runs 5]

A real agent on a 1920x1080 Xvfb shows tests/agent/still_image_app.py: a photograph-like left
half (smooth colour gradients with grain) and small coloured text on a blue ground on the
right. Each run replaces the picture (a new seed) and an aiortc viewer, decoding the H.264
stream, reports for each half the PSNR (RGB, against the pixels read back from X) of the
decoded video once it has settled, and of what the viewer shows after the refinement (the
video with the lossless overlay over it); the refinement's bytes; the time from the change
(the agent's `unrefine`, sent from the damage notification) to the overlay fetched and
decoded; and a small change (a line of text) for the same. Then the agent's CPU on the still
screen. Prints one JSON figure per line. The same in Chromium, bit for bit, is the test
tests/gateway/test_refine_chromium.py.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AGENT_ICE_ADDRESSES", "127.0.0.1")

import aiohttp  # noqa: E402
import aioice.ice  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.agent_media import cpu_percent  # noqa: E402  (also installs the marker jitter buffer)
from bench.figures import figure  # noqa: E402
from tests.agent.test_refine import APP, psnr, x_screen  # noqa: E402
from tests.agent_process import start_agent  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402
from tests.xserver import fill_root, start_xvfb  # noqa: E402

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

WIDTH, HEIGHT = 1920, 1080
EXACT_DB = 100.0  # what an identical picture is printed as (PSNR is infinite)


def db(value: float) -> float:
    return EXACT_DB if value == float("inf") else value


async def fetch_overlay(agent, message: dict) -> np.ndarray:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{agent.url}/refine/{message['id']}",
                            headers={"Authorization": f"Bearer {agent.token}"}) as r:
            r.raise_for_status()
            png = await r.read()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


class Overlay:
    """What a viewer assembles from the refinements, as gateway/web/refine.js does."""

    def __init__(self) -> None:
        self.rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)

    def apply(self, message: dict, png_rgba: np.ndarray) -> None:
        if message["full"]:
            self.rgba[:] = 0
        x, y = message["x"], message["y"]
        h, w = png_rgba.shape[:2]
        region = self.rgba[y:y + h, x:x + w]
        opaque = png_rgba[..., 3] == 255
        region[opaque] = png_rgba[opaque]

    def over(self, video: np.ndarray) -> np.ndarray:
        shown = video.copy()
        opaque = self.rgba[..., 3] == 255
        shown[opaque] = self.rgba[..., :3][opaque]
        return shown


async def next_refinement(viewer: Viewer, timeout: float = 10) -> tuple[dict, float | None]:
    """The next new refinement, and when the last `unrefine` before it came (monotonic)."""
    changed_at = None
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(viewer.messages.get(), max(0.01, deadline - time.monotonic()))
        if message.get("type") == "unrefine":
            changed_at = time.monotonic()
        elif message.get("type") == "refine" and not message.get("again"):
            return message, changed_at


def start_app(display: str, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(APP), f"{WIDTH}x{HEIGHT}", str(seed)],
                            env={**os.environ, "DISPLAY": display})


async def run(runs: int) -> list[dict]:
    x = start_xvfb(f"{WIDTH}x{HEIGHT}")
    app = start_app(x.display, 1)
    agent = start_agent(x.display)
    viewer = Viewer(agent.url, token=agent.token)
    rows = []
    try:
        await viewer.connect()
        assembled = Overlay()
        message, _ = await next_refinement(viewer, timeout=30)  # the first picture, settled
        assembled.apply(message, await fetch_overlay(agent, message))
        samples: dict[str, list[float]] = {k: [] for k in (
            "photo_before", "photo_after", "text_before", "text_after", "bytes", "converge_ms",
            "small_bytes", "small_converge_ms")}
        half = WIDTH // 2
        for seed in range(2, 2 + runs):
            old, app = app, start_app(x.display, seed)  # the new window covers the old one
            message, changed_at = await next_refinement(viewer)
            assembled.apply(message, await fetch_overlay(agent, message))
            done = time.monotonic()
            old.kill()
            old.wait()
            truth = x_screen(x.display, WIDTH, HEIGHT)
            # The old window going away repaints the same pixels: no new refinement.
            shown = assembled.over(viewer.frame.to_ndarray(format="rgb24"))
            await asyncio.sleep(1.5)  # the video's own settle frames have converged by now
            video = viewer.frame.to_ndarray(format="rgb24")
            samples["photo_before"].append(psnr(video[:, :half], truth[:, :half]))
            samples["text_before"].append(psnr(video[:, half:], truth[:, half:]))
            samples["photo_after"].append(db(psnr(shown[:, :half], truth[:, :half])))
            samples["text_after"].append(db(psnr(shown[:, half:], truth[:, half:])))
            samples["bytes"].append(message["bytes"])
            if changed_at is not None:
                samples["converge_ms"].append((done - changed_at) * 1000)
            # A small change: a line of text's worth.
            fill_root(x.display, (255, 255, 255), (half + 40, 500 + seed, 400, 14))
            message, changed_at = await next_refinement(viewer)
            assembled.apply(message, await fetch_overlay(agent, message))
            if changed_at is not None:
                samples["small_converge_ms"].append((time.monotonic() - changed_at) * 1000)
            samples["small_bytes"].append(message["bytes"])
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)
        static_cpu = await cpu_percent(agent.proc.pid, 10)
        med = {k: float(statistics.median(v)) if v else float("nan") for k, v in samples.items()}
        worst = {k: float(min(v)) if v else float("nan") for k, v in samples.items()}
        rows += [
            figure("refine.photo_psnr_video_db", med["photo_before"], "dB", None, False,
                   note="the decoded H.264 alone, settled (4:2:0)"),
            figure("refine.photo_psnr_refined_db", worst["photo_after"], "dB", 45, False,
                   note=f"worst of {runs}; {EXACT_DB:g} = identical"),
            figure("refine.text_psnr_video_db", med["text_before"], "dB", None, False),
            figure("refine.text_psnr_refined_db", worst["text_after"], "dB", 45, False,
                   note=f"worst of {runs}; {EXACT_DB:g} = identical"),
            figure("refine.full_screen_bytes", med["bytes"], "bytes", None),
            figure("refine.converge_ms", float(max(samples["converge_ms"] or [float("nan")])), "ms", 500,
                   note="change (damage seen) → overlay fetched and decoded, worst run"),
            figure("refine.small_change_bytes", med["small_bytes"], "bytes", None),
            figure("refine.small_change_converge_ms", float(max(samples["small_converge_ms"] or [float("nan")])),
                   "ms", 500),
            figure("refine.static_cpu_pct", static_cpu, "% of a core", 1,
                   note="agent, still screen after its refinement, one viewer, 10 s"),
        ]
    finally:
        await viewer.close()
        agent.stop()
        app.kill()
        app.wait()
        x.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two runs")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import json
    for row in asyncio.run(run(2 if args.quick else args.runs)):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
