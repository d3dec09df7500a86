"""Density: N real GIMP sessions on this machine, each answering as if it were alone.

    python -m bench.density [--sessions 40] [--quick] [--size 1920x1080] [--idle-seconds 30]

Starts `python -m gateway` (local spawner, --auth jwt: one user per session, so every
application runs sandboxed as in production) and creates N GIMP sessions one after another
through the API; each is started when the one before it shows GIMP painted to a WebRTC viewer
(aiortc through the gateway's WHEP proxy), which then leaves. Then, with nobody watching any of
them, it reports:

- per-session PSS of the session's whole process tree (supervisor, agent, Xvfb, window
  manager, bwrap, GIMP and its children) from /proc/PID/smaps_rollup, by component too;
- the idle CPU of all N together from /proc/PID/stat over --idle-seconds;
- create → painted of the Nth session next to the first;
- glass-to-glass p50/p95 (the screen filled with a colour over GIMP → the viewer's first
  decoded frame showing it) and input latency (a data-channel `pointer` → the MotionNotify of
  an InputOnly window over GIMP) of the first session with one viewer while the others are idle,
  next to the same session measured alone, before the others were started;
- the first viewer's keyframe after nobody watched (the agent's agent_resume_seconds).

Free memory is checked first: when N sessions cannot fit, as many as fit are run and the row
says so. Prints one JSON object per figure (bench/figures.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AGENT_ICE_ADDRESSES", "127.0.0.1")

import aioice.ice  # noqa: E402
import jwt  # noqa: E402

import bench.marker_client  # noqa: E402,F401  (frames complete on the marker bit, as in a browser)
from bench.figures import figure  # noqa: E402
from bench.session_harness import cmdline, cpu_seconds, descendants, histograms, load_average  # noqa: E402
from bench.xpaint import Flasher  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

JWT_SECRET = "bench-density-secret-0123456789abcdef"
# What one session is assumed to need when deciding how many fit (measured: ~120-190 MB);
# the rest of the machine (other work, page cache) keeps what is left.
SESSION_BUDGET_MB = 300
TARGETS = {"pss_mb": 120, "idle_cpu_percent": 5, "latency_p50_ratio": 1.10, "start_ratio": 1.5}
COMPONENTS = (("xvfb", "Xvfb"), ("window_manager", "openbox"), ("agent", "session_agent"),
              ("supervisor", "supervisor.py"), ("bwrap", "bwrap"))


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 24 * 3600}, JWT_SECRET, algorithm="HS256")


def available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # gone meanwhile
        pass
    return 0


def component(pid: int) -> str:
    args = cmdline(pid)
    head = " ".join(args[:3])
    for name, needle in COMPONENTS:
        if needle in head:
            return name
    return "application"  # GIMP, its plug-ins and script-fu, setpriv/env before exec


class Gateway:
    def __init__(self, sessions: int, size: str) -> None:
        self.data = tempfile.TemporaryDirectory(prefix="bench-density-")
        env = {**os.environ, "GATEWAY_AUTH": "jwt", "GATEWAY_JWT_SECRET": JWT_SECRET,
               "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": "0", "GATEWAY_DATA_DIR": self.data.name,
               "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_SESSION_SIZE": size,
               "GATEWAY_MAX_SESSIONS_TOTAL": str(sessions + 1), "GATEWAY_START_TIMEOUT": "180",
               "GATEWAY_DEFAULT_TIMEOUT": str(24 * 3600), "AGENT_ICE_ADDRESSES": "127.0.0.1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line.startswith("Gateway ready: open "):
            self.stop()
            raise RuntimeError(f"gateway did not start: {line!r}")
        self.base = line.split("open ", 1)[1].strip().split("/?", 1)[0].rstrip("/")

    def run_dir(self, session_id: str) -> Path:
        return Path(self.data.name) / "run" / session_id

    def supervisor(self, session_id: str) -> int:
        marker = str(self.run_dir(session_id) / "token")
        for pid in descendants(self.proc.pid):
            args = cmdline(pid)
            if any(a.endswith("supervisor.py") for a in args[:3]) and marker in args:
                return pid
        raise RuntimeError(f"no supervisor for session {session_id}")

    def fork_servers(self) -> list[int]:
        """The local spawner's fork server (gateway/spawners/forkserver.py), whose forks the agents are."""
        return [pid for pid in descendants(self.proc.pid) if "gateway.spawners.forkserver" in cmdline(pid)[:3]]

    def tree(self, session_id: str) -> list[int]:
        root = self.supervisor(session_id)
        return [root, *descendants(root)]

    def agent(self, session_id: str) -> tuple[int, int, str]:
        """(pid, port, display) of the session's agent."""
        for pid in self.tree(session_id):
            args = cmdline(pid)
            if args[1:3] == ["-m", "session_agent"]:
                return pid, int(args[args.index("--port") + 1]), args[args.index("--display") + 1]
        raise RuntimeError(f"no agent for session {session_id}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(180)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.data.cleanup()


async def api(http, gw: Gateway, method: str, path: str, user: str, body: dict | None = None) -> tuple[int, dict]:
    async with http.request(method, gw.base + path, json=body,
                            headers={"Authorization": f"Bearer {token(user)}"}) as r:
        return r.status, await r.json(content_type=None)


def painted(frame) -> bool:
    return frame.to_ndarray(format="gray").std() > 10


async def start_session(http, gw: Gateway, user: str) -> tuple[str, float]:
    """Create a GIMP session and wait until a viewer sees it painted; (id, seconds)."""
    t0 = time.perf_counter()
    status, body = await api(http, gw, "POST", "/api/sessions", user, {"application": "gimp"})
    if status != 201:
        raise RuntimeError(f"create answered {status}: {body}")
    sid = body["id"]
    while body.get("phase") == "pending":
        await asyncio.sleep(0.1)
        _, body = await api(http, gw, "GET", f"/api/sessions/{sid}", user)
    if body.get("phase") != "running":
        raise RuntimeError(f"session {len(user)} did not start: {body.get('message')}")
    viewer = Viewer(gw.base, token=token(user))
    try:
        await viewer.connect(f"/streaming/{sid}/whep")
        await viewer.wait_for(painted, timeout=120)
    finally:
        await viewer.close()
    return sid, time.perf_counter() - t0


def small_rgb(frame) -> tuple[int, int, int]:
    tiny = frame.reformat(width=32, height=18, format="rgb24").to_ndarray()
    return tuple(int(v) for v in tiny[9, 16])


def near(a, b, tol: int = 28) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def input_window(display: str, xauthority: str, conn: Connection) -> None:
    """An InputOnly window over the whole screen in a process of its own: it draws nothing (the
    flashes paint over GIMP) and reports when each MotionNotify arrived (perf_counter)."""
    os.environ["XAUTHORITY"] = xauthority
    from Xlib import X
    from Xlib.display import Display
    from Xlib.error import ConnectionClosedError
    d = Display(display)
    screen = d.screen()
    win = screen.root.create_window(0, 0, screen.width_in_pixels, screen.height_in_pixels, 0, 0,
                                    window_class=X.InputOnly, visual=X.CopyFromParent,
                                    override_redirect=True, event_mask=X.PointerMotionMask)
    win.map()
    d.sync()
    conn.send("ready")
    while True:
        try:
            ev = d.next_event()
        except ConnectionClosedError:
            return
        if ev.type == X.MotionNotify:
            conn.send(((ev.root_x, ev.root_y), time.perf_counter()))


async def measure_active(gw: Gateway, sid: str, user: str, flashes: int, pointers: int) -> dict[str, Any]:
    """Glass-to-glass and input latency of one session with one viewer."""
    _pid, _port, display = gw.agent(sid)
    xauthority = str(gw.run_dir(sid) / "Xauthority")
    os.environ["XAUTHORITY"] = xauthority
    viewer = Viewer(gw.base, token=token(user))
    ctx = multiprocessing.get_context("spawn")
    events, child_end = ctx.Pipe(duplex=False)
    window = ctx.Process(target=input_window, args=(display, xauthority, child_end), daemon=True)
    flasher = Flasher(display)
    loop = asyncio.get_running_loop()
    try:
        connecting = time.perf_counter()
        await viewer.connect(f"/streaming/{sid}/whep")
        connected = time.perf_counter()
        await viewer.wait_for(lambda f: True, timeout=60)  # (the last flash may still cover GIMP)
        first_frame = time.perf_counter()
        rng = random.Random(7)
        glass = []
        for i in range(flashes):
            await asyncio.sleep(rng.uniform(0.15, 0.4))
            rgb = (rng.randrange(40, 256), rng.randrange(0, 256), (i * 97) % 256)
            t0 = time.perf_counter()
            flasher.flash(rgb)
            await viewer.wait_for(lambda f: near(small_rgb(f), rgb), timeout=10)
            glass.append((time.perf_counter() - t0) * 1000)
        window.start()
        await loop.run_in_executor(None, events.recv)
        waiting: dict[tuple[int, int], asyncio.Future] = {}

        def arrived() -> None:
            while events.poll():
                where, at = events.recv()
                future = waiting.pop(tuple(where), None)
                if future is not None and not future.done():
                    future.set_result(at)

        loop.add_reader(events.fileno(), arrived)
        try:
            inputs = []
            for i in range(pointers):
                where = (200 + (i * 37) % 1200, 150 + (i * 53) % 700)
                waiting[where] = loop.create_future()
                t0 = time.perf_counter()
                viewer.send({"type": "pointer", "x": where[0], "y": where[1]})
                inputs.append((await asyncio.wait_for(waiting[where], 5) - t0) * 1000)
                await asyncio.sleep(0.02)
        finally:
            loop.remove_reader(events.fileno())
    finally:
        flasher.close()
        await viewer.close()
        if window.pid is not None:
            window.kill()
            window.join(5)
    return {"glass_p50_ms": statistics.median(glass), "glass_p95_ms": quantile(glass, 0.95),
            "input_p50_ms": statistics.median(inputs), "input_p95_ms": quantile(inputs, 0.95),
            "flashes": len(glass), "pointers": len(inputs), "connect_ms": (connected - connecting) * 1000,
            "first_frame_after_connect_ms": (first_frame - connected) * 1000}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def footprint(gw: Gateway, sessions: list[str]) -> tuple[list[float], dict[str, float]]:
    """PSS (MB) of each session's process tree, and the median by component. The local
    spawner's fork server (gateway/spawners/forkserver.py) holds the pages its forks share with
    it: its PSS is shared out among the sessions, a 1/N part in each."""
    servers = gw.fork_servers()
    share = sum(pss_kb(pid) for pid in servers) / max(1, len(sessions))
    totals, parts = [], {}
    for sid in sessions:
        by: dict[str, int] = {"fork_server_share": round(share)} if servers else {}
        for pid in gw.tree(sid):
            by[component(pid)] = by.get(component(pid), 0) + pss_kb(pid)
        totals.append(sum(by.values()) / 1024)
        for name, kb in by.items():
            parts.setdefault(name, []).append(kb / 1024)
    return totals, {k: round(statistics.median(v), 1) for k, v in sorted(parts.items())}


async def idle_cpu(gw: Gateway, sessions: list[str], seconds: float) -> tuple[float, float]:
    """% of one core used by all the sessions' processes together, and by the gateway."""
    def trees() -> list[int]:  # with the fork server, which the sessions share
        return [*gw.fork_servers(), *(pid for sid in sessions for pid in gw.tree(sid))]
    before = {pid: cpu_seconds([pid]) for pid in trees()}
    gw0, t0 = cpu_seconds([gw.proc.pid]), time.monotonic()
    await asyncio.sleep(seconds)
    after = {pid: cpu_seconds([pid]) for pid in trees()}
    elapsed = time.monotonic() - t0
    used = sum(after[p] - before.get(p, 0.0) for p in after)  # a process gone meanwhile is left out
    return 100 * used / elapsed, 100 * (cpu_seconds([gw.proc.pid]) - gw0) / elapsed


def resume_seconds(gw: Gateway, sid: str) -> float | None:
    """The agent's median of agent_resume_seconds (first viewer after none → its keyframe)."""
    import urllib.request
    from bench.session_harness import bucket_quantile
    _pid, port, _display = gw.agent(sid)
    secret = (gw.run_dir(sid) / "token").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        buckets = histograms(r.read().decode(), "agent_resume_seconds", "").get("", [])
    value, _count = bucket_quantile([], buckets, 0.5)
    return value


async def run(sessions: int, size: str, idle_seconds: float, flashes: int, pointers: int) -> list[dict]:
    import aiohttp
    fit = max(1, min(sessions, available_mb() // SESSION_BUDGET_MB))
    note = None
    if fit < sessions:
        note = (f"{sessions} asked, {fit} run: {available_mb()} MB available at {SESSION_BUDGET_MB} MB "
                "a session")
        sessions = fit
    loads = [load_average()]
    gw = Gateway(sessions, size)
    try:
        async with aiohttp.ClientSession() as http:
            users = [f"density-{i:02d}" for i in range(sessions)]
            started: list[str] = []
            starts: list[float] = []
            sid, seconds = await start_session(http, gw, users[0])
            started.append(sid)
            starts.append(seconds)
            await asyncio.sleep(3)  # GIMP settles (plug-in queries, first idle)
            alone = await measure_active(gw, started[0], users[0], flashes, pointers)
            for user in users[1:]:
                sid, seconds = await start_session(http, gw, user)
                started.append(sid)
                starts.append(seconds)
                loads.append(load_average())
            await asyncio.sleep(10)  # the last ones settle; every agent has nobody watching
            loads.append(load_average())
            cpu, gateway_cpu = await idle_cpu(gw, started, idle_seconds)
            totals, parts = footprint(gw, started)
            crowded = await measure_active(gw, started[0], users[0], flashes, pointers)
            resume = resume_seconds(gw, started[0])
            loads.append(load_average())
    finally:
        gw.stop()
    context = {"sessions": sessions, "size": size, "load_average": loads, "cores": os.cpu_count()}
    if note:
        context["note"] = note
    pss = statistics.mean(totals)
    rows = [
        figure("density.pss_per_session_mb", pss, "MB", TARGETS["pss_mb"], max_mb=round(max(totals), 1),
               min_mb=round(min(totals), 1), median_by_component_mb=parts, **context),
        figure("density.idle_cpu_all_sessions_percent", cpu, "% of one core", TARGETS["idle_cpu_percent"],
               seconds=idle_seconds, gateway_percent=round(gateway_cpu, 2), **context),
        figure("density.start_last_over_first", starts[-1] / starts[0], "ratio", TARGETS["start_ratio"],
               first_s=round(starts[0], 2), last_s=round(starts[-1], 2),
               median_s=round(statistics.median(starts), 2), max_s=round(max(starts), 2), **context),
        figure("density.glass_p50_crowded_over_alone", crowded["glass_p50_ms"] / alone["glass_p50_ms"], "ratio",
               TARGETS["latency_p50_ratio"], crowded_ms=round(crowded["glass_p50_ms"], 2),
               alone_ms=round(alone["glass_p50_ms"], 2), crowded_p95_ms=round(crowded["glass_p95_ms"], 2),
               alone_p95_ms=round(alone["glass_p95_ms"], 2), flashes=flashes, **context),
        figure("density.input_p50_crowded_ms", crowded["input_p50_ms"], "ms", None,
               alone_ms=round(alone["input_p50_ms"], 3), crowded_p95_ms=round(crowded["input_p95_ms"], 3),
               alone_p95_ms=round(alone["input_p95_ms"], 3), pointers=pointers, **context),
    ]
    if resume is not None:
        # An agent nobody watches holds no capture or encoder: the first viewer's offer makes
        # them again, meanwhile its transport connects (ICE, DTLS, SCTP). The keyframe must be
        # waiting when the transport is up, at the latest one frame time (--max-fps 60) later.
        late = resume * 1000 - crowded["connect_ms"]
        rows.append(figure("density.resume_keyframe_after_transport_ms", max(0.0, late), "ms", 1000 / 60,
                           keyframe_ms=round(resume * 1000, 2), transport_ms=round(crowded["connect_ms"], 2),
                           first_frame_after_connect_ms=round(crowded["first_frame_after_connect_ms"], 2),
                           what="first viewer after none: its keyframe encoded (agent_resume_seconds, "
                                "median) minus offer → data channel open", **context))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="4 sessions, fewer samples")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    if args.sessions < 1 or args.idle_seconds <= 0:
        parser.error("--sessions and --idle-seconds must be positive")
    sessions = 4 if args.quick else args.sessions
    flashes, pointers = (15, 60) if args.quick else (40, 200)
    for row in asyncio.run(run(sessions, args.size, args.idle_seconds, flashes, pointers)):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
