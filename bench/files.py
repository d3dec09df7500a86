"""Benchmark: files through the gateway, next to a direct copy on the same disk, and what a big
upload does to the stream.

    python -m bench.files [--quick] [--size-mb 500] [--runs 3] [--flashes 60]

Starts `python -m gateway` (local spawner, the real session agent at 1920x1080 streaming a light
application) and one session. Throughput: a file of --size-mb is uploaded with
PUT /api/sessions/{id}/files/… and downloaded with GET, each from a file and into a file on the
same disk as the session's home, next to `shutil.copyfile` + fsync of the same file on that
disk (an upload is fsynced before it takes its name, the download client fsyncs what it
wrote); the median of --runs of each, interleaved. The copy into the page cache alone (no
fsync: memory bandwidth, not the disk) is printed beside it. The HTTP client is a minimal one on a blocking socket
(sendfile out, recv_into in), so that the figure is the gateway's and the agent's, not a slow
client's. Latency: glass-to-glass as in bench/agent_media.py (a colour painted on the session's
X display → the first decoded frame showing it, an aiortc viewer through the gateway's WHEP),
alternating blocks with no upload and blocks during which 500 MB uploads run back to back (the
agent paces uploads while somebody watches: see session_agent/files/routes.py).
Prints one JSON figure per line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AGENT_ICE_ADDRESSES", "127.0.0.1")

import aioice.ice  # noqa: E402

from bench.agent_media import close, small_rgb  # noqa: E402  (also installs the marker jitter buffer)
from bench.figures import figure  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402
from tests.xserver import fill_root  # noqa: E402

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

TOKEN = "bench-token"
MB = 1 << 20
UPLOAD_UNDER_STREAM_MB = 500


# -- a minimal HTTP/1.1 client: the bytes move in the kernel as far as a client can make them ----

def _head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def put_file(port: int, path: str, source: Path) -> int:
    size = source.stat().st_size
    with socket.create_connection(("127.0.0.1", port)) as sock, source.open("rb") as f:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode())
        sock.sendfile(f)
        status, _, _ = _head(sock)
    return status


def get_file(port: int, path: str, target: Path) -> int:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Connection: close\r\n\r\n".encode())
        status, headers, rest = _head(sock)
        left = int(headers["content-length"]) - len(rest)
        buffer = memoryview(bytearray(4 * MB))
        with target.open("wb") as out:
            out.write(rest)
            while left > 0:
                n = sock.recv_into(buffer, min(len(buffer), left))
                if not n:
                    raise ConnectionError("download cut short")
                out.write(buffer[:n])
                left -= n
            out.flush()
            os.fsync(out.fileno())  # on the disk, as the direct copy and the upload are
    return status


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    status = fn(*args)
    elapsed = time.perf_counter() - t0
    if isinstance(status, int) and status not in (200, 201):
        raise RuntimeError(f"{fn.__name__}: HTTP {status}")
    return elapsed


# -- the gateway and its session -------------------------------------------------------------

def start_gateway(data: Path) -> tuple[subprocess.Popen, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_TOKEN=TOKEN, GATEWAY_HOST="127.0.0.1", GATEWAY_PORT="0",
               GATEWAY_DATA_DIR=str(data), GATEWAY_LOG_LEVEL="warning", GATEWAY_APP_GIMP="sleep 3600",
               GATEWAY_SESSION_SIZE="1920x1080", PYTHONPATH=str(ROOT))
    gw = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    base = gw.stdout.readline().split("open ", 1)[1].split("/?", 1)[0]
    return gw, int(base.rsplit(":", 1)[1])


def agent_of(session_id: str) -> tuple[str, Path]:
    """The session's display and home, from the agent's command line and environment."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
            env = dict(e.split("=", 1) for e in
                       Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in e)
        except OSError:
            continue
        if args[1:3] == ["-m", "session_agent"] and env.get("SESSION_ID") == session_id:
            if "--xauthority" in args:  # the display admits only holders of its cookie
                os.environ["XAUTHORITY"] = args[args.index("--xauthority") + 1]
            return args[args.index("--display") + 1], Path(env["HOME"])
    raise SystemExit("no agent found")


async def start_session(port: int) -> str:
    import aiohttp
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
        async with http.post("/api/sessions", json={"application": "gimp"}) as r:
            session = await r.json()
        while session["phase"] == "pending":
            await asyncio.sleep(0.1)
            async with http.get(f"/api/sessions/{session['id']}") as r:
                session = await r.json()
    assert session["phase"] == "running", session
    return session["id"]


# -- the measurements ------------------------------------------------------------------------

def copy_to_disk(source: Path, target: Path) -> None:
    """The direct copy: shutil.copyfile, then fsync, so that the bytes are on the disk (an upload
    is fsynced before it takes the target's name)."""
    shutil.copyfile(source, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def throughput(port: int, sid: str, work: Path, home: Path, size_mb: int, runs: int) -> dict[str, float]:
    source = work / "source.bin"
    with source.open("wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MB))
    url = f"/api/sessions/{sid}/files/bench.bin"
    copies, cached, uploads, downloads = [], [], [], []
    for _ in range(runs):
        copies.append(timed(copy_to_disk, source, work / "copy.bin"))
        (work / "copy.bin").unlink()
        cached.append(timed(shutil.copyfile, source, work / "copy.bin"))  # to the page cache only
        (work / "copy.bin").unlink()
        uploads.append(timed(put_file, port, url, source))
        downloads.append(timed(get_file, port, url, work / "download.bin"))
        assert (work / "download.bin").stat().st_size == source.stat().st_size == (home / "bench.bin").stat().st_size
        (work / "download.bin").unlink()
        (home / "bench.bin").unlink()
    source.unlink()
    rate = lambda seconds: size_mb / statistics.median(seconds)  # noqa: E731
    return {"copy": rate(copies), "cached_copy": rate(cached), "upload": rate(uploads),
            "download": rate(downloads)}


class Uploader:
    """500 MB uploads back to back on a thread while `running` is set."""

    def __init__(self, port: int, sid: str, source: Path) -> None:
        self.port, self.sid, self.source = port, sid, source
        self.running = threading.Event()
        self.stopped = False
        self.bytes = 0
        self.seconds = 0.0
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stopped:
            if not self.running.wait(0.1):
                continue
            took = timed(put_file, self.port, f"/api/sessions/{self.sid}/files/under-stream.bin", self.source)
            self.bytes += self.source.stat().st_size
            self.seconds += took

    def stop(self) -> None:
        self.stopped = True
        self.running.clear()
        self.thread.join()


async def flash_latency(viewer: Viewer, display: str, rng: random.Random, i: int) -> float:
    await asyncio.sleep(rng.uniform(0.15, 0.4))
    rgb = (rng.randrange(40, 256), rng.randrange(0, 256), (i * 97) % 256)
    t0 = time.perf_counter()
    fill_root(display, rgb)
    await viewer.wait_for(lambda f: close(small_rgb(f), rgb), timeout=10)
    return (time.perf_counter() - t0) * 1000


async def latency(port: int, sid: str, display: str, work: Path, flashes: int) -> dict[str, float]:
    source = work / "under-stream.bin"
    with source.open("wb") as f:
        for _ in range(UPLOAD_UNDER_STREAM_MB):
            f.write(os.urandom(MB))
    uploader = Uploader(port, sid, source)
    viewer = Viewer(f"http://127.0.0.1:{port}", token=TOKEN)
    idle: list[float] = []
    loaded: list[float] = []
    rng = random.Random(11)
    try:
        await viewer.connect(f"/streaming/{sid}/whep")
        fill_root(display, (0, 0, 0))
        await viewer.wait_for(lambda f: close(small_rgb(f), (0, 0, 0)), timeout=30)
        block = 5
        for start in range(0, flashes, 2 * block):  # alternate: the machine's other load drifts
            uploader.running.clear()
            await asyncio.sleep(0.5)
            for i in range(block):
                idle.append(await flash_latency(viewer, display, rng, start + i))
            uploader.running.set()
            await asyncio.sleep(0.5)  # the upload is under way
            for i in range(block):
                loaded.append(await flash_latency(viewer, display, rng, start + block + i))
    finally:
        uploader.stop()
        await viewer.close()
        source.unlink()
    return {"idle_p50": statistics.median(idle), "upload_p50": statistics.median(loaded),
            "idle_p95": sorted(idle)[round(0.95 * (len(idle) - 1))],
            "upload_p95": sorted(loaded)[round(0.95 * (len(loaded) - 1))],
            "samples": len(idle) + len(loaded),
            "upload_mb_s": uploader.bytes / MB / uploader.seconds if uploader.seconds else 0.0}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 MB, 2 runs, 30 flashes")
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flashes", type=int, default=60)
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.runs, args.flashes = 200, 2, 30
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        gw, port = start_gateway(Path(tmp) / "data")
        try:
            sid = await start_session(port)
            display, home = agent_of(sid)
            rates = await asyncio.to_thread(throughput, port, sid, work, home, args.size_mb, args.runs)
            lat = await latency(port, sid, display, work, args.flashes)
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(60)
    size = {"size_mb": args.size_mb, "runs": args.runs}
    for kind in ("upload", "download"):
        print(json.dumps(figure(f"files.{kind}_vs_direct_copy", rates[kind] / rates["copy"], "ratio", 0.5,
                                lower_is_better=False, mb_s=round(rates[kind], 1),
                                direct_copy_mb_s=round(rates["copy"], 1),
                                page_cache_copy_mb_s=round(rates["cached_copy"], 1),
                                vs_page_cache_copy=round(rates[kind] / rates["cached_copy"], 3), **size)))
    print(json.dumps(figure("files.latency_p50_added_by_upload_ms", lat["upload_p50"] - lat["idle_p50"], "ms", 5,
                            idle_p50_ms=round(lat["idle_p50"], 2), upload_p50_ms=round(lat["upload_p50"], 2),
                            idle_p95_ms=round(lat["idle_p95"], 2), upload_p95_ms=round(lat["upload_p95"], 2),
                            samples=lat["samples"], upload_mb_s_meanwhile=round(lat["upload_mb_s"], 1),
                            upload_mb=UPLOAD_UNDER_STREAM_MB, size="1920x1080")))


if __name__ == "__main__":
    asyncio.run(main())
