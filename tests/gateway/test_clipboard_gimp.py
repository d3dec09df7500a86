"""Images between real GIMP and Chromium's clipboard, through the real viewer, gateway and agent:
an image on the browser's clipboard, pasted in the page with Ctrl+Shift+V, becomes GIMP's new
image (Edit > Paste as New Image: its window title says its size); GIMP's own Copy of it (Select
All, Ctrl+C) reaches the browser's clipboard and `GET /streaming/{id}/clipboard` as image/png
with the same pixels; Ctrl+V pastes another image into it (Edit > Paste: a second layer)."""
from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser
from Xlib import X, display as xdisplay

from tests.files.test_gimp_roundtrip import session_display
from tests.gateway.conftest import REAL_AGENT, eventually, user
from tests.gateway.test_clipboard_viewer import (CLIPBOARD, READ_IMAGE, WRITE_IMAGE, browser,  # noqa: F401
                                                 open_viewer, same_pixels)
from tests.input.test_clipboard_images import png

SIZE = (123, 77)  # a size no GIMP window has by chance


@pytest.fixture
async def gimp_session(gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(client, session id, its display) of Alice's session running real GIMP, its windows up."""
    client = await gateway(auth="jwt", agent_command=REAL_AGENT, session_size="1280x720", start_timeout=180.0)
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=user("alice"))
    sid = (await r.json())["id"]

    async def running() -> bool:
        r = await client.get(f"/api/sessions/{sid}", headers=user("alice"))
        return (await r.json())["phase"] == "running"
    await eventually(running, timeout=180)
    monkeypatch.setenv("XAUTHORITY", str(tmp_path / "data" / "run" / sid / "Xauthority"))
    display = session_display(sid)

    async def gimp_up() -> bool:  # the empty image window: GIMP takes keys from now on
        return any("GNU Image Manipulation Program" in t for t in await asyncio.to_thread(titles, display))
    await eventually(gimp_up, timeout=180)
    return client, sid, display


def titles(display: str) -> list[str]:
    """The titles of the window manager's client windows."""
    d = xdisplay.Display(display)
    try:
        root = d.screen().root
        clients = root.get_full_property(d.intern_atom("_NET_CLIENT_LIST"), X.AnyPropertyType)
        found = []
        for wid in clients.value if clients else []:
            name = d.create_resource_object("window", wid).get_full_property(
                d.intern_atom("_NET_WM_NAME"), d.intern_atom("UTF8_STRING"))
            if name is not None:
                found.append(bytes(name.value).decode(errors="replace"))
        return found
    finally:
        d.close()


async def test_images_between_gimp_and_the_browsers_clipboard(gimp_session, browser: Browser) -> None:
    client, sid, display = gimp_session
    context = await browser.new_context(permissions=CLIPBOARD, viewport={"width": 1000, "height": 640})
    page = await open_viewer(context, client, sid)
    image = png(*SIZE, seed=3)
    await page.evaluate(WRITE_IMAGE, base64.b64encode(image).decode())

    # Paste as New Image: Chromium hands the page no image for Ctrl+Shift+V (a plain-text
    # paste), so the page reads its clipboard, uploads the image, then GIMP gets the keys.
    await page.focus("#screen")
    await page.keyboard.press("Control+Shift+v")
    size = re.compile(rf"\b{SIZE[0]}x{SIZE[1]}\b")

    async def pasted() -> list[str]:
        return [t for t in await asyncio.to_thread(titles, display) if size.search(t)]
    new_image = await eventually(pasted, timeout=60)
    assert "Untitled" in new_image[0], new_image

    # GIMP's Copy, announced by the agent and fetched by the page; the browser's clipboard is
    # emptied first, so what is found there came from GIMP.
    await page.evaluate("navigator.clipboard.writeText('nothing yet')")
    await page.keyboard.press("Control+a")
    await page.keyboard.press("Control+c")

    async def on_clipboard() -> bool:
        got = await page.evaluate(READ_IMAGE)
        return got is not None and same_pixels(base64.b64decode(got), image)
    await eventually(on_clipboard, timeout=60)

    r = await client.get(f"/streaming/{sid}/clipboard", headers=user("alice"))
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    copied = await r.read()
    assert same_pixels(copied, image)
    assert copied != image  # GIMP's own encoding of the pixels, not the bytes we gave it

    # Paste (Ctrl+V) into the open image: another image from the browser (handed to the page
    # with the paste event), GIMP's floating selection makes a second layer.
    await page.evaluate(WRITE_IMAGE, base64.b64encode(png(40, 30, seed=7)).decode())
    await page.keyboard.press("Control+v")

    async def layered() -> list[str]:
        return [t for t in await asyncio.to_thread(titles, display) if size.search(t) and "2 layers" in t]
    await eventually(layered, timeout=60)
    await context.close()
