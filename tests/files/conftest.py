"""Fixtures for the files tests: real session agents serving a temporary home, and the real
gateway (create_app, local spawner) starting real agents with a light application."""
from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import contextmanager
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.http import REGISTRY
from tests.agent_process import AgentProcess, start_agent
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, eventually, make_config, user
from tests.xserver import start_xvfb

TOKEN = "files-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class FilesAgent:
    agent: AgentProcess
    home: Path

    @property
    def url(self) -> str:
        return self.agent.url + "/files/"


@contextmanager
def run_agent(home: Path, *extra: str) -> Iterator[FilesAgent]:
    xvfb = start_xvfb("320x240")
    try:
        agent = start_agent(xvfb.display, "--home", str(home), *extra, token=TOKEN)
        try:
            yield FilesAgent(agent, home)
        finally:
            agent.stop()
    finally:
        xvfb.stop()


@pytest.fixture(scope="module")
def files_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilesAgent]:
    """An agent whose home is a fresh folder beside an `outside` folder."""
    base = tmp_path_factory.mktemp("files-agent")
    (base / "home").mkdir()
    (base / "outside").mkdir()
    with run_agent(base / "home", "--max-upload", "8M") as agent:
        yield agent


def tree(root: Path) -> dict[str, Any]:
    """Everything under `root`, for before/after comparisons: kind, content hash, mode, links."""
    out: dict[str, Any] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode,
                            st.st_mtime_ns, st.st_nlink)
    return out


# -- through the gateway -------------------------------------------------------------------

@dataclass
class Gateway:
    client: TestClient

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    def home_of(self, user_id: str) -> Path:
        return self.client.app[REGISTRY].spawner.home_of(user_id)

    async def session(self, user_id: str, application: str = "inkscape") -> str:
        """A running session of `user_id` (inkscape here is a light application)."""
        headers = user(user_id)
        r = await self.client.post("/api/sessions", json={"application": application}, headers=headers)
        assert r.status in (200, 201), await r.text()
        sid = (await r.json())["id"]

        async def running() -> bool:
            r = await self.client.get(f"/api/sessions/{sid}", headers=headers)
            body = await r.json()
            assert body["phase"] in ("pending", "running"), body
            return body["phase"] == "running"
        await eventually(running, timeout=180)
        return sid


@pytest.fixture
async def gateway(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = make_config(tmp_path, auth="jwt", agent_command=REAL_AGENT, session_size="320x240",
                         start_timeout=180.0,
                         app_commands={"gimp": "gimp --no-splash", "inkscape": LIGHT_APP,
                                       "blender": LIGHT_APP})
    yield Gateway(await aiohttp_client(create_app(config)))


async def sha256_of(response: aiohttp.ClientResponse) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async for chunk in response.content.iter_chunked(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def raw_request(port: int, head: str, body: bytes = b"", *, cut: bool = False,
                      timeout: float = 30) -> bytes:
    """One HTTP/1.1 request on a fresh socket; `cut` closes it after `body` without reading."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + b"\r\n\r\n" + body)
        await writer.drain()
        if cut:
            return b""
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
