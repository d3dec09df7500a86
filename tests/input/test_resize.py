"""`resize` changes the real X screen with RandR, clamped and evened, and every peer hears it."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess

from Xlib import Xatom
from Xlib.display import Display

from session_agent.display.randr import clamp_size, screen_size, set_screen_size
from session_agent.display.windows import has_window_manager
from session_agent.input.session import InputSession
from tests.input.recorder import TIMEOUT, Peer, Recorder
from tests.xserver import Xvfb, start_xvfb


def resized(got: list[dict]) -> list[tuple[int, int]]:
    return [(m["width"], m["height"]) for m in got if m["type"] == "resized"]


def test_clamp_size() -> None:
    assert clamp_size(1001, 777, (3840, 2160)) == (1000, 776)
    assert clamp_size(5000, 5000, (3840, 2160)) == (3840, 2160)
    assert clamp_size(1, 1, (3840, 2160)) == (64, 64)


def test_set_screen_size_grows_and_shrinks_within_the_framebuffer() -> None:
    server = start_xvfb("1920x1080")
    d = Display(server.display)
    try:
        for asked, got in [((800, 600), (800, 600)), ((1921, 1081), (1920, 1080)),
                           ((1280, 720), (1280, 720)), ((9999, 99), (1920, 98))]:
            assert set_screen_size(d, *asked) == got
            assert screen_size(d) == got
            assert Display(server.display).screen().width_in_pixels == got[0]  # a new client sees it
        modes = d.screen().root.xrandr_get_screen_resources().modes
        assert len(modes) <= 2  # the framebuffer mode and the current one: no pile-up
    finally:
        d.close()
        server.stop()


async def test_resize_message_resizes_screen_and_window_and_tells_every_peer(
        session: InputSession, recorder: Recorder, xvfb: Xvfb) -> None:
    peers = [Peer(), Peer()]
    ch = session.channel(peers[0].send)
    session.channel(peers[1].send)
    ch.on_message(json.dumps({"type": "resize", "width": 1025, "height": 601}))
    for peer in peers:
        await peer.wait_for(lambda got: (1024, 600) in resized(got))
    assert screen_size(recorder.d) == (1024, 600)
    # no window manager here: the agent refits the full-screen window itself
    geom = recorder.window.get_geometry()
    assert (geom.width, geom.height) == (1024, 600)
    ch.on_message(json.dumps({"type": "pointer", "x": 1100, "y": 10}))  # now off-screen
    assert peers[0].got[-1]["type"] == "error"


async def test_resize_is_clamped_to_the_agents_maximum(xvfb: Xvfb) -> None:
    session = InputSession(xvfb.display, max_size=(800, 600))
    await session.start()
    try:
        peer = Peer()
        session.channel(peer.send).on_message(json.dumps({"type": "resize", "width": 1000, "height": 1000}))
        await peer.wait_for(lambda got: (800, 600) in resized(got))
        assert session.size == (800, 600)
    finally:
        await session.stop()


async def test_resize_to_the_same_size_still_answers(session: InputSession) -> None:
    peer = Peer()
    ch = session.channel(peer.send)
    ch.on_message(json.dumps({"type": "resize", "width": 1280, "height": 720}))
    await peer.wait_for(lambda got: len(resized(got)) == 2)
    assert resized(peer.got) == [(1280, 720), (1280, 720)]


async def test_a_burst_of_resizes_ends_at_the_last_size(session: InputSession) -> None:
    peer = Peer()
    ch = session.channel(peer.send)
    for w in range(700, 1000, 10):
        ch.on_message(json.dumps({"type": "resize", "width": w, "height": 500}))
    await peer.wait_for(lambda got: resized(got)[-1] == (990, 500))
    assert len(resized(peer.got)) < 10  # coalesced, not one RandR change per message


async def test_window_manager_keeps_a_maximized_app_maximized(session: InputSession, xvfb: Xvfb) -> None:
    d = Display(xvfb.display)
    # mapped before openbox starts: openbox adopts existing windows, whereas a window mapped
    # while it is still starting up can be missed (a start-up race of openbox, not ours)
    app = _maximized_window(d)
    wm = subprocess.Popen(["openbox", "--sm-disable"], env={**os.environ, "DISPLAY": xvfb.display},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await _until(lambda: has_window_manager(d) and app.get_geometry().width == 1280)
        peer = Peer()
        session.channel(peer.send).on_message(json.dumps({"type": "resize", "width": 1024, "height": 600}))
        await peer.wait_for(lambda got: (1024, 600) in resized(got))
        await _until(lambda: app.get_geometry().width == 1024)
        assert 500 < app.get_geometry().height <= 600  # less the title bar
    finally:
        d.close()
        wm.kill()
        wm.wait()


def _maximized_window(d: Display):
    """An application window asking the window manager to maximize it (EWMH)."""
    screen = d.screen()
    window = screen.root.create_window(0, 0, 300, 200, 0, screen.root_depth)
    atom = d.intern_atom
    window.change_property(atom("_NET_WM_STATE"), Xatom.ATOM, 32,
                           [atom("_NET_WM_STATE_MAXIMIZED_VERT"), atom("_NET_WM_STATE_MAXIMIZED_HORZ")])
    window.map()
    d.sync()
    return window


async def _until(done) -> None:
    """Wait for another X client (the window manager) to have done something."""
    async with asyncio.timeout(TIMEOUT):
        while not done():
            await asyncio.sleep(0.02)
