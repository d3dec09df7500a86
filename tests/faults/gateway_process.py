"""A real `python -m gateway` process (local spawner) for the fault tests, and its sessions."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.faults import procs

TOKEN = "fault-token"
# The "application": a real process on the session's display that needs no GIMP.
APP = "sleep 3600"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class GatewayProcess:
    data_dir: Path
    extra: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(self.env, PYTHONPATH=str(ROOT))
        argv = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", "0",
                "--data-dir", str(self.data_dir), "--token", TOKEN, "--app-gimp", APP,
                "--session-size", "640x480", "--stop-grace", "2", "--idle-check-interval", "0.5",
                "--start-timeout", "60", *self.extra]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready: list[str] = []
        got = threading.Event()

        def read_stdout() -> None:
            for line in self.proc.stdout:
                match = re.search(r"open (http://[^/?\s]+)", line)
                if match and not got.is_set():
                    ready.append(match.group(1))
                    got.set()
        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        if not got.wait(timeout):
            self.kill()
            raise AssertionError(f"gateway did not start: {''.join(self.log)[-3000:]}")
        self.url = ready[0]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    # -- the session API --------------------------------------------------------------------
    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            async with http.request(method, self.url + path, **kwargs) as r:
                return r.status, await r.json(content_type=None)

    async def create(self, **body: Any) -> dict[str, Any]:
        status, session = await self.call("POST", "/api/sessions", json={"application": "gimp", **body})
        assert status == 201, session
        return session

    async def session(self, sid: str) -> dict[str, Any] | None:
        status, body = await self.call("GET", f"/api/sessions/{sid}")
        return body if status == 200 else None

    async def wait_session(self, sid: str, check, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.session(sid)
            if check(last):
                return last or True
            await asyncio.sleep(0.1)
        raise AssertionError(f"session {sid} never satisfied the check (last: {last})")

    # -- what runs a session -----------------------------------------------------------------
    def supervisors(self) -> list[int]:
        return [p for p in procs.descendants(self.pid)
                if "supervisor.py" in " ".join(procs.cmdline(p))]


@dataclass
class SessionProcesses:
    """The processes of one local session, found from its supervisor."""
    supervisor: int
    agent: int | None = None
    xvfb: int | None = None
    app: int | None = None
    display: str | None = None
    port: int | None = None
    xauthority: str | None = None  # the display's cookie: its X server admits no client without it

    @classmethod
    def find(cls, supervisor: int) -> SessionProcesses:
        found = cls(supervisor)
        for pid in procs.descendants(supervisor):
            argv = procs.cmdline(pid)
            if "session_agent" in argv and "--display" in argv:
                found.agent = pid
                found.display = argv[argv.index("--display") + 1]
                found.port = int(argv[argv.index("--port") + 1])
                if "--xauthority" in argv:
                    found.xauthority = argv[argv.index("--xauthority") + 1]
            elif argv[:1] == ["Xvfb"]:
                found.xvfb = pid
            elif argv[:2] == ["sleep", "3600"]:
                found.app = pid
        return found

    @property
    def complete(self) -> bool:
        return None not in (self.agent, self.xvfb, self.app)

    def leftovers(self) -> list[int]:
        """Everything of this session still alive: the supervisor, its tree, the display's users."""
        pids = set(procs.descendants(self.supervisor))
        if procs.alive(self.supervisor):
            pids.add(self.supervisor)
        if self.display:
            pids |= set(procs.display_users(self.display))
        return sorted(pids)

    def describe_leftovers(self) -> str:
        return "; ".join(f"{p}: {' '.join(procs.cmdline(p))}" for p in self.leftovers())
