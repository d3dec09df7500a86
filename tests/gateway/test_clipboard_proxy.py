"""`/streaming/{id}/clipboard` through the real gateway to a real agent (a light application on
its display): the owner reads and sets text and PNG images, which X applications (xclip, with
the session's cookie) paste; everybody else gets nothing; 32 MiB is the most, refused before
the body when Content-Length says so; the agent's token never reaches the browser."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.http import REGISTRY
from tests.files.test_gimp_roundtrip import session_display
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, eventually, make_jwt, user
from tests.input.test_clipboard_images import png, stop, xclip_offer, xclip_read

MIB = 1024 * 1024


@pytest.fixture
async def running(gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(client, session id) of Alice's running session; X clients here get its display's cookie."""
    client = await gateway(auth="jwt", agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           session_size="320x240")
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=user("alice"))
    sid = (await r.json())["id"]

    async def is_running() -> bool:
        r = await client.get(f"/api/sessions/{sid}", headers=user("alice"))
        return (await r.json())["phase"] == "running"
    await eventually(is_running)
    monkeypatch.setenv("XAUTHORITY", str(tmp_path / "data" / "run" / sid / "Xauthority"))
    return client, sid


async def test_the_owner_reads_and_sets_the_clipboard(running) -> None:
    client, sid = running
    url, alice = f"/streaming/{sid}/clipboard", user("alice")
    display = session_display(sid)
    seen: list[str] = []
    r = await client.get(url, headers=alice)
    assert r.status == 204  # nothing copied yet

    # Text, as a paste in the page sends it: both selections.
    r = await client.put(url, data="from the browser ✓".encode(), headers={
        **alice, "Content-Type": "text/plain;charset=UTF-8"})
    assert r.status == 200 and await r.json() == {"mime": "text/plain", "size": len("from the browser ✓".encode())}
    assert (await xclip_read(display, "UTF8_STRING")).decode() == "from the browser ✓"
    assert (await xclip_read(display, "UTF8_STRING", "primary")).decode() == "from the browser ✓"

    # An image of 20 MB, streamed through, offered as image/png; read back byte for byte.
    image = png(2700, 2500, noise=True)
    assert len(image) > 20_000_000
    r = await client.put(url, data=image, headers={**alice, "Content-Type": "image/png"})
    assert r.status == 200, await r.text()
    seen += [str(r.headers), await r.text()]
    assert await xclip_read(display, "image/png") == image
    r = await client.get(url, headers=alice)
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    assert r.headers["Cache-Control"] == "no-store"
    assert await r.read() == image
    seen.append(str(r.headers))

    # What an application copies comes back the same way.
    copied = png(50, 40, seed=3)
    proc = await xclip_offer(display, copied)
    try:
        async def copied_there() -> bool:
            r = await client.get(url, headers=alice)
            return r.status == 200 and await r.read() == copied
        await eventually(copied_there, timeout=30)
    finally:
        await stop(proc)

    # Errors are the agent's, as JSON.
    r = await client.put(url, data=b"not a png", headers={**alice, "Content-Type": "image/png"})
    assert r.status == 400 and "PNG" in (await r.json())["error"]
    r = await client.put(url, data=b"x", headers={**alice, "Content-Type": "application/zip"})
    assert r.status == 415
    seen += [await r.text(), str(r.headers)]
    token = client.app[REGISTRY].spawner.get(sid).agent_token
    assert not any(token in text for text in seen)


async def test_nobody_else_reaches_it(running) -> None:
    client, sid = running
    url = f"/streaming/{sid}/clipboard"
    r = await client.put(url, data=b"alice's secret", headers={**user("alice"), "Content-Type": "text/plain"})
    assert r.status == 200
    for headers in (user("bob"), {}, {"Authorization": f"Bearer {make_jwt('alice', secret='x' * 64)}"}):
        for method, body in (("GET", None), ("PUT", b"bob was here")):
            r = await client.request(method, url, data=body, headers={**headers, "Content-Type": "text/plain"})
            assert r.status in (401, 404), (headers, method, r.status)
            assert "secret" not in await r.text()
    r = await client.get(url, headers=user("alice"))
    assert await r.read() == b"alice's secret"  # unchanged
    r = await client.get("/streaming/s0000000000000000/clipboard", headers=user("alice"))
    assert r.status == 404


async def test_over_32_mib_is_refused(running) -> None:
    client, sid = running
    url = f"/streaming/{sid}/clipboard"
    alice = user("alice")
    r = await client.put(url, data=b"kept", headers={**alice, "Content-Type": "text/plain"})
    assert r.status == 200
    # A declared length over the limit: the answer comes before one byte of the body is sent.
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write((f"PUT {url} HTTP/1.1\r\nHost: gw\r\nAuthorization: {alice['Authorization']}\r\n"
                      f"Content-Type: image/png\r\nContent-Length: {32 * MIB + 1}\r\n\r\n").encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")

    # Chunked (no length): cut off once more than 32 MiB has come, and nothing is set.
    async def endless():
        yield png(8, 8)
        for _ in range(40):
            yield bytes(MIB)
    async with aiohttp.ClientSession() as http:
        async with http.put(str(client.make_url(url)), data=endless(),
                            headers={**alice, "Content-Type": "image/png"}) as r:
            assert r.status == 413
    r = await client.get(url, headers=alice)
    assert await r.read() == b"kept"
    # Exactly 32 MiB goes through.
    image = png(8, 8)
    image += bytes(32 * MIB - len(image))
    r = await client.put(url, data=image, headers={**alice, "Content-Type": "image/png"})
    assert r.status == 200, await r.text()
    assert await xclip_read(session_display(sid), "image/png") == image


async def test_a_stopped_session_says_so(running) -> None:
    client, sid = running
    await client.app[REGISTRY].spawner.delete(sid)
    r = await client.get(f"/streaming/{sid}/clipboard", headers=user("alice"))
    assert r.status in (404, 409) and "error" in await r.json()
