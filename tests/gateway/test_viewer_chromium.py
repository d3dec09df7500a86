"""The real viewer in real Chromium, through the real gateway, against a real agent streaming a
light application: it plays, and Chromium's own offer gets zero playout delay negotiated (the
receiver's low-latency path, docs/ARCHITECTURE.md "Latency")."""
from __future__ import annotations

from playwright.async_api import async_playwright

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
