"""What the browser benchmarks share: a real gateway (local spawner, token mode) with one
session, the session's agent found in the process tree, its /metrics, CPU from /proc, and
Chromium launched the way the tests launch it.

Everything runs on loopback: the agents inherit AGENT_ICE_ADDRESSES=127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Mapping

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class CpuMeter:
    """% of one core used by a set of processes between start() and stop()."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self._c0, self._t0 = cpu_seconds(self.pids), time.monotonic()

    def stop(self) -> float:
        return 100 * (cpu_seconds(self.pids) - self._c0) / (time.monotonic() - self._t0)


def chromium_pids() -> list[int]:
    """Chromium's processes started by this benchmark (browser, renderer, GPU/utility)."""
    return [p for p in descendants(os.getpid()) if any("chromium" in a for a in cmdline(p)[:1])]


@dataclass
class Agent:
    pid: int
    port: int
    display: str
    token: str
    xauthority: str | None = None  # the display's cookie (--xauthority): its X server admits no one else

    @property
    def x_env(self) -> dict[str, str]:
        """The environment for a process that connects to this agent's display."""
        return {**os.environ, **({"XAUTHORITY": self.xauthority} if self.xauthority else {})}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        request = urllib.request.Request(self.url + "/metrics", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.read().decode()


def histograms(text: str, name: str, label: str) -> dict[str, list[tuple[float, float]]]:
    """Cumulative buckets [(le, count)] of histogram `name`, by the value of `label`."""
    out: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name == f"{name}_bucket":
                out.setdefault(s.labels.get(label, ""), []).append((float(s.labels["le"]), s.value))
    return {k: sorted(v) for k, v in out.items()}


def bucket_quantile(before: list[tuple[float, float]], after: list[tuple[float, float]],
                    q: float = 0.5) -> tuple[float | None, int]:
    """The q-quantile of what a histogram observed between two scrapes (linear within the
    bucket, as Prometheus' histogram_quantile does), and how many observations that was."""
    b = dict(before)
    deltas = [(le, count - b.get(le, 0.0)) for le, count in after]
    total = deltas[-1][1] if deltas else 0
    if total <= 0:
        return None, 0
    rank, lower, below = q * total, 0.0, 0.0
    for le, cumulative in deltas:
        if cumulative >= rank:
            if le == float("inf"):
                return lower, int(total)
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 0), int(total)
        lower, below = le, cumulative
    return lower, int(total)


class Gateway:
    """`python -m gateway` with the local spawner, token auth, on a free loopback port."""

    def __init__(self, *, size: str, app_command: str, agent_env: Mapping[str, str] = {},
                 agent_tree: Path | None = None) -> None:
        """`agent_tree`: a directory with another `session_agent` package to run instead of
        this tree's (an A/B against an older commit; see agent_at())."""
        self._data = tempfile.TemporaryDirectory(prefix="bench-gw-")
        env = {**os.environ, **agent_env, "GATEWAY_TOKEN": TOKEN, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": "0",
               "GATEWAY_DATA_DIR": self._data.name, "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_SESSION_SIZE": size,
               "GATEWAY_APP_GIMP": app_command, "AGENT_ICE_ADDRESSES": "127.0.0.1"}
        if agent_tree is not None:
            # `python -m` puts the working directory first on sys.path, before the PYTHONPATH
            # the spawner sets to this tree: the other tree's package is the one imported.
            script = f'cd {shlex.quote(str(agent_tree))} && exec {shlex.quote(sys.executable)} -m session_agent "$@"'
            env["GATEWAY_AGENT_COMMAND"] = shlex.join(["sh", "-c", script, "session_agent"])
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line.startswith("Gateway ready: open "):
            self.stop()
            raise RuntimeError(f"gateway did not start: {line!r}")
        self.base = line.split("open ", 1)[1].split("/?", 1)[0].rstrip("/")

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    async def start_session(self, timeout: float = 120) -> str:
        status, body = self.call("POST", "/api/sessions", {"application": "gimp"})
        if status not in (200, 201):
            raise RuntimeError(f"create answered {status}: {body}")
        deadline = time.monotonic() + timeout
        while body.get("phase") == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            _, body = self.call("GET", f"/api/sessions/{body['id']}")
        if body.get("phase") != "running":
            raise RuntimeError(f"session did not start: {body}")
        return body["id"]

    def agent(self, session_id: str) -> Agent:
        """The session's agent process: the `-m session_agent` below the gateway with its SESSION_ID."""
        for pid in descendants(self.proc.pid):
            args = cmdline(pid)
            if args[1:3] != ["-m", "session_agent"]:
                continue
            try:
                environ = dict(e.split("=", 1) for e in
                               Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in e)
            except OSError:
                continue
            if environ.get("SESSION_ID") == session_id:
                # The local spawner hands the agent its token in a file, never the environment.
                token = Path(args[args.index("--token-file") + 1]).read_text().strip()
                xauthority = args[args.index("--xauthority") + 1] if "--xauthority" in args else None
                return Agent(pid, int(args[args.index("--port") + 1]), args[args.index("--display") + 1], token,
                             xauthority)
        raise RuntimeError(f"no agent process for session {session_id}")

    def viewer_url(self, session_id: str, query: str = "") -> str:
        return f"{self.base}/streaming/{session_id}/?token={TOKEN}&resize=0{query}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._data.cleanup()


def agent_at(ref: str, into: Path) -> Path:
    """`session_agent/` as of git `ref`, unpacked into `into` (no checkout, no worktree)."""
    archive = subprocess.run(["git", "archive", ref, "session_agent"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


@asynccontextmanager
async def chromium() -> AsyncIterator:
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
