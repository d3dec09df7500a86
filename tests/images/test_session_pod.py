"""The session images, run as a kubelet runs the pod the controller makes
(objects.session_pod(): containers `session` and `app`, their commands, env, mounts, uid 1000,
read-only roots; tests/images/kubelet.py), checked from inside and from outside: a real
WebRTC viewer decodes the stream, the display is the pod's SESSION_SIZE, and the
application's window is complete (no broken-image glyph: tests/images/glyphs.py)."""
from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import numpy as np
import pytest

from tests.images import glyphs
from tests.images.conftest import SESSION_SIZE, SessionPod, start_pod, wait_ready
from tests.whep_client import Viewer

pytestmark = pytest.mark.timeout(2700)  # the first test builds the images (a cold cache: minutes)
WIDTH, HEIGHT = map(int, SESSION_SIZE.split("x"))


async def settled(viewer: Viewer, timeout: float = 120, after: object = None):
    """The first frame that stays the same for 2 s and is not a blank screen (the application
    has painted and stopped drawing), different from `after` when given."""
    deadline = time.monotonic() + timeout
    previous, still_since = None, None
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if viewer.frame is None:
            continue
        rgb = viewer.frame.to_ndarray(format="rgb24")
        small = rgb[::8, ::8].astype(int)
        busy = len(np.unique(small.reshape(-1, 3) // 16, axis=0)) > 20
        changed = previous is None or np.abs(small - previous).mean() > 0.5
        previous = small
        if changed or not busy or (after is not None and np.abs(rgb.astype(int) - after).mean() < 1):
            still_since = None
            continue
        still_since = still_since or time.monotonic()
        if time.monotonic() - still_since >= 2:
            return viewer.frame, rgb
    raise AssertionError("the application never settled into a painted window")


WINDOWS = """
from Xlib import X, Xatom, display
d = display.Display()
atom = d.intern_atom
for wid in d.screen().root.get_full_property(atom("_NET_CLIENT_LIST"), Xatom.WINDOW).value:
    w = d.create_resource_object("window", wid)
    g = w.get_geometry(); t = w.translate_coords(d.screen().root, 0, 0)
    state = w.get_full_property(atom("_NET_WM_STATE"), Xatom.ATOM)
    kind = w.get_full_property(atom("_NET_WM_WINDOW_TYPE"), Xatom.ATOM)
    print(hex(wid), w.get_wm_name(), f"{g.width}x{g.height}+{-t.x}+{-t.y}",
          [d.get_atom_name(a) for a in (state.value if state else [])],
          [d.get_atom_name(a) for a in (kind.value if kind else [])],
          "transient" if w.get_wm_transient_for() else "", w.get_attributes().map_state)
"""


def windows(pod: SessionPod) -> str:
    """The window manager's client list, as the session container's X client sees it."""
    result = pod.session.exec(["/opt/venv/bin/python", "-c", WINDOWS])
    return (result.stdout + result.stderr[-1500:]).strip()


def fills_the_screen(rgb: np.ndarray) -> bool:
    """The application's window, not the bare root, is at the top-left corner."""
    return len(np.unique(rgb[:40, :200].reshape(-1, 3) // 32, axis=0)) > 3


async def test_it_streams_the_session_size_with_the_application_complete(
        session_pod: SessionPod) -> None:
    status, health = session_pod.health()
    assert status == 200 and health["display"] == ":99"
    assert (health["width"], health["height"]) == (WIDTH, HEIGHT)  # not the 1920x1080 framebuffer
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{session_pod.url}/whep", data="v=0",
                             headers={"Content-Type": "application/sdp"}) as response:
            assert response.status == 401  # the token from the mounted Secret guards it
    viewer = Viewer(session_pod.url, session_pod.token)
    try:
        await viewer.connect()
        frame, rgb = await settled(viewer)
        assert (frame.width, frame.height) == (WIDTH, HEIGHT)
        if session_pod.application == "inkscape":
            # Its first start shows a welcome dialog; Escape closes it and the main window,
            # maximized by the window manager, shows its tool bars (input works through X too).
            for down in (True, False):
                viewer.send({"type": "key", "code": "Escape", "key": "Escape", "down": down})
            # Where the dialog does not come (or is not the focused window), Escape changes
            # nothing: the checks below then judge the window as it is.
            try:
                frame, rgb = await settled(viewer, timeout=30, after=rgb.astype(int))
            except AssertionError:
                pass
        found = glyphs.find(rgb)
        assert found == [], f"broken-image glyphs: {found[:5]}"
        assert glyphs.best_score(rgb) < glyphs.THRESHOLD
        assert fills_the_screen(rgb), f"the window does not fill the screen: {windows(session_pod)}"
    finally:
        await viewer.close()


def test_every_container_runs_as_uid_1000_on_a_read_only_root(session_pod: SessionPod) -> None:
    probe = ("id -u; id -g; "
             "for p in /proc/[0-9]*; do awk '/^Uid:/ {print $2}' $p/status; done | sort -u; "
             "touch /probe 2>/dev/null && echo root-writable; "
             "touch /etc/probe /usr/probe /opt/venv/probe 2>/dev/null && echo system-writable; "
             "touch /home/user/.probe /tmp/probe /tmp/.X11-unix/probe && echo volumes-writable; "
             "rm -f /home/user/.probe /tmp/probe /tmp/.X11-unix/probe")
    for container in (session_pod.session, session_pod.app):
        result = container.exec(["sh", "-c", probe])
        lines = result.stdout.split()
        assert lines[:2] == ["1000", "1000"], (container.name, result.stdout, result.stderr)
        assert lines[2:-1] == ["1000"]  # every process of the container, PID 1 included
        assert lines[-1] == "volumes-writable", (container.name, result.stdout)
        assert "Read-only file system" in result.stderr or "root-writable" not in result.stdout


def test_the_application_cannot_read_the_token(session_pod: SessionPod) -> None:
    """From the attacker's side: code running in the app container (a plug-in) looks for the
    agent's token wherever it could be: every process's environment and command line, the
    Secret's mount, every writable volume, the X directory, /dev/shm. (The token reaches the
    search on stdin, so that the search itself does not hold it.)"""
    search = ("grep -rlaF -f - /proc/[0-9]*/environ /proc/[0-9]*/cmdline /var/run /run /tmp "
              "/home/user /dev/shm 2>/dev/null | sed 's/^/found /'; ls /var/run/agent 2>&1; "
              "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done")
    result = session_pod.app.exec(["sh", "-c", search], input=session_pod.token)
    hits = [line[6:] for line in result.stdout.splitlines() if line.startswith("found ")]
    assert hits == [], f"the app container can read the token at {hits}"
    assert "No such file or directory" in result.stdout  # no Secret mounted here
    assert "session_agent" not in result.stdout and "Xvfb" not in result.stdout  # no agent in sight
    # The same search in the session container finds it (the agent's environment, the
    # Secret): the search works, and the token is where it belongs.
    control = session_pod.session.exec(["sh", "-c", search], input=session_pod.token)
    places = [line[6:] for line in control.stdout.splitlines() if line.startswith("found ")]
    assert any(p.endswith("/environ") for p in places), control.stdout
    assert any(p.startswith("/var/run/agent/") or p.startswith("/run/agent/") for p in places)


def test_the_application_runs_in_a_dbus_session_with_a_locale_and_fonts(
        session_pod: SessionPod) -> None:
    binary = {"gimp": "gimp", "inkscape": "inkscape"}[session_pod.application]
    probe = ("for p in /proc/[0-9]*; do first=$(tr '\\0' '\\n' < $p/cmdline | head -1); "
             f"[ \"${{first##*/}}\" = {binary} ] && tr '\\0' '\\n' < $p/environ && break; done; "
             "echo ---; cat /etc/machine-id; "
             "echo ---; fc-list :lang=zh family | head -1; fc-list :lang=ja family | head -1; "
             "fc-list :lang=ko family | head -1")
    result = session_pod.app.exec(["sh", "-c", probe])
    environ, machine_id, fonts = result.stdout.split("---\n")
    env = dict(line.split("=", 1) for line in environ.splitlines() if "=" in line)
    assert env.get("DBUS_SESSION_BUS_ADDRESS", "").startswith("unix:"), env
    assert env["LANG"] == "C.UTF-8" and env["DISPLAY"] == ":99"
    assert "AGENT_TOKEN" not in env and "AGENT_TOKEN_FILE" not in env
    assert len(machine_id.strip()) == 32 and int(machine_id, 16)
    assert len([f for f in fonts.splitlines() if f.strip()]) == 3, fonts  # CJK glyphs exist


def test_the_image_holds_the_agent_not_the_gateway(session_pod: SessionPod) -> None:
    probe = ("import importlib.util as u; print(sorted(m for m in ('aiortc', 'av', 'numpy', "
             "'Xlib', 'session_agent', 'kubernetes_asyncio', 'jwt', 'gateway', 'yaml') "
             "if u.find_spec(m)))")
    result = session_pod.session.exec(["python3", "-c", probe])
    assert result.stdout.strip() == "['Xlib', 'aiortc', 'av', 'numpy', 'session_agent']", result


def test_after_a_crash_the_restarted_containers_serve_again(session_pod: SessionPod) -> None:
    """The session container killed (SIGKILL: no cleanup, its Xvfb lock and socket stay on
    the volumes) and restarted by the kubelet serves again; the application, whose X server
    went away, ends, and its restarted container brings it back."""
    session_pod.session.signal(signal.SIGKILL)
    assert session_pod.session.wait(30) is not None
    assert session_pod.app.wait(60) is not None  # the application lost its display
    session_pod.runner.restart("session")
    session_pod.runner.restart("app")
    wait_ready(session_pod)
    deadline = time.monotonic() + 120
    binary = {"gimp": "gimp", "inkscape": "inkscape"}[session_pod.application]
    while time.monotonic() < deadline:
        running = session_pod.app.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"])
        if f" {binary}" in f" {running.stdout}" and session_pod.app.proc.poll() is None:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the application did not come back:\n{session_pod.logs()}")
    assert session_pod.health()[0] == 200


def test_pod_deletion_stops_both_containers_by_themselves(session_pod: SessionPod) -> None:
    """SIGTERM to each container's PID 1, as the kubelet sends it: both stop what they run and
    exit 0 (not SIGKILLed after the grace period); the application's files are on the home
    volume, group-writable (umask 002) for the session container."""
    codes = session_pod.runner.stop(grace=60)
    assert codes == {"session": 0, "app": 0}, session_pod.logs()
    written = [p for p in session_pod.home.rglob("*") if p.is_file()]
    assert written, "the application wrote nothing to the home volume"
    assert all(p.stat().st_uid == 1000 for p in written)
    assert any(p.stat().st_mode & 0o020 for p in written)


@pytest.mark.parametrize("container", ["session", "app"])
def test_sigterm_while_starting_ends_the_container_at_once(
        built_images: dict, tmp_path, container: str) -> None:
    """A pod deleted while it starts: the entrypoint is PID 1 (a signal without a handler is
    ignored there) and traps TERM first, so the container ends at once, not after 60 s."""
    # alone: the app container then waits for an X server that never comes
    pod = start_pod("gimp", tmp_path, wait=False, only=container)
    try:
        target = pod.runner.containers[container]
        time.sleep(0.2)  # the session container: Xvfb is starting
        target.signal(signal.SIGTERM)
        assert target.wait(15) == 0, target.logs()
    finally:
        pod.runner.close()
