"""HiDPI (SPEC "HiDPI"): `resize` with `scale` sets the X DPI to 96 × scale on a real Xvfb, in
RandR's millimetres, the root window's `Xft.dpi` resource and XSETTINGS `Xft/DPI` (read back
with xsettingsd's dump_xsettings, an independent reader); without `scale` nothing of it changes."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess

from Xlib import Xatom
from Xlib.display import Display

from session_agent.display.dpi import with_resource, xsettings
from session_agent.input.session import InputSession
from tests.input.recorder import TIMEOUT, Peer
from tests.input.test_resize import resized
from tests.xserver import Xvfb


def resources(display: str) -> str | None:
    d = Display(display)
    try:
        prop = d.screen().root.get_full_property(d.intern_atom("RESOURCE_MANAGER"), Xatom.STRING)
        return None if prop is None else bytes(prop.value).decode()
    finally:
        d.close()


def millimetres(display: str) -> tuple[int, int]:
    """What a new client is told (xdpyinfo's "dimensions")."""
    d = Display(display)
    try:
        return d.screen().width_in_mms, d.screen().height_in_mms
    finally:
        d.close()


def dump_xsettings(display: str) -> str:
    done = subprocess.run(["dump_xsettings"], env={**os.environ, "DISPLAY": display},
                          capture_output=True, text=True, timeout=TIMEOUT)
    return done.stdout + done.stderr


async def resize(session: InputSession, **fields: object) -> Peer:
    peer = Peer()
    session.channel(peer.send).on_message(json.dumps({"type": "resize", **fields}))
    await peer.wait_for(lambda got: len(resized(got)) >= 2 or any(m["type"] == "error" for m in got))
    return peer


def test_with_resource() -> None:
    assert with_resource("", "Xft.dpi", "192") == "Xft.dpi:\t192\n"
    assert with_resource("Xcursor.size:\t24", "Xft.dpi", "192") == "Xcursor.size:\t24\nXft.dpi:\t192\n"
    assert (with_resource("Xft.antialias: 1\nXft.dpi:  96\nXft.hinting: 1\n", "Xft.dpi", "144")
            == "Xft.antialias: 1\nXft.dpi:\t144\nXft.hinting: 1\n")
    assert with_resource("Xft.dpix: 1\n", "Xft.dpi", "96") == "Xft.dpix: 1\nXft.dpi:\t96\n"


def test_xsettings_layout() -> None:
    blob = xsettings(3, {"Xft/DPI": 192 * 1024})
    # byte order, 3 pad, serial, count; type 0, pad, name length, name + pad to 4, serial, value
    assert blob == (b"\x00\x00\x00\x00" + (3).to_bytes(4, "little") + (1).to_bytes(4, "little")
                    + b"\x00\x00" + (7).to_bytes(2, "little") + b"Xft/DPI\x00"
                    + (3).to_bytes(4, "little") + (192 * 1024).to_bytes(4, "little"))


async def test_scale_sets_the_dpi_everywhere(session: InputSession, xvfb: Xvfb) -> None:
    subprocess.run(["xrdb", "-nocpp", "-merge"], input="Xcursor.size: 24\n", text=True,
                   env={**os.environ, "DISPLAY": xvfb.display}, check=True)
    peer = await resize(session, width=1280, height=720, scale=2)  # the size it has: DPI only
    assert resized(peer.got)[-1] == (1280, 720)
    assert millimetres(xvfb.display) == (169, 95)  # 1280 px at 192 DPI
    assert resources(xvfb.display) == "Xcursor.size:\t24\nXft.dpi:\t192\n"  # others kept
    assert "Xft/DPI 196608" in dump_xsettings(xvfb.display)  # 192 × 1024

    # A resize without scale keeps the DPI it has.
    await resize(session, width=1024, height=600)
    assert millimetres(xvfb.display) == (135, 79)
    assert "Xft.dpi:\t192" in resources(xvfb.display)

    await resize(session, width=1500, height=900, scale=1.5)
    assert session.size == (1280, 720)  # clamped to the framebuffer
    assert millimetres(xvfb.display) == (226, 127)  # the framebuffer's 1280x720 at 144 DPI
    assert "Xft.dpi:\t144" in resources(xvfb.display)
    assert "Xft/DPI 147456" in dump_xsettings(xvfb.display)

    # Out of range or not a number: an error, and nothing changes.
    for scale in (0.5, 4.5, "2", True, None):
        peer = await resize(session, width=800, height=600, scale=scale)
        assert "scale" in peer.of_type("error")[0]["message"]
    assert session.size == (1280, 720) and millimetres(xvfb.display) == (226, 127)
    assert "Xft.dpi:\t144" in resources(xvfb.display)


async def test_without_scale_the_dpi_is_left_alone(session: InputSession, xvfb: Xvfb) -> None:
    await resize(session, width=1024, height=600)
    assert millimetres(xvfb.display) == (271, 159)  # 96 DPI, as before HiDPI
    assert resources(xvfb.display) is None
    assert "No current owner" in dump_xsettings(xvfb.display)  # the agent is no XSETTINGS manager


async def test_another_xsettings_manager_is_left_in_charge(session: InputSession, xvfb: Xvfb,
                                                          tmp_path) -> None:
    conf = tmp_path / "xsettingsd.conf"
    conf.write_text('Net/ThemeName "Other"\n')
    manager = subprocess.Popen(["xsettingsd", "-c", str(conf)], env={**os.environ, "DISPLAY": xvfb.display},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(TIMEOUT):
            while "Other" not in dump_xsettings(xvfb.display):
                await asyncio.sleep(0.05)
        await resize(session, width=1280, height=720, scale=2)
        assert "Xft.dpi:\t192" in resources(xvfb.display)  # the resource is still set
        dump = dump_xsettings(xvfb.display)
        assert "Other" in dump and "Xft/DPI" not in dump
    finally:
        manager.terminate()
        manager.wait()
