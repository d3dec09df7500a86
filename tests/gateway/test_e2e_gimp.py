"""End to end with real parts: `python -m gateway` (local spawner) starts the real session agent
with real GIMP; an aiortc viewer and Chromium (driven by playwright) watch and drive it
through the gateway, and X itself (RECORD) says what input arrived.

One GIMP session (Alice's) is shared by the module: GIMP takes seconds to start on two cores.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, async_playwright
from Xlib import display as xdisplay

from gateway.config import Config
from gateway.spawners.local import user_dir_name
from tests.gateway.conftest import JWT_SECRET, alive, descendants, eventually, make_jwt
from tests.whep_client import Viewer
from tests.gateway.xrecord import XRecorder, clipboard_text

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SESSION_SIZE = (1280, 720)
START_TIMEOUT_S = 180


@dataclass
class Gateway:
    proc: subprocess.Popen
    base: str
    data_dir: Path

    def call(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def start_session(self, token: str, application: str = "gimp") -> str:
        status, body = self.call("POST", "/api/sessions", token, {"application": application})
        assert status in (200, 201), body
        deadline = time.monotonic() + START_TIMEOUT_S
        while body.get("phase") == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            _, body = self.call("GET", f"/api/sessions/{body['id']}", token)
        assert body.get("phase") == "running", (body, self.log_tail())
        return body["id"]

    def session_processes(self, session_id: str) -> list[int]:
        """The processes of one session: the topmost of the gateway's descendants that has the
        session's SESSION_ID (its supervisor: the gateway's child, or the fork server's), and
        everything below it."""
        def of_session(pid: int) -> bool:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                return False
            return f"SESSION_ID={session_id}".encode() in environ
        for pid in descendants(self.proc.pid):
            if of_session(pid) and not of_session(ppid(pid)):
                return [pid, *descendants(pid)]
        raise AssertionError(f"no process found for session {session_id}")

    def agent_flag(self, session_id: str, flag: str) -> str:
        for pid in self.session_processes(session_id):
            args = cmdline(pid).split()
            if args[1:3] == ["-m", "session_agent"] and flag in args:
                return args[args.index(flag) + 1]
        raise AssertionError(f"no {flag} on the agent's command line")

    def display_of(self, session_id: str) -> str:
        return self.agent_flag(session_id, "--display")

    def xauthority_of(self, session_id: str) -> str:
        """The session's cookie: its X server admits no client without it."""
        return self.agent_flag(session_id, "--xauthority")

    def log_tail(self) -> str:
        return (self.data_dir / "gateway.log").read_text()[-3000:]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "GATEWAY_AUTH": "jwt", "GATEWAY_JWT_SECRET": JWT_SECRET,
           "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": "0", "GATEWAY_DATA_DIR": str(data_dir / "data"),
           "GATEWAY_SESSION_SIZE": "x".join(map(str, SESSION_SIZE)), "GATEWAY_START_TIMEOUT": str(START_TIMEOUT_S),
           "GATEWAY_APP_INKSCAPE": "/nonexistent/inkscape"}
    with (data_dir / "gateway.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=log)
    line = proc.stdout.readline()
    assert line.startswith("Gateway ready: open "), line
    gateway = Gateway(proc, line.split("open ", 1)[1].strip().rstrip("/"), data_dir)
    tree: list[int] = []
    try:
        yield gateway
        tree = descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    # A gateway that stops ends every session it started.
    assert not [p for p in tree if alive(p)]


@pytest.fixture(scope="module")
def alice() -> str:
    return make_jwt("alice", ttl=7200)


@pytest.fixture(scope="module")
def alice_session(gw: Gateway, alice: str) -> str:
    return gw.start_session(alice)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def test_gimp_runs_in_the_users_home(gw: Gateway, alice_session: str) -> None:
    processes = gw.session_processes(alice_session)
    gimp = [p for p in processes if Path(cmdline(p).split(" ")[0]).name.startswith("gimp")]
    assert gimp, [cmdline(p) for p in processes]
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{gimp[0]}/environ").read_bytes().decode().split("\0") if "=" in item)
    assert environ["HOME"] == str(gw.data_dir / "data" / "users" / user_dir_name("alice") / "home")
    assert not any(k.startswith("GATEWAY_") for k in environ)
    # Several users: GIMP runs in the sandbox (its own mount, PID and network namespaces).
    agent = next(p for p in processes if cmdline(p).split()[1:3] == ["-m", "session_agent"])
    for kind in ("mnt", "pid", "net"):
        assert os.readlink(f"/proc/{gimp[0]}/ns/{kind}") != os.readlink(f"/proc/{agent}/ns/{kind}")
    if os.geteuid() == 0:  # and not as root
        assert f"Uid:\t{Config().sandbox_uid}\t" in Path(f"/proc/{gimp[0]}/status").read_text()


async def test_an_aiortc_viewer_gets_gimp_frames_through_the_gateway(gw: Gateway, alice: str,
                                                                    alice_session: str) -> None:
    viewer = Viewer(gw.base, token=alice)
    try:
        await viewer.connect(f"/streaming/{alice_session}/whep")
        assert viewer.location.startswith(f"/streaming/{alice_session}/whep/")
        # GIMP's window (not a blank root window) fills the frame: many distinct values.
        frame = await viewer.wait_for(lambda f: f.to_ndarray(format="gray").std() > 10, timeout=120)
        assert (frame.width, frame.height) == SESSION_SIZE
    finally:
        await viewer.close()


def test_other_users_cannot_see_or_reach_the_session(gw: Gateway, alice_session: str) -> None:
    bob = make_jwt("bob")
    assert gw.call("GET", "/api/sessions", bob) == (200, {"sessions": []})
    assert gw.call("GET", f"/api/sessions/{alice_session}", bob)[0] == 404
    assert gw.call("DELETE", f"/api/sessions/{alice_session}", bob)[0] == 404
    for path in (f"/streaming/{alice_session}/", f"/streaming/{alice_session}/whep"):
        request = urllib.request.Request(gw.base + path, method="POST" if path.endswith("whep") else "GET",
                                         data=b"v=0\r\n" if path.endswith("whep") else None,
                                         headers={"Authorization": f"Bearer {bob}",
                                                  "Content-Type": "application/sdp"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 404, path


async def test_chromium_plays_the_session_and_its_input_reaches_x(gw: Gateway, alice: str, alice_session: str,
                                                                  browser: Browser,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAUTHORITY", gw.xauthority_of(alice_session))  # for python-xlib
    recorder = XRecorder(gw.display_of(alice_session))
    try:
        page = await browser.new_page(viewport={"width": 800, "height": 520})
        # The token once in the URL; the cookie afterwards (the redirect drops the token).
        await page.goto(f"{gw.base}/streaming/{alice_session}/?token={alice}&resize=0")
        assert page.url == f"{gw.base}/streaming/{alice_session}/?resize=0"
        await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)

        # The video plays: decoded frames keep increasing.
        frames = "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
        await page.wait_for_function(f"{frames} > 0", timeout=60_000)
        first = await page.evaluate(frames)
        await page.wait_for_function(f"{frames} > {first}", timeout=60_000)
        await page.wait_for_function(
            f"window.viewer.display.width === {SESSION_SIZE[0]} && window.viewer.display.height === {SESSION_SIZE[1]}",
            timeout=30_000)

        # The stats overlay reports the stream.
        await page.click("#stats-toggle")
        await page.wait_for_function("document.getElementById('stats').textContent.includes('fps')",
                                     timeout=30_000)

        # A click lands where it points, scaled from the page to the display.
        rect = await page.evaluate("(() => { const r = document.getElementById('screen')"
                                     ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()")
        left, top, width, height = rect
        dw, dh = SESSION_SIZE
        scale = min(width / dw, height / dh)
        assert scale < 0.9  # the display really is scaled down in this window
        target = (int(dw * 0.37), int(dh * 0.61))
        x0 = left + (width - dw * scale) / 2
        y0 = top + (height - dh * scale) / 2
        await page.mouse.click(x0 + (target[0] + 0.5) * scale, y0 + (target[1] + 0.5) * scale)
        press = await asyncio.to_thread(recorder.next_press, "button", 30)
        assert (press.detail, press.x, press.y) == (1, *target)

        # Typing reaches X, key by key.
        await page.keyboard.type("gimp", delay=50)
        typed = [recorder.text_of((await asyncio.to_thread(recorder.next_press, "key", 30)).detail)
                 for _ in range(4)]
        assert "".join(typed) == "gimp"

        # Pasting in the page puts the text on X's CLIPBOARD (before the application sees Ctrl+V).
        await page.evaluate("""() => { const data = new DataTransfer();
            data.setData('text/plain', 'from the browser');
            window.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data })); }""")

        async def pasted():
            return await asyncio.to_thread(clipboard_text, gw.display_of(alice_session)) == "from the browser"
        await eventually(pasted, timeout=30)

        # The agent's cursor image is drawn locally, as the page's cursor.
        await page.mouse.move(x0 + dw * scale / 2, y0 + dh * scale / 3)
        await page.wait_for_function(
            "getComputedStyle(document.getElementById('screen')).cursor.startsWith('url(')", timeout=30_000)

        # A connection that drops (here: its peer ended on the agent) comes back by itself,
        # showing that it is reconnecting meanwhile.
        resource = await page.evaluate("window.viewer.resource")
        async with aiohttp.ClientSession() as http:
            async with http.delete(resource, headers={"Authorization": f"Bearer {alice}"}) as r:
                assert r.status == 200
        await page.wait_for_function("window.viewer.state === 'reconnecting'", timeout=60_000)
        assert "Reconnecting" in await page.locator("#state").text_content()
        await page.wait_for_function("window.viewer.state === 'connected'", timeout=60_000)

        # With "fit display to window" on, the display takes the window's size (debounced),
        # and the stream goes on at the new size.
        screen_size = await page.evaluate("(() => { const r = document.getElementById('screen')"
                                            ".getBoundingClientRect(); return [Math.floor(r.width / 2) * 2,"
                                            " Math.floor(r.height / 2) * 2]; })()")
        await page.check("#remote-resize")

        async def resized():
            d = xdisplay.Display(gw.display_of(alice_session))
            try:
                s = d.screen()
                return [s.width_in_pixels, s.height_in_pixels] == screen_size
            finally:
                d.close()
        await eventually(resized, timeout=60)
        await page.wait_for_function(
            f"window.viewer.display.width === {screen_size[0]} && window.viewer.display.height === {screen_size[1]}",
            timeout=60_000)
        played = await page.evaluate(frames)
        await page.wait_for_function(f"{frames} > {played} || window.viewer.state !== 'connected'",
                                     timeout=60_000)
        assert await page.evaluate("window.viewer.state") == "connected", (
            await page.locator("#state").text_content(), await page.locator("#overlay-text").text_content(),
            gw.call("GET", f"/api/sessions/{alice_session}", alice))
        await page.wait_for_function(f"{frames} > {played}", timeout=60_000)
    finally:
        recorder.close()


async def test_end_session_names_the_unsaved_gimp_image_before_ending(gw: Gateway, alice: str,
                                                                    alice_session: str,
                                                                    browser: Browser) -> None:
    """GIMP marks a modified image's title with '*': "End session" asks first and names it."""
    page = await browser.new_page(viewport={"width": 1000, "height": 640})
    await page.goto(f"{gw.base}/streaming/{alice_session}/?token={alice}&resize=0")
    await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
    await page.focus("#screen")
    await page.keyboard.press("Control+n")  # File > New, then accept the dialog's defaults
    await page.wait_for_timeout(2000)
    await page.keyboard.press("Enter")
    await page.wait_for_timeout(2000)
    await page.keyboard.press("n")  # the pencil
    box = await page.locator("#screen").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.mouse.move(cx - 40, cy - 20)
    await page.mouse.down()
    await page.mouse.move(cx + 40, cy + 20, steps=8)
    await page.mouse.up()
    await page.wait_for_function("window.viewer.unsaved.length > 0", timeout=60_000)
    unsaved = await page.evaluate("window.viewer.unsaved")
    assert any(name.startswith("[Untitled]") for name in unsaved), unsaved
    asked: list[str] = []

    async def answer(dialog) -> None:
        asked.append(dialog.message)
        await dialog.dismiss()  # "no, keep it"
    page.on("dialog", answer)
    await page.click("#end")
    await page.wait_for_timeout(500)
    assert asked and "unsaved changes" in asked[0] and "[Untitled]" in asked[0], asked
    assert gw.call("GET", f"/api/sessions/{alice_session}", alice)[1]["phase"] == "running"
    await page.close()


async def test_the_launcher_starts_gimp_and_opens_the_viewer(gw: Gateway, browser: Browser) -> None:
    dave = make_jwt("dave")
    page = await browser.new_page(viewport={"width": 900, "height": 600})
    await page.goto(f"{gw.base}/?token={dave}")
    assert page.url == f"{gw.base}/"
    gimp = page.locator('[data-app="gimp"]')
    # Errors in words: this application's command does not exist here.
    inkscape = page.locator('[data-app="inkscape"]')
    await inkscape.locator(".start").click()
    await page.wait_for_function(
        "document.querySelector('[data-app=inkscape] .status')?.textContent.includes('not installed here')",
        timeout=60_000)
    assert "Failed: inkscape is not installed here" in await inkscape.locator(".status").text_content()
    # Start GIMP: the launcher follows the SSE progress and opens the viewer when it runs.
    async with page.expect_request(lambda r: r.url.endswith("/events")):
        await gimp.locator(".start").click()
    await page.wait_for_url(f"{gw.base}/streaming/*/", timeout=START_TIMEOUT_S * 1000)
    await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
    await page.wait_for_function(
        "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames > 0", timeout=60_000)
    session_id = page.url.rstrip("/").rsplit("/", 1)[1]
    # Back on the launcher the running session is offered to resume.
    await page.goto(f"{gw.base}/")
    await page.wait_for_function(
        "document.querySelector('[data-app=gimp] .start')?.textContent === 'Open'", timeout=30_000)
    assert gw.call("DELETE", f"/api/sessions/{session_id}", dave)[0] == 202


async def test_deleting_a_session_ends_its_viewer_and_leaves_no_process(gw: Gateway, browser: Browser) -> None:
    carol = make_jwt("carol")
    session_id = await asyncio.to_thread(gw.start_session, carol)
    processes = gw.session_processes(session_id)
    assert any("gimp" in cmdline(p) for p in processes)
    page = await browser.new_page()
    await page.goto(f"{gw.base}/streaming/{session_id}/?token={carol}")
    await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
    status, body = gw.call("DELETE", f"/api/sessions/{session_id}", carol)
    assert status == 202 and body["phase"] == "terminating"
    # The viewer says so in words, and stops trying.
    await page.wait_for_function("window.viewer.state === 'ended'", timeout=120_000)
    assert "ended" in await page.locator("#overlay-text").text_content()

    async def gone():
        return gw.call("GET", f"/api/sessions/{session_id}", carol)[0] == 404
    await eventually(gone)
    assert not [p for p in processes if alive(p)]
