"""The OpenAPI description is true: it names exactly the routes the app registers, it is served
publicly at /api/openapi.json, and real responses of every operation validate against it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.openapi import spec
from tests.fuzz.conftest import LiveGateway
from tests.fuzz.openapi_check import Spec
from tests.gateway.conftest import TOKEN, bearer, eventually, make_config, sdp_offer

METHODS = {"get", "post", "put", "patch", "delete", "options", "head"}


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def test_the_description_names_exactly_the_registered_routes(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    registered = set()
    for route in create_app(config).router.routes():
        if route.method == "HEAD":  # aiohttp adds one to every GET
            continue
        resource = route.resource
        assert resource is not None
        path = (f"{resource.canonical}/{{filename}}" if isinstance(resource, web.StaticResource)
                else resource.canonical)
        registered.add((route.method, path))
    described = {(method.upper(), path) for path, item in spec(config)["paths"].items()
                 for method in item if method in METHODS}
    assert registered == described


@pytest.mark.parametrize("auth", ["token", "jwt", "header"])
def test_the_description_is_valid_openapi(tmp_path: Path, auth: str) -> None:
    validate(spec(make_config(tmp_path, auth=auth)))


def test_the_description_follows_the_configuration(tmp_path: Path) -> None:
    assert spec(make_config(tmp_path, auth="jwt"))["security"] == [{"jwt": []}, {"cookie": []}]
    header = spec(make_config(tmp_path, auth="header", user_header="X-User"))
    assert header["security"] == [{"forwardedUser": []}]
    assert header["components"]["securitySchemes"]["forwardedUser"]["name"] == "X-User"
    limited = spec(make_config(tmp_path, max_timeout=600))
    assert limited["components"]["schemas"]["CreateSession"]["properties"]["timeout"][
        "maximum"] == 600


async def test_real_responses_of_every_operation_match_it(live_gateway: LiveGateway) -> None:
    async with aiohttp.ClientSession(live_gateway.url) as http:
        async with http.get("/api/openapi.json") as r:  # no credentials: it is public
            assert r.status == 200
            document = await r.json()
        described = Spec(document)
        covered: set[tuple[str, str, int]] = set()

        async def call(method: str, path: str, *, auth: bool = True,
                       headers: dict[str, str] | None = None, **kwargs: Any) -> Reply:
            sent = {**(bearer() if auth else {}), **(headers or {})}
            async with http.request(method, path, headers=sent, allow_redirects=False,
                                    **kwargs) as r:
                body = await r.read()
                described.check(method, path, r.status, dict(r.headers), body)
                covered.add((method, described.operation(method, path)[0], r.status))
                return Reply(r.status, dict(r.headers), body)

        await call("GET", "/api/openapi.json", auth=False)
        await call("GET", "/health", auth=False)
        await call("GET", "/metrics", auth=False)
        await call("GET", "/static/style.css", auth=False)
        await call("GET", "/static/no-such-file.js", auth=False)
        await call("GET", "/")
        await call("GET", "/", auth=False)
        await call("GET", f"/?token={TOKEN}", auth=False)
        await call("GET", "/?token=wrong", auth=False)
        await call("GET", "/api/applications")
        await call("GET", "/api/applications", auth=False)
        await call("POST", "/api/sessions", data=b"{not json")
        await call("POST", "/api/sessions", json={"application": "gimp", "timeout": 0})
        created = await call("POST", "/api/sessions", json={"application": "gimp",
                                                            "resources": {"cpu": "500m"}})
        sid = json.loads(created.body)["id"]
        await call("GET", "/api/sessions")
        await call("GET", f"/api/sessions/{sid}")
        await call("GET", "/api/sessions/s0000000000000000")
        await call("GET", f"/api/sessions/{sid}/events")  # ends once the session runs
        await call("GET", f"/streaming/{sid}")
        await call("GET", f"/streaming/{sid}/")
        await call("GET", "/streaming/s0000000000000000/")
        await call("OPTIONS", f"/streaming/{sid}/whep")
        await call("GET", f"/streaming/{sid}/ws")  # no upgrade: 426 (tests/gateway/test_ws_relay.py upgrades)
        await call("GET", "/streaming/s0000000000000000/ws")
        pc, offer = await sdp_offer()
        try:
            answer = {"Content-Type": "application/sdp"}
            accepted = await call("POST", f"/streaming/{sid}/whep", data=offer, headers=answer)
            assert accepted.status == 201, accepted.body
            peer = accepted.headers["Location"]
            await call("POST", f"/streaming/{sid}/whep", data=b"v=0\r\n", headers=answer)
            await call("POST", f"/streaming/{sid}/whep", data=offer,
                       headers={"Content-Type": "text/plain"})
            await call("POST", "/streaming/s0000000000000000/whep", data=offer, headers=answer)
            await call("PATCH", peer, data=b"a=end-of-candidates",
                       headers={"Content-Type": "application/trickle-ice-sdpfrag"})
            await call("DELETE", peer)
            await call("DELETE", peer)
        finally:
            await pc.close()
        clipboard = f"/streaming/{sid}/clipboard"  # the session's X clipboard, on its agent
        await call("GET", clipboard)
        await call("PUT", clipboard, data="copied ✓".encode(), headers={"Content-Type": "text/plain"})
        await call("GET", clipboard)
        await call("PUT", clipboard, data=b"\x89PNG\r\n\x1a\n", headers={"Content-Type": "image/png"})
        await call("PUT", clipboard, data=b"GIF89a", headers={"Content-Type": "image/png"})
        await call("PUT", clipboard, data=b"x", headers={"Content-Type": "application/zip"})
        await call("GET", "/streaming/s0000000000000000/clipboard")
        await call("GET", f"/streaming/{sid}/refine/1")  # nobody watches: none kept, 404
        await call("GET", f"/streaming/{sid}/refine/x")
        files = f"/api/sessions/{sid}/files/"  # the session's home, on its agent
        await call("PUT", files + "Uploads/a.txt", data=b"hello")
        await call("PUT", files + "Uploads/a.txt", data=b"hello again")
        await call("PUT", files + "Uploads/a.txt", data=b"x", headers={"If-None-Match": "*"})
        await call("PUT", files + "Folder/")
        await call("PUT", files)
        await call("GET", files)
        await call("GET", files + "Uploads")
        await call("GET", files + "Uploads/a.txt?download=1")
        await call("GET", files + "Uploads/a.txt", headers={"Range": "bytes=1-2"})
        await call("GET", files + "Uploads/a.txt", headers={"Range": "bytes=99-"})
        await call("GET", files + "a%2Fb")
        await call("GET", files + "nothing-here")
        await call("GET", "/api/sessions/s0000000000000000/files/")
        await call("DELETE", files + "Uploads")
        await call("DELETE", files + "Uploads/a.txt")
        await call("DELETE", files)
        shares = f"/api/sessions/{sid}/shares"  # share links, and a guest's view of them
        made = await call("POST", shares, json={"role": "view", "expires_in": 60})
        link = json.loads(made.body)
        await call("POST", shares, json={"role": "admin"})
        await call("GET", shares)
        await call("GET", f"/api/sessions/{sid}/viewers")
        opened = await call("GET", link["url"], auth=False)
        grant = {"Cookie": opened.headers["Set-Cookie"].split(";")[0]}
        await call("GET", f"/streaming/{sid}/", auth=False, headers=grant)
        await call("GET", f"/api/sessions/{sid}", auth=False, headers=grant)
        await call("GET", shares, auth=False, headers=grant)
        await call("DELETE", f"{shares}/{link['id']}")
        await call("DELETE", f"{shares}/{link['id']}")
        await call("GET", link["url"], auth=False)
        await call("DELETE", f"/api/sessions/{sid}")
        await call("DELETE", "/api/sessions/s0000000000000000")
        await call("POST", "/api/logout", auth=False)
        await call("GET", "/logout", auth=False)

        async def gone() -> bool:  # leave no session terminating behind for the next tests
            async with http.get(f"/api/sessions/{sid}", headers=bearer()) as r:
                return r.status == 404
        await eventually(gone)
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item
                  if m in METHODS}
    assert operations == {(m, p) for m, p, _ in covered}  # every operation answered for real
