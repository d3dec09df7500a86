"""Requests no HTTP client library would send, written byte for byte on a socket: every one is
a 4xx with a JSON reason (never a 500, never aiohttp's plain-text page), and the gateway keeps
serving. The same for the agent's bearer check."""
from __future__ import annotations

import json
import socket

import pytest

from tests.fuzz.conftest import LiveGateway
from tests.gateway.conftest import TOKEN

AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


def raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def request(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    return line + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(headers) + b"Connection: close\r\n\r\n" + body


def create(content_type: bytes, body: bytes) -> bytes:
    return request(b"POST /api/sessions", AUTH, b"Content-Type: " + content_type + b"\r\n",
                   b"Content-Length: %d\r\n" % len(body), body=body)


CASES = {
    "unknown charset": create(b"application/json; charset=bogus", b'{"application":"gimp"}'),
    "utf-16 declared": create(b"application/json; charset=utf-16", b"{}"),
    "header over 8 KiB": request(b"GET /api/sessions", AUTH, b"X-Big: " + b"a" * 20000 + b"\r\n"),
    "too many headers": request(b"GET /api/sessions", AUTH, *(b"X-%d: a\r\n" % i for i in range(200))),
    "path over 8 KiB": request(b"GET /api/sessions/" + b"a" * 20000, AUTH),
    "raw UTF-8 in the path": request("GET /api/sessions/ü😀".encode(), AUTH),
    "encoded UTF-8 in the path": request(b"GET /api/sessions/%C3%BC%F0%9F%98%80", AUTH),
    "broken percent-encoding": request(b"GET /api/sessions/%ZZ%C3", AUTH),
    "NUL in an id": request(b"GET /api/sessions/%00/events", AUTH),
    "Latin-1 bytes in the bearer token": request(b"GET /api/sessions", b"Authorization: Bearer \xff\xfe\r\n"),
    "control bytes in a cookie": request(b"GET /api/sessions", b"Cookie: gateway_auth=\xff\"\x01;;==\r\n"),
    "unknown method": request(b"FOO /api/sessions", AUTH),
    "broken chunk size": request(b"POST /api/sessions", AUTH, b"Transfer-Encoding: chunked\r\n", body=b"zz\r\n"),
    "Content-Length not a number": request(b"POST /api/sessions", AUTH, b"Content-Length: abc\r\n"),
    "JSON nested 100,000 deep": create(b"application/json", b"[" * 100000 + b"]" * 100000),
    "body over the limit": create(b"application/json", b" " * 3_000_000),
}


@pytest.mark.parametrize("name", CASES)
def test_raw_bad_requests_get_a_json_4xx(live_gateway: LiveGateway, name: str) -> None:
    before = sessions(live_gateway)
    status, headers, body = raw(live_gateway.url, CASES[name])
    assert 400 <= status < 500, (name, status, body[:200])
    assert headers.get("content-type", "").startswith("application/json"), (name, headers, body[:200])
    assert json.loads(body)["error"], name
    # ... and nothing changed: the gateway still answers, no session was created and none that
    # was up went away (one an earlier test deleted may finish terminating meanwhile).
    after = sessions(live_gateway)
    assert set(after) <= set(before), (name, before, after)
    assert {s for s, phase in before.items() if phase != "terminating"} <= set(after), (
        name, before, after)


def sessions(gateway: LiveGateway) -> dict[str, str]:
    return {s["id"]: s["phase"] for s in gateway.request("GET", "/api/sessions")[1]["sessions"]}
