"""Clipboard both ways against xclip, a real X client, including INCR-sized transfers."""
from __future__ import annotations

import asyncio
import json
import os

from session_agent.input.clipboard import MAX_TEXT_BYTES
from session_agent.input.session import InputSession
from tests.input.recorder import TIMEOUT, Peer
from tests.xserver import Xvfb


async def xclip_out(display: str, selection: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "xclip", "-o", "-selection", selection, "-t", "UTF8_STRING",
        env={**os.environ, "DISPLAY": display}, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0
    return out.decode()


async def xclip_in(display: str, text: str) -> asyncio.subprocess.Process:
    """Copy like an application: xclip owns CLIPBOARD until somebody else takes it."""
    proc = await asyncio.create_subprocess_exec(
        "xclip", "-i", "-selection", "clipboard", "-quiet",
        env={**os.environ, "DISPLAY": display}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    proc.stdin.write(text.encode())
    proc.stdin.close()
    return proc


def clipboard_text(got: list[dict]) -> str | None:
    """The text of the last complete clipboard transfer (pieces joined)."""
    pieces, done = [], None
    for msg in got:
        if msg["type"] == "clipboard":
            pieces.append(msg["text"])
            if not msg.get("more"):
                done, pieces = "".join(pieces), []
    return done


async def test_peer_text_is_in_clipboard_and_primary(session: InputSession, xvfb: Xvfb) -> None:
    ch = session.channel(Peer().send)
    ch.on_message(json.dumps({"type": "clipboard", "text": "héllo 漢字 😀"}))
    assert await xclip_out(xvfb.display, "clipboard") == "héllo 漢字 😀"
    assert await xclip_out(xvfb.display, "primary") == "héllo 漢字 😀"


async def test_large_peer_text_in_pieces_is_served_with_incr(session: InputSession, xvfb: Xvfb) -> None:
    ch = session.channel(Peer().send)
    text = "0123456789abcdeé" * 40_000  # 680 KB: many X requests
    step = 100_000
    for i in range(0, len(text), step):
        ch.on_message(json.dumps({"type": "clipboard", "text": text[i:i + step],
                                  "more": i + step < len(text)}))
    assert await xclip_out(xvfb.display, "clipboard") == text


async def test_peer_text_over_the_limit_is_refused(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    ch = session.channel(peer.send)
    ch.on_message(json.dumps({"type": "clipboard", "text": "kept"}))
    piece = "x" * 200_000
    for _ in range(MAX_TEXT_BYTES // len(piece) + 1):
        ch.on_message(json.dumps({"type": "clipboard", "text": piece, "more": True}))
    ch.on_message(json.dumps({"type": "clipboard", "text": "end"}))
    assert [m["message"] for m in peer.of_type("error")] == ["clipboard text larger than 1048576 bytes"]
    assert await xclip_out(xvfb.display, "clipboard") == "kept"


async def test_application_copy_reaches_every_peer(session: InputSession, xvfb: Xvfb) -> None:
    peers = [Peer(), Peer()]
    for peer in peers:
        session.channel(peer.send)
    proc = await xclip_in(xvfb.display, "copied ✓ text")
    try:
        for peer in peers:
            await peer.wait_for(lambda got: clipboard_text(got) is not None)
            assert clipboard_text(peer.got) == "copied ✓ text"
    finally:
        proc.kill()
        await proc.wait()


async def test_large_application_copy_arrives_in_pieces(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    session.channel(peer.send)
    text = "línea de texto\n" * 30_000  # 480 KB: xclip sends it with INCR
    proc = await xclip_in(xvfb.display, text)
    try:
        await peer.wait_for(lambda got: clipboard_text(got) is not None)
        assert clipboard_text(peer.got) == text
        assert all(len(m["text"]) <= 4096 for m in peer.of_type("clipboard"))
    finally:
        proc.kill()
        await proc.wait()


async def test_own_text_is_not_echoed_back(session: InputSession, xvfb: Xvfb) -> None:
    peer = Peer()
    ch = session.channel(peer.send)
    ch.on_message(json.dumps({"type": "clipboard", "text": "mine"}))
    assert await xclip_out(xvfb.display, "clipboard") == "mine"  # the server has seen it all
    proc = await xclip_in(xvfb.display, "theirs")
    try:
        await peer.wait_for(lambda got: clipboard_text(got) is not None)
        assert clipboard_text(peer.got) == "theirs"
        assert len(peer.of_type("clipboard")) == 1
    finally:
        proc.kill()
        await proc.wait()
