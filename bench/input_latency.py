"""Input latency: from the client's data-channel send to the X event a client window receives.

    python bench/input_latency.py [--samples 400] [--busy]

Starts its own Xvfb and the real agent (`python -m session_agent`, its own process, video
encoding running), connects an aiortc client over loopback, and for each sample sends one
`pointer` or `key` message and waits for the matching MotionNotify/KeyPress at a full-screen X
window in its own process. With --busy the window's picture changes 30 times a second, so
the encoder works all along (as while painting). Prints one JSON object (milliseconds).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from Xlib import X
from Xlib.display import Display
from Xlib.error import ConnectionClosedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.agent_process import free_port, wait_healthy  # noqa: E402
from tests.xserver import start_xvfb  # noqa: E402


def window_process(display: str, conn: Connection) -> None:
    """A full-screen window in its own process, as the application would be: sends
    (what, time seen) for each event, so the client's video decoding cannot delay the stamp
    (perf_counter is CLOCK_MONOTONIC, the same clock in every process)."""
    d = Display(display)
    win = d.screen().root.create_window(0, 0, 1280, 720, 0, d.screen().root_depth, override_redirect=True,
                                        event_mask=X.PointerMotionMask | X.KeyPressMask)
    win.map()
    win.set_input_focus(X.RevertToParent, X.CurrentTime)
    d.sync()
    conn.send(("ready", win.id))
    while True:
        try:
            ev = d.next_event()
        except ConnectionClosedError:  # Xvfb stopped at the end of the run
            return
        if ev.type == X.MotionNotify:
            conn.send((("pointer", ev.root_x, ev.root_y), time.perf_counter()))
        elif ev.type == X.KeyPress:
            conn.send((("key", ev.detail), time.perf_counter()))


def animate(display: str, window: int, stop: threading.Event) -> None:
    """Repaint the window with a moving gradient of rectangles at 30 Hz."""
    d = Display(display)
    win = d.create_resource_object("window", window)
    gc = win.create_gc()
    frame = 0
    while not stop.wait(1 / 30):
        for i in range(0, 1280, 80):
            gc.change(foreground=(frame * 7 + i) * 2654435761 & 0xFFFFFF)
            win.fill_rectangle(gc, i, 0, 80, 720)
        d.sync()
        frame += 1
    d.close()


async def main(samples: int, busy: bool) -> dict:
    xvfb = start_xvfb("1280x720")
    display = xvfb.display
    loop = asyncio.get_running_loop()
    waiting: dict[tuple, asyncio.Future] = {}

    def arrived() -> None:
        while events.poll():
            what, at = events.recv()
            future = waiting.pop(what, None)
            if future is not None:
                future.set_result(at)

    port = free_port()
    agent = subprocess.Popen([sys.executable, "-m", "session_agent", "--display", display, "--host",
                              "127.0.0.1", "--port", str(port), "--encoder", "x264", "--max-fps", "30"],
                             cwd=ROOT, stderr=subprocess.DEVNULL)
    await wait_healthy(f"http://127.0.0.1:{port}")
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    # H.264 only: see the note in tests/input/agent.py
    transceiver.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                                     if c.mimeType in ("video/H264", "video/rtx")])
    dc = pc.createDataChannel("input")
    opened = asyncio.Event()
    dc.on("open", opened.set)

    frames = 0

    async def drain(track) -> None:  # decode like a viewer does, until the track ends
        nonlocal frames
        try:
            while True:
                await track.recv()
                frames += 1
        except MediaStreamError:
            pass

    pc.on("track", lambda track: asyncio.ensure_future(drain(track)))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/whep", data=pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp"}) as resp:
            answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.wait_for(opened.wait(), 10)
    events, child_end = multiprocessing.get_context("spawn").Pipe(duplex=False)
    window = multiprocessing.get_context("spawn").Process(target=window_process, args=(display, child_end),
                                                          daemon=True)
    window.start()
    _, window_id = events.recv()
    loop.add_reader(events.fileno(), arrived)
    stop = threading.Event()
    if busy:
        threading.Thread(target=animate, args=(display, window_id, stop), daemon=True).start()
    await asyncio.sleep(1.0)  # let the first keyframe go out

    keycode_a = Display(display).keysym_to_keycode(ord("a"))
    latencies = []
    started, frames_before = time.perf_counter(), frames
    for i in range(samples):
        if i % 2:
            what, msgs = ("key", keycode_a), [{"type": "key", "code": "KeyA", "key": "a", "down": True},
                                             {"type": "key", "code": "KeyA", "key": "a", "down": False}]
        else:
            x, y = 100 + i % 1000, 100 + i % 500
            what, msgs = ("pointer", x, y), [{"type": "pointer", "x": x, "y": y}]
        waiting[what] = loop.create_future()
        start = time.perf_counter()
        for msg in msgs:
            dc.send(json.dumps(msg))
        latencies.append((await asyncio.wait_for(waiting[what], 5) - start) * 1000)
        await asyncio.sleep(0.01)  # a person's pace, under the agent's rate limit

    fps = (frames - frames_before) / (time.perf_counter() - started)
    stop.set()
    loop.remove_reader(events.fileno())
    await pc.close()
    agent.terminate()
    agent.wait()
    xvfb.stop()
    window.join(5)
    latencies.sort()
    return {"what": "input latency, aiortc data-channel send -> X event at a client window",
            "samples": samples, "p50_ms": round(statistics.median(latencies), 3),
            "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1], 3),
            "max_ms": round(latencies[-1], 3), "video_fps_received": round(fps, 1),
            "video": "x264 1280x720 to the client, " + ("screen changing at 30 fps" if busy else "static screen")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--busy", action="store_true", help="keep the encoder busy meanwhile")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.samples, args.busy))))
