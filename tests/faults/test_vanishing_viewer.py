"""A viewer that vanishes without a DELETE (its process SIGKILLed: no DELETE, no DTLS close,
no SCTP abort, just silence) while it holds a key and a mouse button: the agent reaps its peer,
releases what it held on the X display, and the gateway's idle timeout still ends the session."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

from Xlib import X
from Xlib.display import Display

from tests.faults import procs
from tests.faults.gateway_process import TOKEN, GatewayProcess, SessionProcesses
from tests.faults.test_local_kills import find_session, no_leftovers

IDLE_TIMEOUT = 3  # seconds nobody uses the session before the gateway ends it


def peers(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.loads(r.read())["peers"]


def held(display: str) -> tuple[bool, bool]:
    """(ShiftLeft down, left button down) on the X display, as X itself reports them."""
    d = Display(display)
    try:
        shift = d.keysym_to_keycode(0xFFE1)  # XK_Shift_L
        keymap = d.query_keymap()
        pointer = d.screen().root.query_pointer()
        return bool(keymap[shift // 8] & (1 << (shift % 8))), bool(pointer.mask & X.Button1Mask)
    finally:
        d.close()


async def test_vanished_viewer_is_reaped_and_releases_input(tmp_path: Path, monkeypatch) -> None:
    gw = GatewayProcess(tmp_path / "data").start()
    viewer = None
    try:
        sid = (await gw.create(timeout=IDLE_TIMEOUT))["id"]
        await gw.wait_session(sid, lambda s: s and s["phase"] == "running")
        session: SessionProcesses = await find_session(gw, "app")
        monkeypatch.setenv("XAUTHORITY", session.xauthority)  # the display admits no one without it
        viewer = procs.ViewerProcess(gw.url, f"/streaming/{sid}/whep", TOKEN, hold=True)
        await asyncio.to_thread(viewer.wait_ready)
        assert peers(session.port) == 1
        await asyncio.to_thread(procs.wait_until, lambda: held(session.display) == (True, True),
                                10, what="ShiftLeft and the left button held on X")
        # Held down for longer than the idle timeout (a drag, a long press): the session stays.
        await asyncio.sleep(IDLE_TIMEOUT + 1)
        assert (await gw.session(sid))["phase"] == "running"

        viewer.kill()  # gone without a word
        killed = time.monotonic()
        await asyncio.to_thread(procs.wait_until, lambda: peers(session.port) == 0, 60,
                                what="the agent reaps the silent peer")
        print(f"peer reaped {time.monotonic() - killed:.1f} s after the viewer vanished")
        # by the agent's silence watchdog (whep.PEER_SILENCE_S), not ICE consent expiry (30 s)
        log = (tmp_path / "data" / "sessions" / f"{sid}.log").read_text()
        assert any(json.loads(line).get("action") == "peer_deleted"
                   and json.loads(line).get("reason") == "silent"
                   for line in log.splitlines() if line.startswith("{")), log[-3000:]
        await asyncio.to_thread(procs.wait_until, lambda: held(session.display) == (False, False),
                                10, what="ShiftLeft and the left button released on X")
        # No viewer left: the idle timeout ends the session, and all of its processes.
        await gw.wait_session(sid, lambda s: s is None, timeout=IDLE_TIMEOUT + 60)
        await no_leftovers([session])
    finally:
        if viewer is not None:
            viewer.kill()
        gw.stop()
