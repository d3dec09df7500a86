"""Chromium in the client namespace (Playwright drives it through a wrapper that starts it with
`ip netns exec`), the real gateway over HTTPS (a certificate made for this run) and the agents
in the server namespace:

- real GIMP through a masquerading NAT: a secure context, a Secure cookie, Chromium's real
  offer with its `.local` host candidate answered without any mDNS query leaving the server,
  GIMP on screen, and clicks and keys landing on its X display;
- every UDP packet dropped by the client's firewall: the viewer takes the gateway's TURN
  servers and plays through coturn over TCP.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.gateway.xrecord import XRecorder
from tests.netlab import NetLab
from tests.netlab.browser import CHROMIUM_ARGS, KEEP_PCS
from tests.netlab.lab import SERVER_PRIVATE
from tests.netlab.services import (MDNS_COUNTER, TOKEN, TURN_SECRET, Coturn, LabGateway, deployed_turn_urls,
                                   expose_deployed_turn, mdns_queries)

SELECTED_PAIR = """async () => {
  const pc = window.__pcs[window.__pcs.length - 1]; const stats = await pc.getStats(); let pair = null;
  stats.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return { local: local.candidateType, relayProtocol: local.relayProtocol || null, localAddress: local.address,
           remote: remote.candidateType, remoteAddress: remote.address }; }"""
FRAMES = "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
# The video's picture: spread of grey levels of a 64×36 copy (a blank screen has none).
PICTURE_SPREAD = """() => { const v = document.getElementById('video'); const c = document.createElement('canvas');
  c.width = 64; c.height = 36; const g = c.getContext('2d'); g.drawImage(v, 0, 0, 64, 36);
  const d = g.getImageData(0, 0, 64, 36).data; let n = 0, s = 0, s2 = 0;
  for (let i = 0; i < d.length; i += 4) { const y = (d[i] + d[i + 1] + d[i + 2]) / 3; n++; s += y; s2 += y * y; }
  return Math.sqrt(s2 / n - (s / n) ** 2); }"""


@asynccontextmanager
async def browser_in(lab: NetLab) -> AsyncIterator[Browser]:
    executable = lab.client.wrapper("/usr/bin/chromium", lab.tmp)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_viewer(browser: Browser, gw: LabGateway, session: str) -> tuple[BrowserContext, object, list[str]]:
    context = await browser.new_context(viewport={"width": 960, "height": 600})
    await context.add_init_script(KEEP_PCS)
    page = await context.new_page()
    offers: list[str] = []
    page.on("request", lambda r: offers.append(r.post_data or "") if r.method == "POST" and r.url.endswith("/whep") else None)
    await page.goto(f"{gw.url}/streaming/{session}/?token={TOKEN}&resize=0")
    assert page.url == f"{gw.url}/streaming/{session}/?resize=0"  # the token became a cookie
    await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=90_000)
    await page.wait_for_function(f"{FRAMES} > 0", timeout=60_000)
    return context, page, offers


async def click_and_type(page, recorder: XRecorder, size: tuple[int, int]) -> None:
    """A click on the page lands on X where it points; typed keys arrive one by one."""
    box = await page.locator("#screen").bounding_box()
    scale = min(box["width"] / size[0], box["height"] / size[1])
    x0 = box["x"] + (box["width"] - size[0] * scale) / 2
    y0 = box["y"] + (box["height"] - size[1] * scale) / 2
    target = (int(size[0] * 0.41), int(size[1] * 0.57))
    await page.mouse.click(x0 + (target[0] + 0.5) * scale, y0 + (target[1] + 0.5) * scale)
    press = await asyncio.to_thread(recorder.next_press, "button", 30)
    assert (press.detail, press.x, press.y) == (1, *target)
    # One key more than read back: X's RECORD holds its last events until more come.
    await page.keyboard.type("lab.", delay=50)
    typed = [recorder.text_of((await asyncio.to_thread(recorder.next_press, "key", 30)).detail) for _ in range(3)]
    assert "".join(typed) == "lab"


@pytest.fixture(scope="module")
def nat_gimp() -> Iterator[tuple[NetLab, LabGateway, str]]:
    with NetLab() as lab:
        lab.server.iptables("-I", *MDNS_COUNTER)
        gw = LabGateway(lab, app="gimp --no-splash").start()
        yield lab, gw, gw.start_session()


async def test_chromium_plays_gimp_over_https_through_a_nat_and_its_input_lands(nat_gimp) -> None:
    lab, gw, session = nat_gimp
    with gw.x_cookie(session):
        recorder = XRecorder(gw.agent_of(session)[1])
    try:
        async with browser_in(lab) as browser:
            context, page, offers = await open_viewer(browser, gw, session)
            assert await page.evaluate("window.isSecureContext")
            (cookie,) = [c for c in await context.cookies() if c["name"] == "gateway_auth"]
            assert cookie["secure"] and cookie["httpOnly"]
            # Chromium's own offer hides its address behind an mDNS name...
            assert any(".local " in line for line in offers[0].splitlines() if line.startswith("a=candidate:"))
            # ...and the agent answered without asking for it; the media path is the NAT's.
            assert mdns_queries(lab) == 0
            pair = await page.evaluate(SELECTED_PAIR)
            assert pair["remoteAddress"] == lab.server_public, pair
            # GIMP is on screen (not a blank display), and it keeps playing.
            await page.wait_for_function(f"({PICTURE_SPREAD})() > 10", timeout=120_000)
            played = await page.evaluate(FRAMES)
            await click_and_type(page, recorder, (1280, 720))
            await page.wait_for_function(f"{FRAMES} > {played}", timeout=60_000)
    finally:
        recorder.close()


@pytest.fixture(scope="module")
def udp_blocked() -> Iterator[tuple[NetLab, LabGateway, str]]:
    with NetLab(server_nat="ports") as lab:
        lab.forward("tcp", 8443)
        expose_deployed_turn(lab)
        urls = deployed_turn_urls(lab.server_public)
        gw = LabGateway(lab, args=("--turn-urls", urls, "--turn-secret", TURN_SECRET)).start()
        Coturn.as_deployed(lab, lab.server, SERVER_PRIVATE, gw.cert, gw.key).start()
        session = gw.start_session()
        lab.block_udp()
        yield lab, gw, session


async def test_chromium_with_udp_blocked_plays_through_turn_over_tcp(udp_blocked) -> None:
    lab, gw, session = udp_blocked
    with gw.x_cookie(session):
        recorder = XRecorder(gw.agent_of(session)[1])
    try:
        async with browser_in(lab) as browser:
            _, page, _ = await open_viewer(browser, gw, session)
            pair = await page.evaluate(SELECTED_PAIR)
            assert pair["local"] == "relay" and pair["relayProtocol"] in ("tcp", "tls"), pair
            played = await page.evaluate(FRAMES)
            await click_and_type(page, recorder, (1280, 720))
            await page.wait_for_function(f"{FRAMES} > {played}", timeout=60_000)
        assert lab.udp_drops() > 0
    finally:
        recorder.close()
