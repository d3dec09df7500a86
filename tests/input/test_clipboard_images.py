"""Images on the X clipboard both ways, against xclip (a real X client), INCR-sized included:
an application's PNG is announced as `{"mime": "image/png", "size"}` and never as text, an image
a peer sets is offered to X applications as `image/png`, and binary content never passes as text."""
from __future__ import annotations

import asyncio
import io
import json
import os
import random

from PIL import Image

from session_agent.input.clipboard import MAX_IMAGE_BYTES, PNG, Content, classify
from session_agent.input.session import InputSession
from tests.input.recorder import TIMEOUT, Peer
from tests.input.test_clipboard import xclip_out
from tests.xserver import Xvfb


def png(width: int, height: int, *, noise: bool = False, seed: int = 1) -> bytes:
    """A PNG; with `noise` incompressible, so that its size is about width × height × 3."""
    if noise:
        image = Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))
    else:
        image = Image.new("RGB", (width, height))
        image.putdata([(x * 7 % 256, y * 5 % 256, seed * 40 % 256) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


async def xclip_offer(display: str, data: bytes, target: str = PNG) -> asyncio.subprocess.Process:
    """Copy like an application offering `target`: xclip owns CLIPBOARD until somebody takes it."""
    proc = await asyncio.create_subprocess_exec(
        "xclip", "-i", "-selection", "clipboard", "-t", target, "-quiet",
        env={**os.environ, "DISPLAY": display}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    proc.stdin.write(data)
    proc.stdin.close()
    return proc


async def xclip_read(display: str, target: str, selection: str = "clipboard", *,
                     check: bool = True, timeout: float = TIMEOUT * 2) -> bytes | None:
    """What an application pasting `target` gets (None, unless `check`: nothing to paste)."""
    proc = await asyncio.create_subprocess_exec(
        "xclip", "-o", "-selection", selection, "-t", target,
        env={**os.environ, "DISPLAY": display}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        await stop(proc)
    assert proc.returncode == 0 or not check
    return out if proc.returncode == 0 else None


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


def announced(peer: Peer) -> list[dict]:
    return peer.of_type("clipboard")


async def settled(session: InputSession, display: str) -> Content | None:
    """The content once the agent has seen an application's copy and read it (or given up):
    once CLIPBOARD answers TARGETS its owner has taken it, and the agent has heard of that
    (XFixes told it first); `clipboard()` then waits for the read to end."""
    async with asyncio.timeout(TIMEOUT * 2):
        while True:
            try:  # xclip loses a request that comes while it hands a large copy over: ask again
                if await xclip_read(display, "TARGETS", check=False, timeout=1) is not None:
                    break
            except TimeoutError:
                pass
            await asyncio.sleep(0.05)  # still reading its stdin
    await asyncio.sleep(0.1)
    return await session.clipboard()


def test_classify() -> None:
    assert classify(b"\x89PNG\r\n\x1a\n rest") == Content(PNG, b"\x89PNG\r\n\x1a\n rest")
    assert classify("héllo".encode()) == Content.text("héllo")
    assert classify("h\xe9llo".encode("latin-1"), prop_type=31) == Content.text("héllo")  # STRING
    assert classify(b"\xff\xfe\x00binary") is None
    assert classify(b"text with a \x00 NUL") is None


async def test_an_applications_image_is_announced_and_never_sent_as_text(
        session: InputSession, xvfb: Xvfb) -> None:
    peers = [Peer(), Peer()]
    for peer in peers:
        session.channel(peer.send)
    image = png(120, 80)
    proc = await xclip_offer(xvfb.display, image)
    try:
        for peer in peers:
            await peer.wait_for(lambda got: any(m["type"] == "clipboard" for m in got))
            assert announced(peer) == [{"type": "clipboard", "mime": "image/png", "size": len(image)}]
        assert await session.clipboard() == Content(PNG, image)
    finally:
        await stop(proc)


async def test_a_large_image_comes_whole_through_incr(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    session.channel(peer.send)
    image = png(1500, 1400, noise=True)  # 6.3 MB: xclip sends it in INCR chunks
    assert len(image) > 6_000_000
    proc = await xclip_offer(xvfb.display, image)
    try:
        await peer.wait_for(lambda got: any(m["type"] == "clipboard" for m in got))
        assert announced(peer) == [{"type": "clipboard", "mime": "image/png", "size": len(image)}]
        assert (await session.clipboard()).data == image
    finally:
        await stop(proc)


async def test_an_image_over_the_limit_is_not_taken(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    session.channel(peer.send)
    image = png(3500, 3300, noise=True)
    assert len(image) > MAX_IMAGE_BYTES
    proc = await xclip_offer(xvfb.display, image)
    try:
        assert await settled(session, xvfb.display) is None  # drained, not kept
        assert announced(peer) == []
        # the next copy is read as usual
        await stop(proc)
        small = png(10, 10)
        proc = await xclip_offer(xvfb.display, small)
        await peer.wait_for(lambda got: any(m["type"] == "clipboard" for m in got))
        assert (await session.clipboard()).data == small
    finally:
        await stop(proc)


async def test_a_peers_image_is_offered_to_applications_as_png(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    ch = session.channel(peer.send)
    ch.on_message(json.dumps({"type": "clipboard", "text": "earlier text"}))
    image = png(2000, 1800, noise=True)  # 10.8 MB: served in INCR chunks
    session.set_clipboard_content(Content(PNG, image))
    targets = (await xclip_read(xvfb.display, "TARGETS")).decode().split()
    assert targets == ["TARGETS", "image/png"]
    assert await xclip_read(xvfb.display, PNG) == image
    assert await xclip_read(xvfb.display, PNG) == image  # as often as applications paste
    assert await xclip_out(xvfb.display, "primary") == "earlier text"  # images: CLIPBOARD only
    assert await session.clipboard() == Content(PNG, image)
    await asyncio.sleep(0.2)
    assert announced(peer) == []  # not echoed to peers


async def test_text_set_after_an_image_replaces_it(session: InputSession, xvfb: Xvfb) -> None:
    session.set_clipboard_content(Content(PNG, png(8, 8)))
    session.channel(Peer().send).on_message(json.dumps({"type": "clipboard", "text": "now text"}))
    assert await xclip_out(xvfb.display, "clipboard") == "now text"
    assert "image/png" not in (await xclip_read(xvfb.display, "TARGETS")).decode()
    assert await session.clipboard() == Content.text("now text")


async def test_binary_offered_as_text_is_never_sent_as_text(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    session.channel(peer.send)
    proc = await xclip_offer(xvfb.display, b"\x00\x01\xfe\xff binary \x80\x81", "UTF8_STRING")
    try:
        assert await settled(session, xvfb.display) is None
        assert announced(peer) == []
    finally:
        await stop(proc)
    # PNG bytes offered as UTF8_STRING (what made the agent send "\x89PNG…" as text) are an image
    image = png(30, 20)
    proc = await xclip_offer(xvfb.display, image, "UTF8_STRING")
    try:
        await peer.wait_for(lambda got: any(m["type"] == "clipboard" for m in got))
        assert announced(peer) == [{"type": "clipboard", "mime": "image/png", "size": len(image)}]
    finally:
        await stop(proc)


async def test_text_an_application_copies_is_the_clipboard(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    session.channel(peer.send)
    proc = await xclip_offer(xvfb.display, "copié ✓".encode(), "UTF8_STRING")
    try:
        await peer.wait_for(lambda got: any(m["type"] == "clipboard" for m in got))
        assert announced(peer) == [{"type": "clipboard", "text": "copié ✓"}]
        assert await session.clipboard() == Content.text("copié ✓")
    finally:
        await stop(proc)


async def test_the_clipboard_is_empty_once_its_owner_is_gone(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    session.channel(peer.send)
    proc = await xclip_offer(xvfb.display, png(16, 16))
    await peer.wait_for(lambda got: any(m["type"] == "clipboard" for m in got))
    assert await session.clipboard() is not None
    await stop(proc)
    async with asyncio.timeout(TIMEOUT):
        while await session.clipboard() is not None:
            await asyncio.sleep(0.05)
