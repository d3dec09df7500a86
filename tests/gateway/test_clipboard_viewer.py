"""The viewer in real Chromium through the real gateway to a real agent (a light application):
an image an X application copies (xclip) lands on the browser's clipboard with its pixels, also
when the page had no focus at that moment (written on the user's next click); an image pasted
in the page reaches X's CLIPBOARD as image/png before the paste key does; and HiDPI: at
devicePixelRatio 2 the display is twice the page area, `Xft.dpi` is 192 and the video is shown
1:1 in device pixels, clicks landing where they point; a change of the ratio is followed."""
from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from Xlib import X, Xatom, display as xdisplay
from Xlib.ext import xfixes

from tests.files.test_gimp_roundtrip import session_display
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, eventually, make_jwt, user
from tests.gateway.xrecord import XRecorder
from tests.input.test_clipboard_images import png, stop, xclip_offer, xclip_read

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CLIPBOARD = ["clipboard-read", "clipboard-write"]

# The page's clipboard: its first image as PNG bytes (base64), or null.
READ_IMAGE = """async () => {
    for (const item of await navigator.clipboard.read()) {
        if (!item.types.includes('image/png')) continue;
        const bytes = new Uint8Array(await (await item.getType('image/png')).arrayBuffer());
        let s = ''; for (const b of bytes) s += String.fromCharCode(b);
        return btoa(s);
    }
    return null; }"""
WRITE_IMAGE = """async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    await navigator.clipboard.write([new ClipboardItem({ 'image/png': new Blob([bytes], { type: 'image/png' }) })]); }"""


@pytest.fixture
async def session(gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(client, session id, its display) of Alice's running session."""
    # HiDPI grows the display to device pixels: room for it is configured (each session's
    # Xvfb holds its --session-max-size framebuffer; the default is the session size).
    client = await gateway(auth="jwt", agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           session_size="640x400", session_max_size="1920x1200")
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=user("alice"))
    sid = (await r.json())["id"]

    async def running() -> bool:
        r = await client.get(f"/api/sessions/{sid}", headers=user("alice"))
        return (await r.json())["phase"] == "running"
    await eventually(running)
    monkeypatch.setenv("XAUTHORITY", str(tmp_path / "data" / "run" / sid / "Xauthority"))
    return client, sid, session_display(sid)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_viewer(context: BrowserContext, client, sid: str, query: str = "&resize=0") -> Page:
    page = await context.new_page()
    await page.goto(f"{str(client.make_url('')).rstrip('/')}/streaming/{sid}/?token={make_jwt('alice')}{query}")
    await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
    # Connected is ICE; the agent knows the page only once its input channel is open (the
    # agent's first message on it says the role): a copy announced before then is not sent.
    await page.wait_for_function("window.viewer.presence && window.viewer.presence.role === 'owner'",
                                 timeout=60_000)
    return page


def pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def same_pixels(a: bytes, b: bytes) -> bool:
    first, second = pixels(a), pixels(b)
    return first.size == second.size and ImageChops.difference(first, second).getbbox() is None


class OwnerChanges:
    """CLIPBOARD's owner changes as the X server reports them (XFixes), with server times."""

    def __init__(self, display_name: str) -> None:
        self._d = xdisplay.Display(display_name)
        self._d.xfixes_query_version()
        window = self._d.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
        self._d.xfixes_select_selection_input(window, self._d.intern_atom("CLIPBOARD"),
                                              xfixes.XFixesSetSelectionOwnerNotifyMask)
        self._d.sync()
        self.times: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            while self._d.pending_events():
                event = self._d.next_event()
                if hasattr(event, "selection_timestamp"):
                    self.times.append(event.timestamp)
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._d.close()


async def test_an_image_copied_in_the_session_reaches_the_browsers_clipboard(session, browser: Browser) -> None:
    client, sid, display = session
    context = await browser.new_context(permissions=CLIPBOARD, viewport={"width": 800, "height": 500})
    page = await open_viewer(context, client, sid)
    image = png(160, 90, seed=5)
    proc = await xclip_offer(display, image)
    try:
        async def on_clipboard() -> bool:
            got = await page.evaluate(READ_IMAGE)
            return got is not None and same_pixels(base64.b64decode(got), image)
        await eventually(on_clipboard, timeout=30)
        assert await page.locator(".clipboard-hint").is_hidden()
    finally:
        await stop(proc)

    # A page without focus (the user is in another tab) may not write: the image is written on
    # the next click in the page, and the page says so meanwhile.
    cdp = await context.new_cdp_session(page)
    await cdp.send("Emulation.setFocusEmulationEnabled", {"enabled": False})  # real focus
    other = await context.new_page()
    await other.goto(str(client.make_url("/health")))  # same origin: it may read the clipboard
    await other.bring_to_front()
    second = png(70, 50, seed=9)
    proc = await xclip_offer(display, second)
    try:
        await page.wait_for_selector(".clipboard-hint", state="visible", timeout=30_000)
        assert "click" in await page.locator(".clipboard-hint").text_content()
        assert same_pixels(base64.b64decode(await other.evaluate(READ_IMAGE)), image)  # not yet
        await page.bring_to_front()
        await page.click("#screen")
        await page.wait_for_selector(".clipboard-hint", state="hidden", timeout=30_000)
        assert same_pixels(base64.b64decode(await page.evaluate(READ_IMAGE)), second)
    finally:
        await stop(proc)
    await context.close()


async def test_an_image_pasted_in_the_page_is_on_x_before_the_paste_key(session, browser: Browser) -> None:
    client, sid, display = session
    context = await browser.new_context(permissions=CLIPBOARD, viewport={"width": 800, "height": 500})
    page = await open_viewer(context, client, sid)
    image = png(700, 500, noise=True)  # about 1 MB
    await page.evaluate(WRITE_IMAGE, base64.b64encode(image).decode())
    # A slow upload: the PUT reaches the gateway seconds later, and the paste key must wait.
    # (Chromium's network emulation would also hold back the data channel's packets.)
    async def slow(route) -> None:
        await asyncio.sleep(3)
        await route.continue_()
    await page.route("**/clipboard", slow)
    owners = OwnerChanges(display)
    recorder = XRecorder(display)
    try:
        await page.focus("#screen")
        await page.keyboard.press("Control+v")
        control = await asyncio.to_thread(recorder.next_press, "key", 30)  # Ctrl goes at once
        paste = await asyncio.to_thread(recorder.next_press, "key", 60)  # V waits for the upload
        assert owners.times, "the agent took CLIPBOARD"
        assert paste.time >= owners.times[-1] > control.time  # on X: Ctrl, the image, then V
        assert recorder.text_of(paste.detail) == "v"
    finally:
        recorder.close()
        owners.close()
    # Chromium gives the page the image re-encoded: the same pixels, as X applications paste it.
    assert same_pixels(await xclip_read(display, "image/png"), image)
    await context.close()


def x_screen(display: str) -> tuple[int, int]:
    d = xdisplay.Display(display)
    try:
        return d.screen().width_in_pixels, d.screen().height_in_pixels
    finally:
        d.close()


def xft_dpi(display: str) -> str | None:
    d = xdisplay.Display(display)
    try:
        prop = d.screen().root.get_full_property(d.intern_atom("RESOURCE_MANAGER"), Xatom.STRING)
        text = bytes(prop.value).decode() if prop else ""
        return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("Xft.dpi:")), None)
    finally:
        d.close()


async def test_hidpi_display_in_device_pixels_shown_one_to_one(session, browser: Browser) -> None:
    client, sid, display = session
    context = await browser.new_context(viewport={"width": 800, "height": 500}, device_scale_factor=2)
    page = await open_viewer(context, client, sid, query="")
    area = await page.evaluate("(() => { const r = document.getElementById('screen').getBoundingClientRect();"
                               " return [r.width, r.height]; })()")
    expected = (int(area[0] * 2) // 2 * 2, int(area[1] * 2) // 2 * 2)

    async def device_sized() -> bool:
        return await asyncio.to_thread(x_screen, display) == expected
    await eventually(device_sized, timeout=60)
    assert expected[0] >= 1500  # twice the CSS size of the viewer area
    assert await asyncio.to_thread(xft_dpi, display) == "192"
    await page.wait_for_function(f"window.viewer.display.width === {expected[0]}", timeout=30_000)
    shown = await page.evaluate("(() => { const r = document.getElementById('video').getBoundingClientRect();"
                                " return [r.left, r.top, r.width, r.height]; })()")
    assert shown[2] == pytest.approx(expected[0] / 2, abs=0.5)  # unscaled: 1 display pixel per
    assert shown[3] == pytest.approx(expected[1] / 2, abs=0.5)  # device pixel

    # A click lands on the device pixel it points at.
    recorder = XRecorder(display)
    try:
        target = (601, 333)  # display (device) pixels
        await page.mouse.click(shown[0] + (target[0] + 0.5) / 2, shown[1] + (target[1] + 0.5) / 2)
        press = await asyncio.to_thread(recorder.next_press, "button", 30)
        assert (press.x, press.y) == target
    finally:
        recorder.close()

    # The window goes to a screen of ratio 1 (and another size: headless Chromium re-evaluates
    # media queries only when the viewport's size changes too): the viewer asks again, at 96 DPI,
    # and shows the new display 1:1.
    cdp = await context.new_cdp_session(page)
    await cdp.send("Emulation.setDeviceMetricsOverride", {
        "width": 700, "height": 460, "deviceScaleFactor": 1, "mobile": False})
    area = await page.evaluate("(() => { const r = document.getElementById('screen').getBoundingClientRect();"
                               " return [r.width, r.height]; })()")
    expected = (int(area[0]) // 2 * 2, int(area[1]) // 2 * 2)
    await eventually(device_sized, timeout=60)
    assert await asyncio.to_thread(xft_dpi, display) == "96"
    await page.wait_for_function(f"window.viewer.display.width === {expected[0]}", timeout=30_000)
    shown = await page.evaluate("(() => { const r = document.getElementById('video').getBoundingClientRect();"
                                " return [r.width, r.height]; })()")
    assert shown == [pytest.approx(expected[0], abs=0.5), pytest.approx(expected[1], abs=0.5)]
    await context.close()
