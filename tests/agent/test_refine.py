"""Exact pixels on a still screen (session_agent/media/refine.py): the pure tile logic, and a
real agent whose viewers get a lossless overlay that equals the X screen bit for bit."""
from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image
from Xlib import X, display as xdisplay

from session_agent.media.refine import TILE, bounding_box, changed_tiles, encode_png, overlay_rgba
from tests.agent_process import start_agent
from tests.whep_client import Viewer
from tests.xserver import fill_root, start_xvfb

APP = Path(__file__).with_name("still_image_app.py")
SIZE = (640, 360)


# -- pure ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 150),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=12))
def test_a_tile_is_marked_exactly_when_one_of_its_pixels_changed(width, height, points):
    before = np.zeros((height, width), np.uint32)
    after = before.copy()
    expected = np.zeros((-(-height // TILE), -(-width // TILE)), bool)
    for px, py in points:
        x, y = px % width, py % height
        after[y, x] = 0x00FF00
        expected[y // TILE, x // TILE] = True
    assert (changed_tiles(after, before) == expected).all()
    assert changed_tiles(after, None).all() and changed_tiles(after, before[:, :0] if width > 1 else None).all()
    box = bounding_box(expected, width, height)
    if not points:
        assert box is None
    else:
        x, y, w, h = box
        assert 0 <= x < width and 0 <= y < height and x + w <= width and y + h <= height
        xs = [p % width for p, _ in points]
        ys = [q % height for _, q in points]
        assert x <= min(xs) and max(xs) < x + w and y <= min(ys) and max(ys) < y + h


def test_the_overlay_is_opaque_and_exact_on_changed_tiles_and_transparent_elsewhere():
    rng = np.random.default_rng(1)
    screen = rng.integers(0, 256, (100, 150, 4), dtype=np.uint8)
    mask = np.zeros((2, 3), bool)
    mask[0, 0] = mask[1, 2] = True
    box = bounding_box(mask, 150, 100)
    assert box == (0, 0, 150, 100)
    png = encode_png(overlay_rgba(screen, mask, box))
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    assert (rgba[:64, :64, 3] == 255).all() and (rgba[64:, 128:, 3] == 255).all()
    assert (rgba[:64, :64, :3] == screen[:64, :64, 2::-1]).all()     # BGRA → RGB, bit for bit
    assert (rgba[64:, 128:, :3] == screen[64:, 128:, 2::-1]).all()
    assert (rgba[64:, :128, 3] == 0).all() and (rgba[:64, 64:128, 3] == 0).all()


# -- a real agent -------------------------------------------------------------------------

def x_screen(display: str, width: int, height: int) -> np.ndarray:
    """The X screen as (height, width, 3) RGB, read back from the server."""
    d = xdisplay.Display(display)
    try:
        raw = d.screen().root.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF).data
    finally:
        d.close()
    bgrx = np.frombuffer(raw, np.uint8).reshape(height, width, 4)
    return bgrx[..., 2::-1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.fixture(scope="module")
def still():
    x = start_xvfb(f"{SIZE[0]}x{SIZE[1]}")
    app = subprocess.Popen([sys.executable, str(APP), f"{SIZE[0]}x{SIZE[1]}"],
                           env={**os.environ, "DISPLAY": x.display})
    agent = start_agent(x.display)
    yield agent
    agent.stop()
    app.kill()
    app.wait()
    x.stop()


async def fetch(agent, refinement_id: int, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token or agent.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{agent.url}/refine/{refinement_id}", headers=headers) as r:
            return r.status, await r.read()


async def test_a_still_screen_is_followed_by_its_exact_pixels_once(still):
    viewer = Viewer(still.url, token=still.token)
    await viewer.connect()
    try:
        truth = x_screen(still.display, *SIZE)
        message = await viewer.receive("refine", timeout=20)
        assert message["full"] is True
        status, png = await fetch(still, message["id"])
        assert status == 200
        overlay = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
        x, y = message["x"], message["y"]
        assert (x, y, overlay.shape[1], overlay.shape[0]) == (0, 0, *SIZE)
        assert (overlay[..., 3] == 255).all()
        assert (overlay[..., :3] == x_screen(still.display, *SIZE)).all()  # bit for bit
        video = viewer.frame.to_ndarray(format="rgb24")
        assert psnr(video, truth) < 60  # the video alone is not exact: that is why this exists
        # Sent once: a still screen gets no second PNG (refresh frames change nothing; a
        # repaint of the same pixels only shows the same overlay again).
        deadline = time.monotonic() + 2.5
        while (left := deadline - time.monotonic()) > 0:
            try:
                again = await viewer.receive("refine", timeout=left)
            except asyncio.TimeoutError:
                break
            assert again["id"] == message["id"] and again.get("again") is True

        # A change: the overlay is hidden at once, then only the changed tiles come again.
        fill_root_window = (TILE * 2 + 5, TILE + 3, 10, 10)
        draw(still.display, fill_root_window, (250, 0, 250))
        await viewer.receive("unrefine", timeout=5)
        message = await viewer.receive("refine", timeout=5)
        assert message["full"] is False
        assert (message["x"], message["y"], message["width"], message["height"]) == (TILE * 2, TILE, TILE, TILE)
        status, png = await fetch(still, message["id"])
        patch = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
        now = x_screen(still.display, *SIZE)
        assert (patch[..., :3] == now[TILE:TILE * 2, TILE * 2:TILE * 3]).all()
        assert len(png) < 30_000
    finally:
        await viewer.close()


def draw(display: str, rect: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> None:
    """Paint on top of the application's window (an IncludeInferiors GC on the root)."""
    fill_root(display, rgb, rect)


async def test_refinements_need_the_token_and_unknown_ones_are_404(still):
    assert (await fetch(still, 1, token="wrong"))[0] == 401
    async with aiohttp.ClientSession() as http:
        for path in ("/refine/abc", "/refine/99999999999", "/refine/%C2%B2", "/refine/-1"):
            async with http.get(still.url + path, headers={"Authorization": f"Bearer {still.token}"}) as r:
                assert r.status == 404, path
                assert "error" in await r.json()
        assert still.health()[0] == 200  # and the agent is fine


def test_refine_flag_rejects_nonsense():
    for bad in ("-1", "nan", "inf", "soon"):
        result = subprocess.run([sys.executable, "-m", "session_agent", "--refine", bad],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert "--refine" in result.stderr and len(result.stderr.strip().splitlines()) <= 3
