"""The launched application fills the screen, also when it restores a geometry of its own."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from Xlib import X, display as xdisplay

from tests.agent_process import free_port, start_agent


def top_level_size(display: str, wm_class: str) -> tuple[int, int] | None:
    d = xdisplay.Display(display)
    try:
        client_list = d.screen().root.get_full_property(d.intern_atom("_NET_CLIENT_LIST"), X.AnyPropertyType)
        for wid in (client_list.value if client_list else []):
            window = d.create_resource_object("window", wid)
            if (window.get_wm_class() or ("", ""))[1] == wm_class:
                geometry = window.get_geometry()
                return geometry.width, geometry.height
        return None
    finally:
        d.close()


def test_an_application_that_unmaximizes_itself_is_maximized_again():
    display = ":" + str(4000 + free_port() % 900)
    app = Path(__file__).with_name("unmaximizing_app.py")
    agent = start_agent(display, "--xvfb", "--size", "800x600", "--launch", f"{sys.executable} {app}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and top_level_size(display, "Unmaximizing") != (800, 600):
            time.sleep(0.1)
        assert top_level_size(display, "Unmaximizing") == (800, 600)
    finally:
        agent.stop()
