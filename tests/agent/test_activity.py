"""What the agent knows about the people using it: how long nobody has (`/health` idle_s),
which documents have unsaved changes (window titles), and notices from the gateway."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from Xlib import X
from Xlib import display as xdisplay

from session_agent.display.titles import unsaved_documents
from tests.agent_process import start_agent
from tests.whep_client import Viewer
from tests.xserver import start_xvfb

GIMP_TITLE = "[Untitled]-1.0 (RGB color 8-bit gamma integer, GIMP built-in sRGB, 1 layer) 640x480 – GIMP"


def test_unsaved_documents_from_the_titles_of_gimp_inkscape_and_blender():
    assert unsaved_documents([f"*{GIMP_TITLE}", GIMP_TITLE.replace("Untitled", "photo.png")]) == [
        "[Untitled]-1.0"]
    assert unsaved_documents(["*photo.xcf-3.0 (RGB color 8-bit, 2 layers) 4000x3000 – GIMP",
                              "*drawing.svg - Inkscape", "Blender* [/home/user/scene.blend]",
                              "Blender [/home/user/saved.blend]", "GNU Image Manipulation Program",
                              "*drawing.svg - Inkscape"]) == [
        "photo.xcf-3.0", "drawing.svg", "/home/user/scene.blend"]
    assert unsaved_documents(["", "*", "a * b", "Untitled"]) == []


@pytest.fixture(scope="module")
def agent():
    x = start_xvfb("640x480")
    agent = start_agent(x.display, "--launch", "sleep 3600")
    yield agent
    agent.stop()
    x.stop()


async def health(agent) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(agent.url + "/health") as r:
            return await r.json()


async def test_idle_seconds_grow_without_input_and_reset_on_input(agent):
    viewer = Viewer(agent.url, agent.token)
    try:
        await viewer.connect()
        assert (await health(agent))["idle_s"] < 5  # a viewer joining counts as activity
        await asyncio.sleep(1.5)
        assert (await health(agent))["idle_s"] >= 1.0
        viewer.send({"type": "ping", "t": 1})  # the viewer's own keep-alive is not a person
        await viewer.receive("pong")
        assert (await health(agent))["idle_s"] >= 1.0
        viewer.send({"type": "pointer", "x": 10, "y": 10})
        await asyncio.sleep(0.3)
        assert (await health(agent))["idle_s"] < 1.0
    finally:
        await viewer.close()


async def test_the_viewer_learns_which_documents_are_unsaved(agent):
    viewer = Viewer(agent.url, agent.token)
    conn = xdisplay.Display(agent.display)
    try:
        await viewer.connect()
        assert (await viewer.receive("unsaved"))["documents"] == []
        window = conn.screen().root.create_window(0, 0, 200, 100, 0, X.CopyFromParent)
        window.set_wm_name(b"*picture - GIMP")  # WM_NAME is Latin-1; _NET_WM_NAME wins
        window.change_property(conn.intern_atom("_NET_WM_NAME"), conn.intern_atom("UTF8_STRING"), 8,
                               ("*" + GIMP_TITLE).encode())
        window.map()
        conn.flush()
        assert (await viewer.receive("unsaved"))["documents"] == ["[Untitled]-1.0"]
        window.change_property(conn.intern_atom("_NET_WM_NAME"), conn.intern_atom("UTF8_STRING"), 8,
                               GIMP_TITLE.encode())  # saved: GIMP drops the star
        conn.flush()
        assert (await viewer.receive("unsaved"))["documents"] == []
    finally:
        conn.close()
        await viewer.close()


async def test_notices_reach_every_viewer_and_bad_ones_change_nothing(agent):
    viewers = [Viewer(agent.url, agent.token), Viewer(agent.url, agent.token)]
    try:
        for v in viewers:
            await v.connect()
        notice = {"message": "This session will end in 60 s", "level": "warning", "seconds": 60,
                  "reason": "idle"}
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {agent.token}"}
            async with http.post(agent.url + "/notice", json=notice) as r:
                assert r.status == 401
            for bad in ([], {"message": ""}, {"message": "x", "level": "panic"},
                        {"message": "x", "seconds": -1}, {"message": "x", "seconds": True},
                        {"message": "x", "extra": 1}, {"message": "x" * 501}):
                async with http.post(agent.url + "/notice", json=bad, headers=auth) as r:
                    assert r.status == 400 and (await r.json())["error"], bad
            async with http.post(agent.url + "/notice", data=b"{", headers=auth) as r:
                assert r.status == 400
            async with http.post(agent.url + "/notice", json=notice, headers=auth) as r:
                assert r.status == 200 and (await r.json())["viewers"] == 2
        for v in viewers:
            got = await v.receive("notice")
            assert got == {"type": "notice", **notice}
    finally:
        for v in viewers:
            await v.close()
