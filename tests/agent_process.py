"""Start a real session agent process for tests and wait until it is healthy."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AgentProcess:
    proc: subprocess.Popen
    port: int
    display: str
    token: str | None
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_agent(display: str, *extra: str, token: str | None = "test-token", timeout: float = 30) -> AgentProcess:
    port = free_port()
    argv = [sys.executable, "-m", "session_agent", "--display", display, "--host", "127.0.0.1",
            "--port", str(port), *extra]
    if token:
        argv += ["--token", token]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    agent = AgentProcess(proc, port, display, token)
    # Drain the agent's log so a full pipe never blocks it; tests read agent.log.
    threading.Thread(target=lambda: agent.log.extend(proc.stderr), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            proc.wait()
            time.sleep(0.2)
            raise RuntimeError(f"agent exited {proc.returncode}: {''.join(agent.log)}")
        try:
            if agent.health()[0] == 200:
                return agent
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    agent.stop()
    raise RuntimeError("agent did not become healthy")


async def wait_healthy(url: str, timeout: float = 30, proc: subprocess.Popen | None = None) -> bool:
    """Poll `url`/health until 200. False if `proc` exits first; raises after `timeout`."""
    import asyncio

    import aiohttp
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return False
            try:
                async with http.get(url + "/health") as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy within {timeout:.0f}s")
