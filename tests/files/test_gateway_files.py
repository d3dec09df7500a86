"""`/api/sessions/{id}/files/…` through the real gateway (local spawner) to real agents: big
files unchanged both ways, cut uploads leave nothing, only the owner gets in."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from pathlib import Path

import aiohttp
from yarl import URL

from gateway.http import CONFIG
from tests.files.conftest import Gateway, raw_request, sha256_of, tree
from tests.gateway.conftest import descendants, make_jwt, user

MB = 1 << 20


async def test_a_200_mb_file_round_trips_unchanged(gateway: Gateway, tmp_path: Path) -> None:
    sid = await gateway.session("alice")
    source = tmp_path / "photo.tif"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for _ in range(200):
            block = os.urandom(MB)
            digest.update(block)
            f.write(block)
    url = f"/api/sessions/{sid}/files/Uploads/photo.tif"
    async with aiohttp.ClientSession(gateway.url, headers=user("alice")) as http:
        with source.open("rb") as f:
            async with http.put(url, data=f, headers={"Content-Length": str(200 * MB)}) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["size"] == 200 * MB
        assert hashlib.sha256((gateway.home_of("alice") / "Uploads/photo.tif").read_bytes()
                              ).hexdigest() == digest.hexdigest()
        async with http.get(url) as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(200 * MB)
            assert r.headers["Content-Type"] == "image/tiff"
            assert await sha256_of(r) == (digest.hexdigest(), 200 * MB)


def cuts_logged(gateway: Gateway, sid: str) -> int:
    path = Path(gateway.client.app[CONFIG].data_dir) / "sessions" / f"{sid}.log"
    return path.read_text(errors="replace").count('"upload_cut"') if path.exists() else 0


def upload_open_in(home: Path) -> bool:
    """Whether a process of this test (the gateway's agents) holds an upload's temporary file
    in `home` open: an O_TMPFILE reads as "…/#inode (deleted)"."""
    for pid in descendants(os.getpid()):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(str(home)) and ("(deleted)" in target or ".gsp-upload-" in target):
                    return True
        except OSError:
            continue
    return False


async def test_an_upload_cut_at_a_random_byte_leaves_nothing(gateway: Gateway) -> None:
    """The browser's connection drops mid-body: after the agent has started writing, at a
    random byte. Neither a partial file nor a changed target nor a new folder remains."""
    sid = await gateway.session("alice")
    home = gateway.home_of("alice")
    (home / "Uploads").mkdir(exist_ok=True)
    (home / "Uploads/existing.png").write_bytes(b"the old picture")
    before = tree(home)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    token = make_jwt("alice")
    for chunked in (False, True):
        for target in ("Uploads/existing.png", "Uploads/new.png", "New/Deep/new.png"):
            size = rng.randrange(2, 8 * MB)
            cut = rng.randrange(1, size)
            head = (f"PUT /api/sessions/{sid}/files/{target} HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {token}\r\n")
            head += "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
            first = min(cut, 65536)
            cuts = cuts_logged(gateway, sid)
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.client.server.port)
            writer.write(head.encode() + b"\r\n\r\n" + (f"{size:x}\r\n".encode() if chunked else b"")
                         + os.urandom(first))
            await writer.drain()
            deadline = time.monotonic() + 30
            while not upload_open_in(home):  # the agent is writing it
                assert time.monotonic() < deadline, (seed, chunked, target)
                await asyncio.sleep(0.02)
            writer.write(os.urandom(cut - first))
            await writer.drain()
            writer.close()
            while cuts_logged(gateway, sid) == cuts:  # the agent saw the cut and cleaned up
                assert time.monotonic() < deadline + 30, (seed, chunked, target, size, cut)
                await asyncio.sleep(0.05)
            assert tree(home) == before, (seed, chunked, target, size, cut)
            assert not upload_open_in(home)
    async with aiohttp.ClientSession(gateway.url, headers=user("alice")) as http:
        async with http.get(f"/api/sessions/{sid}/files/Uploads") as r:
            assert [e["name"] for e in (await r.json())["entries"]] == ["existing.png"]


async def test_only_the_owner_reaches_the_files(gateway: Gateway) -> None:
    sid = await gateway.session("alice")
    home = gateway.home_of("alice")
    (home / "private.xcf").write_bytes(b"alice's work")
    before = tree(home)
    async with aiohttp.ClientSession(gateway.url) as http:
        for who, status in ((user("bob"), 404), ({}, 401), ({"Authorization": "Bearer nope"}, 401)):
            for method, path, body in (("GET", "", None), ("GET", "private.xcf", None),
                                       ("PUT", "private.xcf", b"bob was here"), ("PUT", "new/", b""),
                                       ("DELETE", "private.xcf", None), ("HEAD", "private.xcf", None)):
                async with http.request(method, f"/api/sessions/{sid}/files/{path}", data=body,
                                        headers=who) as r:
                    assert r.status == status, (who, method, path)
                    if method != "HEAD":
                        assert "alice's work" not in await r.text()
                        assert (await r.json())["error"]
        # Bob's own session does not open Alice's home either.
        bob = await gateway.session("bob")
        async with http.get(f"/api/sessions/{bob}/files/private.xcf", headers=user("bob")) as r:
            assert r.status == 404
    assert tree(home) == before


async def test_the_spec_headers_pass_through(gateway: Gateway) -> None:
    sid = await gateway.session("alice")
    home = gateway.home_of("alice")
    data = os.urandom(100_000)
    base = f"/api/sessions/{sid}/files/"
    async with aiohttp.ClientSession(gateway.url, headers=user("alice")) as http:
        async with http.put(base + "Pictures/Café.png", data=data) as r:
            assert r.status == 201
            tag = r.headers["ETag"]
        async with http.put(base + "Pictures/Café.png", data=b"x", headers={"If-None-Match": "*"}) as r:
            assert r.status == 412 and (await r.json())["error"]
        async with http.put(base + "Pictures/Café.png", data=b"x", headers={"If-Match": '"stale"'}) as r:
            assert r.status == 412
        assert (home / "Pictures/Café.png").read_bytes() == data
        async with http.get(base + "Pictures/Caf%C3%A9.png?download=1") as r:
            assert r.status == 200 and await r.read() == data
            assert r.headers["ETag"] == tag and r.headers["Accept-Ranges"] == "bytes"
            assert r.headers["Content-Type"] == "image/png"
            assert r.headers["Last-Modified"].endswith("GMT")
            assert r.headers["Content-Disposition"].startswith("attachment; ")
            assert "UTF-8''Caf%C3%A9.png" in r.headers["Content-Disposition"]
            assert "Authorization" not in r.headers
        async with http.get(base + "Pictures/Café.png", headers={"Range": "bytes=1000-1999"}) as r:
            assert r.status == 206 and await r.read() == data[1000:2000]
            assert r.headers["Content-Range"] == "bytes 1000-1999/100000"
        async with http.get(base + "Pictures/Café.png", headers={"Range": "bytes=200000-"}) as r:
            assert r.status == 416 and r.headers["Content-Range"] == "bytes */100000"
        async with http.head(base + "Pictures/Café.png") as r:
            assert r.status == 200 and r.headers["Content-Length"] == "100000"
        async with http.get(base) as r:
            listing = await r.json()
            pictures = next(e for e in listing["entries"] if e["name"] == "Pictures")
            assert listing["path"] == "" and pictures["type"] == "dir" and pictures["size"] == 0
        async with http.get(base + "Pictures") as r:
            assert [e["name"] for e in (await r.json())["entries"]] == ["Café.png"]
        # Chunked, without a declared length.

        async def pieces():
            for _ in range(5):
                yield b"p" * 300_000
        async with http.put(base + "chunked.bin", data=pieces()) as r:
            assert r.status == 201
        assert (home / "chunked.bin").stat().st_size == 1_500_000
        async with http.put(base + "Empty/") as r:
            assert r.status == 201 and (home / "Empty").is_dir()
        async with http.delete(base + "Empty/") as r:
            assert r.status == 204 and not (home / "Empty").exists()
        async with http.delete(base + "Pictures") as r:
            assert r.status == 409
        # The agent's own refusals come through as they are.
        async with http.get(URL(gateway.url + base + "a%2Fb", encoded=True)) as r:
            assert r.status == 400 and "%2F" in (await r.json())["error"]


async def test_a_declared_size_over_the_limit_is_refused_before_the_body(gateway: Gateway) -> None:
    """The agent's 413 comes back through the gateway while the client has sent no body."""
    sid = await gateway.session("alice")
    reply = await raw_request(
        gateway.client.server.port,
        f"PUT /api/sessions/{sid}/files/huge.iso HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {make_jwt('alice')}\r\nContent-Length: {3 << 30}", timeout=60)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert not (gateway.home_of("alice") / "huge.iso").exists()


async def test_dot_segments_never_reach_another_agent_endpoint(gateway: Gateway) -> None:
    """An HTTP client would normalize `files/../metrics` to the agent's /metrics: refused first."""
    sid = await gateway.session("alice")
    token = make_jwt("alice")
    for path in ("../../metrics", "%2e%2e/%2e%2e/metrics", "..%2f..%2fmetrics", "./x", "a/../../health",
                 "../../../../../streaming", "%2E%2E/%2E%2E/notice"):
        for method in ("GET", "PUT", "DELETE"):
            reply = await raw_request(
                gateway.client.server.port,
                f"{method} /api/sessions/{sid}/files/{path} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close")
            status = int(reply.split(b" ", 2)[1])
            assert status == 400, (method, path, reply[:300])
            assert b"agent_" not in reply and b"# HELP" not in reply
            json.loads(reply.split(b"\r\n\r\n", 1)[1])
