"""Exact pixels where the user sees them: Chromium, through the gateway, shows a still screen
bit for bit once the lossless overlay has come (the video alone cannot: 4:2:0)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image
from playwright.async_api import async_playwright

from tests.agent.still_image_app import picture
from tests.agent.test_refine import APP, psnr
from gateway.http import CONFIG, REGISTRY
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, TOKEN, bearer
from tests.gateway.test_e2e_gimp import CHROMIUM_ARGS
from tests.gateway.test_whep_proxy import running_session

WIDTH, HEIGHT = 640, 360


async def screen_pixels(page) -> np.ndarray:
    shot = await page.locator("#screen").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))


async def test_chromium_shows_a_still_screen_exactly(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           session_size=f"{WIDTH}x{HEIGHT}", start_timeout=30)
    sid = await running_session(client, bearer())
    for bad in ("x", "1e3", "%C2%B2", "123456789012"):
        r = await client.get(f"/streaming/{sid}/refine/{bad}", headers=bearer())
        assert r.status == 404 and "error" in await r.json(), bad
    r = await client.get("/streaming/nosuch/refine/1", headers=bearer())
    assert r.status == 404
    truth = picture(WIDTH, HEIGHT)
    # The picture comes from outside the sandbox (which shows only /usr and /etc), with the
    # display's own cookie, as a second client of the session's X server.
    display = f":{client.app[REGISTRY].spawner._displays[sid]}"
    xauthority = client.app[CONFIG].data_dir / "run" / sid / "Xauthority"
    app = subprocess.Popen([sys.executable, str(APP), f"{WIDTH}x{HEIGHT}"],
                           env={**os.environ, "DISPLAY": display, "XAUTHORITY": str(xauthority)})
    try:
        await look(client, sid, truth)
    finally:
        app.kill()
        app.wait()


async def look(client, sid: str, truth: np.ndarray) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=[*CHROMIUM_ARGS, "--force-color-profile=srgb"])
        try:
            page = await browser.new_page(viewport={"width": WIDTH, "height": 600})
            await page.goto(str(client.make_url(f"/streaming/{sid}/?token={TOKEN}&resize=0")))
            # The picture 1:1: the screen element exactly the display's size.
            top = await page.evaluate("document.getElementById('screen').getBoundingClientRect().top")
            await page.set_viewport_size({"width": WIDTH, "height": int(top) + HEIGHT})
            await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
            await page.wait_for_function("window.viewer.refined > 0", timeout=30_000)
            refined = await screen_pixels(page)
            await page.evaluate("document.getElementById('refine').style.visibility = 'hidden'")
            video = await screen_pixels(page)
        finally:
            await browser.close()
    assert refined.shape == truth.shape
    assert psnr(video, truth) < 45           # the video alone, as Chromium decodes it
    assert (refined == truth).all(), f"{psnr(refined, truth):.1f} dB"   # bit for bit
