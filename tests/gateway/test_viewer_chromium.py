"""The real viewer in real Chromium, through the real gateway, against a real agent streaming a
light application: it plays, and Chromium's own offer gets zero playout delay negotiated (the
receiver's low-latency path, docs/ARCHITECTURE.md "Latency")."""
from __future__ import annotations

import asyncio
import os

from playwright.async_api import async_playwright
from Xlib import display as xdisplay

from gateway.http import REGISTRY

from session_agent.media.rtpext import PLAYOUT_DELAY_URI
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, TOKEN, bearer
from tests.gateway.test_e2e_gimp import CHROMIUM_ARGS
from tests.gateway.test_whep_proxy import running_session

# Keeps every RTCPeerConnection the page makes, for reading its descriptions and stats.
KEEP_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) { const pc = new Native(...args); window.__pcs.push(pc); return pc; };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""


async def test_chromium_plays_with_zero_playout_delay_negotiated(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP}, session_size="640x360",
                           start_timeout=30)
    sid = await running_session(client, bearer())
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.add_init_script(KEEP_PEER_CONNECTIONS)
            await page.goto(str(client.make_url(f"/streaming/{sid}/?token={TOKEN}&resize=0")))
            await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
            await page.wait_for_function(
                "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames > 0", timeout=60_000)
            offer, answer = await page.evaluate(
                "[__pcs[0].localDescription.sdp, __pcs[0].remoteDescription.sdp]")
        finally:
            await browser.close()
    offered = [line for line in offer.splitlines() if line.endswith(" " + PLAYOUT_DELAY_URI)]
    assert offered, "Chromium no longer offers playout-delay"
    assert offered[0] in answer.splitlines()  # answered with Chromium's own id


def _pointer(display: str, xauthority: str) -> tuple[int, int]:
    os.environ["XAUTHORITY"] = xauthority  # the session's X server admits its cookie's holders only
    d = xdisplay.Display(display)
    try:
        p = d.screen().root.query_pointer()
        return p.root_x, p.root_y
    finally:
        d.close()


async def test_chromium_plays_over_the_websocket_and_input_lands(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP}, session_size="640x360",
                           start_timeout=30)
    sid = await running_session(client, bearer())
    spawner = client.app[REGISTRY].spawner
    display, xauthority = f":{spawner._displays[sid]}", str(spawner._run_dir / sid / "Xauthority")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 800, "height": 600})
            await page.add_init_script(KEEP_PEER_CONNECTIONS)
            await page.goto(str(client.make_url(f"/streaming/{sid}/?token={TOKEN}&resize=0&transport=ws")))
            await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
            assert await page.evaluate("window.viewer.transport") == "ws"
            assert await page.evaluate("window.__pcs.length") == 0  # no WebRTC attempt at all
            await page.wait_for_function("window.viewer.painted > 0", timeout=60_000)
            assert await page.evaluate("document.getElementById('video').hidden")
            # The canvas is sized and letterboxed like the video: a point maps to the same pixel.
            await page.wait_for_function("window.viewer.display.width === 640", timeout=30_000)
            left, top, width, height = await page.evaluate(
                "(() => { const r = document.getElementById('canvas').getBoundingClientRect();"
                " return [r.left, r.top, r.width, r.height]; })()")
            scale = min(width / 640, height / 360)
            target = (123, 234)
            x0, y0 = left + (width - 640 * scale) / 2, top + (height - 360 * scale) / 2
            await page.mouse.move(x0 + (target[0] + 0.5) * scale, y0 + (target[1] + 0.5) * scale)
            for _ in range(100):
                if await asyncio.to_thread(_pointer, display, xauthority) == target:
                    break
                await asyncio.sleep(0.1)
            assert await asyncio.to_thread(_pointer, display, xauthority) == target
            await page.click("#stats-toggle")
            await page.wait_for_function(
                "document.getElementById('stats').textContent.includes('glass-to-glass')", timeout=30_000)
            assert "WebSocket" in await page.text_content("#stats")
        finally:
            await browser.close()
