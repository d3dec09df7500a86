"""The agent's `/clipboard` (SPEC "Clipboard beyond text") on a real agent process and a real
Xvfb, read and written back by xclip: text and PNG images both ways, the token, the limits
(a declared Content-Length over them refused before any body is read), and bad bodies that
change nothing."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.agent_process import AgentProcess, start_agent
from tests.input.test_clipboard import xclip_out
from tests.input.test_clipboard_images import png, stop, xclip_offer, xclip_read
from tests.xserver import start_xvfb

TOKEN = "clipboard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    xvfb = start_xvfb("320x240")
    try:
        process = start_agent(xvfb.display, token=TOKEN)
        try:
            yield process
        finally:
            process.stop()
    finally:
        xvfb.stop()


@pytest.fixture
async def http(agent: AgentProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(agent.url, headers=AUTH) as session:
        yield session


async def current(http: aiohttp.ClientSession) -> tuple[int, str, bytes]:
    async with http.get("/clipboard") as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def raw(agent: AgentProcess, head: str, body: bytes = b"") -> bytes:
    """One request on a fresh socket; the answer as far as the agent sends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_the_agent_token_is_required(agent: AgentProcess) -> None:
    async with aiohttp.ClientSession(agent.url) as anonymous:
        async with anonymous.get("/clipboard") as r:
            assert r.status == 401 and "error" in await r.json()
        async with anonymous.put("/clipboard", data=b"x", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 401
        async with anonymous.put("/clipboard", data=b"x", headers={
                "Content-Type": "text/plain", "Authorization": "Bearer wrong"}) as r:
            assert r.status == 401


async def test_text_both_ways(agent: AgentProcess, http: aiohttp.ClientSession) -> None:
    async with http.put("/clipboard", data="héllo ✓".encode(),
                        headers={"Content-Type": "text/plain; charset=utf-8"}) as r:
        assert r.status == 200
        assert await r.json() == {"mime": "text/plain", "size": len("héllo ✓".encode())}
    assert await xclip_out(agent.display, "clipboard") == "héllo ✓"
    assert await xclip_out(agent.display, "primary") == "héllo ✓"  # as the data channel does
    status, kind, body = await current(http)
    assert (status, kind, body) == (200, "text/plain; charset=utf-8", "héllo ✓".encode())


async def test_an_image_both_ways(agent: AgentProcess, http: aiohttp.ClientSession) -> None:
    image = png(900, 700, noise=True)  # 1.9 MB: INCR to xclip
    async with http.put("/clipboard", data=image, headers={"Content-Type": "image/png"}) as r:
        assert r.status == 200 and await r.json() == {"mime": "image/png", "size": len(image)}
    assert await xclip_read(agent.display, "image/png") == image
    async with http.get("/clipboard") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"
        assert r.headers["Cache-Control"] == "no-store"
        assert await r.read() == image

    # An application's copy (xclip) replaces it, and GET answers with that.
    copied = png(64, 48, seed=7)
    proc = await xclip_offer(agent.display, copied)
    try:
        async def copied_there() -> bool:
            return await current(http) == (200, "image/png", copied)
        async with asyncio.timeout(20):
            while not await copied_there():
                await asyncio.sleep(0.05)
    finally:
        await stop(proc)
    # Its owner gone, nothing is left to paste.
    async with asyncio.timeout(20):
        while (await current(http))[0] != 204:
            await asyncio.sleep(0.05)


async def test_bad_bodies_change_nothing(agent: AgentProcess, http: aiohttp.ClientSession) -> None:
    async with http.put("/clipboard", data=b"kept", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200
    cases = [
        ("application/octet-stream", b"x", 415),
        ("text/plain; charset=latin-1", b"caf\xe9", 415),
        ("text/html", b"<b>x</b>", 415),
        ("image/png", b"GIF89a not a png", 400),
        ("text/plain", b"\xff\xfe not utf-8", 400),
        ("text/plain", b"x" * (MIB + 1), 413),
    ]
    for content_type, body, status in cases:
        async with http.put("/clipboard", data=body, headers={"Content-Type": content_type}) as r:
            assert r.status == status, (content_type, await r.text())
            assert (await r.json())["error"]
    assert await current(http) == (200, "text/plain; charset=utf-8", b"kept")
    assert await xclip_out(agent.display, "clipboard") == "kept"


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(
        agent: AgentProcess, http: aiohttp.ClientSession) -> None:
    # Headers only: the answer comes although not one byte of the 32 MiB + 1 was sent.
    answer = await raw(agent, f"PUT /clipboard HTTP/1.1\nHost: agent\nAuthorization: Bearer {TOKEN}\n"
                              f"Content-Type: image/png\nContent-Length: {32 * MIB + 1}")
    assert answer.startswith(b"HTTP/1.1 413 ")
    # Expect: 100-continue gets the refusal instead of "100 Continue".
    answer = await raw(agent, f"PUT /clipboard HTTP/1.1\nHost: agent\nAuthorization: Bearer {TOKEN}\n"
                              f"Content-Type: image/png\nContent-Length: {64 * MIB}\nExpect: 100-continue")
    assert answer.startswith(b"HTTP/1.1 413 ")
    answer = await raw(agent, f"PUT /clipboard HTTP/1.1\nHost: agent\nContent-Type: image/png\n"
                              f"Content-Length: {64 * MIB}\nExpect: 100-continue")
    assert answer.startswith(b"HTTP/1.1 401 ")


async def test_a_chunked_body_over_the_limit_is_cut_off(agent: AgentProcess,
                                                        http: aiohttp.ClientSession) -> None:
    async with http.put("/clipboard", data=b"before", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200

    async def endless():  # no Content-Length: aiohttp sends it chunked
        yield png(8, 8)
        for _ in range(40):
            yield bytes(MIB)
    async with http.put("/clipboard", data=endless(), headers={"Content-Type": "image/png"}) as r:
        assert r.status == 413
    assert await current(http) == (200, "text/plain; charset=utf-8", b"before")


async def test_the_largest_image_is_taken(agent: AgentProcess, http: aiohttp.ClientSession) -> None:
    image = png(8, 8)
    image += bytes(32 * MIB - len(image))  # a PNG signature and 32 MiB in all: at the limit
    async with http.put("/clipboard", data=image, headers={"Content-Type": "image/png"}) as r:
        assert r.status == 200, await r.text()
    assert await xclip_read(agent.display, "image/png") == image
