"""Fixtures for the gateway tests: the real app (create_app) on the real local spawner.

Most API tests need sessions that exist but never need them to run, so their "agent" is a
real process that never becomes healthy (`sleep`); the tests that need a running agent use the
real session agent.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection

from gateway.app import create_app
from gateway.config import Config

TOKEN = "test-token"
JWT_SECRET = "test-jwt-secret-long-enough-for-hs512-too-0123456789abcdef0123456789"
# A real process that never answers /health: sessions stay pending until deleted.
NEVER_READY = ("sh", "-c", "exec sleep 3600", "agent")
REAL_AGENT = (sys.executable, "-m", "session_agent")
# Applications that need no GIMP: a real agent streaming a display with this running on it.
LIGHT_APP = "sleep 3600"


def make_config(tmp_path: Path, **changes: Any) -> Config:
    base = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data", token=TOKEN,
                  jwt_secret=JWT_SECRET, agent_command=NEVER_READY, stop_grace=2.0,
                  start_timeout=60.0, idle_check_interval=0.5)
    return replace(base, **changes)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_jwt(sub: str, *, ttl: float = 3600, secret: str = JWT_SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, secret, algorithm="HS256")


def user(sub: str, **claims: Any) -> dict[str, str]:
    return bearer(make_jwt(sub, **claims))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0,
                     interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; generous timeouts, not timing assertions."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)


async def sdp_offer() -> tuple[RTCPeerConnection, str]:
    """A receive-only video offer with an `input` channel, for raw WHEP requests (close the pc)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("input")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


Gateway = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def gateway(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Gateway]:
    """`await gateway(**config_changes)`: a test client of create_app(config)."""
    async def make(**changes: Any) -> TestClient:
        return await aiohttp_client(create_app(make_config(tmp_path, **changes)))
    yield make
