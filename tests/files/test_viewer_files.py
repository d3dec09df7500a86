"""The viewer's files (gateway/web/files.js) in real Chromium, through the real gateway to a real
agent: a file dropped on the viewer lands in the home, the panel browses, makes folders,
deletes, shows what the application saved, and downloads byte for byte; a cancelled upload
leaves nothing."""
from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.files.conftest import Gateway, tree
from tests.files.test_gateway_files import upload_open_in
from tests.gateway.conftest import make_jwt

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def viewer(gateway: Gateway, browser: Browser, user_id: str) -> tuple[Page, str, Path]:
    sid = await gateway.session(user_id)
    page = await browser.new_page(accept_downloads=True, viewport={"width": 1000, "height": 640})
    await page.goto(f"{gateway.url}/streaming/{sid}/?token={make_jwt(user_id)}&resize=0")
    await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
    return page, sid, gateway.home_of(user_id)


async def drop(page: Page, target: str, files: dict[str, bytes]) -> None:
    """What a drag from the desktop delivers: dragenter, dragover and drop carrying Files."""
    transfer = await page.evaluate_handle("""(files) => {
        const data = new DataTransfer();
        for (const [name, b64] of Object.entries(files)) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            data.items.add(new File([bytes], name, { type: 'application/octet-stream' }));
        }
        return data; }""", {name: base64.b64encode(data).decode() for name, data in files.items()})
    for kind in ("dragenter", "dragover", "drop"):
        await page.dispatch_event(target, kind, {"dataTransfer": transfer})


def entry(name: str) -> str:
    return f'#files .files-entry[data-name="{name}"]'


async def test_drop_browse_download_and_delete(gateway: Gateway, browser: Browser) -> None:
    page, sid, home = await viewer(gateway, browser, "alice")
    photo, notes = os.urandom(3_000_000), "a note ✓".encode()  # large enough to move by splice
    # Dropped anywhere (here: on the video), into ~/Uploads, made on demand.
    await drop(page, "#screen", {"holiday photo.png": photo, "notes.txt": notes})
    assert not await page.locator("#files").is_hidden()  # the panel opened to show progress
    await page.wait_for_selector(entry("holiday photo.png"), timeout=60_000)
    await page.wait_for_selector(entry("notes.txt"), timeout=60_000)
    assert (home / "Uploads/holiday photo.png").read_bytes() == photo
    assert (home / "Uploads/notes.txt").read_bytes() == notes
    assert await page.locator("#files .files-path").text_content() == "~/Uploads"

    # A real browser download, byte-identical.
    async with page.expect_download() as info:
        await page.click(f'{entry("holiday photo.png")} a')
    download = await info.value
    assert download.suggested_filename == "holiday photo.png"
    assert Path(await download.path()).read_bytes() == photo

    # What the application saves shows up (here written straight into the home): Refresh.
    (home / "Uploads/saved by gimp.xcf").write_bytes(b"gimp xcf file")
    await page.click("#files .files-refresh")
    await page.wait_for_selector(entry("saved by gimp.xcf"), timeout=30_000)

    # A new folder, into it, a drop lands there, and back up.
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("Holiday 2026")))
    await page.click("#files .files-mkdir")
    await page.wait_for_selector(entry("Holiday 2026"), timeout=30_000)
    assert (home / "Uploads/Holiday 2026").is_dir()
    await page.click(f'{entry("Holiday 2026")} .files-name')
    await page.wait_for_function(
        "document.querySelector('#files .files-path').textContent === '~/Uploads/Holiday 2026'")
    await drop(page, "#screen", {"inside.bin": b"\x00\x01\x02"})
    await page.wait_for_selector(entry("inside.bin"), timeout=60_000)
    assert (home / "Uploads/Holiday 2026/inside.bin").read_bytes() == b"\x00\x01\x02"
    await page.click("#files .files-up")
    await page.wait_for_selector(entry("notes.txt"), timeout=30_000)

    # Delete asks first; "no" keeps the file, "yes" removes it; a full folder says so.
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
    await page.click(f'{entry("notes.txt")} .files-delete')
    await page.wait_for_timeout(300)
    assert (home / "Uploads/notes.txt").exists()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click(f'{entry("notes.txt")} .files-delete')
    await page.wait_for_selector(entry("notes.txt"), state="detached", timeout=30_000)
    assert not (home / "Uploads/notes.txt").exists()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click(f'{entry("Holiday 2026")} .files-delete')
    await page.wait_for_function(
        "document.querySelector('#files .files-status').textContent.includes('not empty')")
    assert (home / "Uploads/Holiday 2026/inside.bin").exists()

    # Up to the home: the folder is listed, dotfiles too.
    await page.click("#files .files-up")
    await page.wait_for_selector(entry("Uploads"), timeout=30_000)
    assert await page.locator("#files .files-path").text_content() == "~/"


async def test_a_cancelled_upload_leaves_nothing(gateway: Gateway, browser: Browser) -> None:
    page, sid, home = await viewer(gateway, browser, "carol")
    await page.click("#files-toggle")
    await page.wait_for_selector("#files .files-status", timeout=30_000)
    await page.wait_for_function("document.querySelector('#files .files-path').textContent === '~/Uploads'")
    before = tree(home / "Uploads")
    # Slow the upload down (DevTools throttling) so that Cancel comes in the middle of it.
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 512 * 1024})
    await page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(24 << 20)], 'huge.tif'));
        for (const kind of ['dragenter', 'dragover', 'drop'])
            document.getElementById('screen').dispatchEvent(new DragEvent(kind, { dataTransfer: data, bubbles: true }));
    }""")
    row = '#files .files-upload[data-name="huge.tif"]'
    await page.wait_for_function(f"document.querySelector('{row} progress')?.value > 0", timeout=60_000)
    deadline = time.monotonic() + 60
    while not upload_open_in(home):  # the agent is writing it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await page.click(f"{row} .files-cancel")
    await page.wait_for_function(f"document.querySelector('{row}')?.textContent.includes('cancelled')")
    while upload_open_in(home):  # the agent has seen the cut and let go
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert tree(home / "Uploads") == before
    assert not (home / "Uploads/huge.tif").exists()
