"""What an agent costs while nobody watches, and what its owned Xvfb is sized to (issue 15).

Real Xvfb, real agent processes, real aiortc viewers; figures are in bench/density.py.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from Xlib import display as xdisplay

from session_agent.display.randr import max_screen_size, screen_size
from tests.agent.test_streaming import metric
from tests.agent_process import free_port, start_agent
from tests.whep_client import Viewer
from tests.xserver import fill_root, start_xvfb


def anonymous_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Anonymous line")


async def settled(agent, name: str) -> float:
    """The metric once it stops moving (the encode thread may still finish a frame)."""
    value = await metric(agent, name)
    while True:
        await asyncio.sleep(0.5)
        again = await metric(agent, name)
        if again == value:
            return value
        value = again


async def test_no_viewer_no_capture_and_the_first_viewer_gets_a_keyframe_of_the_current_screen():
    x = start_xvfb("1280x720")
    agent = start_agent(x.display)
    try:
        # Nobody has watched yet: the screen changes, nothing is grabbed or encoded.
        for rgb in [(200, 0, 0), (0, 200, 0), (10, 20, 230)]:
            fill_root(x.display, rgb)
            await asyncio.sleep(0.3)
        assert await metric(agent, "agent_frames_captured_total") == 0
        assert await metric(agent, "agent_frames_encoded_total") == 0

        # The first viewer: a keyframe, of what the screen shows now (damage was tracked).
        viewer = Viewer(agent.url, token=agent.token)
        await viewer.connect()
        await viewer.wait_for_colour((10, 20, 230))
        assert await metric(agent, "agent_keyframes_total") >= 1
        assert await metric(agent, "agent_resume_seconds_count") == 1
        with_viewer = anonymous_mb(agent.proc.pid)
        await viewer.close()

        # It left: the encoder, the capture and the frame buffers go, and capture stops.
        captured = await settled(agent, "agent_frames_captured_total")
        for rgb in [(255, 255, 0), (0, 255, 255)]:
            fill_root(x.display, rgb)
            await asyncio.sleep(0.3)
        assert await metric(agent, "agent_frames_captured_total") == captured
        # x264 at 1280x720 and the frames alone hold well over 10 MB.
        assert anonymous_mb(agent.proc.pid) < with_viewer - 10

        # The next viewer again starts at a keyframe of the current screen.
        viewer = Viewer(agent.url, token=agent.token)
        await viewer.connect()
        try:
            await viewer.wait_for_colour((0, 255, 255))
            assert await metric(agent, "agent_resume_seconds_count") == 2
        finally:
            await viewer.close()
    finally:
        agent.stop()
        x.stop()


IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", re.M)


async def test_the_agent_process_imports_no_gateway_or_kubernetes_module(tmp_path):
    """Every module the running agent imported (-X importtime), a viewer's path included."""
    x = start_xvfb("640x360")
    port = free_port()
    log = tmp_path / "stderr"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "session_agent",
                                 "--display", x.display, "--host", "127.0.0.1", "--port", str(port)],
                                stderr=err)
    try:
        from tests.agent_process import wait_healthy
        await wait_healthy(f"http://127.0.0.1:{port}", proc=proc)
        viewer = Viewer(f"http://127.0.0.1:{port}")
        await viewer.connect()
        fill_root(x.display, (0, 90, 200))
        await viewer.wait_for_colour((0, 90, 200))
        await viewer.close()
    finally:
        proc.terminate()
        proc.wait(15)
        x.stop()
    modules = set(IMPORTED.findall(log.read_text()))
    assert "aiortc" in modules and "session_agent.server" in modules  # the log is what we think
    foreign = sorted(m for m in modules if m.split(".")[0] in ("gateway", "kubernetes_asyncio",
                                                               "kubernetes", "jwt", "yaml"))
    assert foreign == []


def test_an_owned_xvfb_is_as_large_as_asked_and_has_no_glx_unless_asked():
    display = ":" + str(4000 + free_port() % 900)
    # By default the framebuffer is the session's size: a larger resize is clamped.
    agent = start_agent(display, "--xvfb", "--size", "800x600")
    try:
        d = xdisplay.Display(display)
        try:
            assert screen_size(d) == (800, 600) and max_screen_size(d) == (800, 600)
            assert "GLX" not in d.list_extensions()
        finally:
            d.close()
    finally:
        agent.stop()
    # --max-size makes room for resizes (HiDPI device pixels); --glx for OpenGL applications.
    agent = start_agent(display, "--xvfb", "--size", "800x600", "--max-size", "1600x1200", "--glx")
    try:
        d = xdisplay.Display(display)
        try:
            assert screen_size(d) == (800, 600) and max_screen_size(d) == (1600, 1200)
            assert "GLX" in d.list_extensions()
        finally:
            d.close()
    finally:
        agent.stop()
