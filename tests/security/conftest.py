"""Shared helpers of the security tests: the real gateway app and raw HTTP on loopback."""
from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

# The same `gateway` fixture as the gateway tests: `await gateway(**config_changes)`.
from tests.gateway.conftest import Gateway, bearer, eventually, gateway  # noqa: F401


async def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte: client libraries normalise `..` away,
    which would hide exactly what these tests are about."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def running_session(client: TestClient) -> str:
    """Create a session as the token user and wait until it runs; its id."""
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=bearer())
    session_id = (await r.json())["id"]

    async def running() -> bool:
        s = await (await client.get(f"/api/sessions/{session_id}", headers=bearer())).json()
        assert s["phase"] != "failed", s
        return s["phase"] == "running"

    await eventually(running)
    return session_id
