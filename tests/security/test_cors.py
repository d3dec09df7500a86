"""CORS: the gateway allows only configured origins; the agent's WHEP allows any origin because
it is guarded by a bearer token, not by cookies (SECURITY.md §2)."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from gateway.config import load_config
from tests.agent_process import start_agent
from tests.gateway.conftest import TOKEN, bearer
from tests.security.conftest import Gateway
from tests.xserver import Xvfb

ALLOWED = "https://app.example.com"
EVIL = "https://evil.example.net"


async def test_no_cors_headers_by_default(gateway: Gateway) -> None:
    client = await gateway()
    for origin in (ALLOWED, EVIL, "null"):
        r = await client.get("/api/sessions", headers={**bearer(), "Origin": origin})
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers
        pre = await client.options("/api/sessions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in pre.headers
        assert pre.status != 204


async def test_configured_origin_is_allowed(gateway: Gateway) -> None:
    client = await gateway(cors_origins=(ALLOWED,))
    pre = await client.options("/api/sessions", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in pre.headers

    r = await client.get("/api/sessions", headers={**bearer(), "Origin": ALLOWED})
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in r.headers.getall("Vary")
    # Errors too, or the page of that origin could not read why it was refused.
    r = await client.get("/api/sessions", headers={"Origin": ALLOWED})
    assert r.status == 401
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_other_origins_get_nothing(gateway: Gateway) -> None:
    client = await gateway(cors_origins=(ALLOWED,))
    for origin in (EVIL, ALLOWED + ".evil.net", "http://app.example.com", "null"):
        pre = await client.options("/api/sessions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        # Not answered as a preflight: it goes through authentication and is refused.
        assert pre.status == 401
        assert "Access-Control-Allow-Origin" not in pre.headers
        r = await client.get("/api/sessions", headers={**bearer(), "Origin": origin})
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers
        assert "Origin" in r.headers.getall("Vary")


async def test_preflight_is_not_a_way_around_authentication(gateway: Gateway) -> None:
    """An allowed origin's preflight is answered without credentials; the request itself is not."""
    client = await gateway(cors_origins=(ALLOWED,))
    r = await client.options("/api/sessions", headers={"Origin": ALLOWED})  # no request method
    assert r.status == 401
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers={"Origin": ALLOWED})
    assert r.status == 401


def test_cors_setting_from_flag_and_environment() -> None:
    env = {"GATEWAY_CORS_ORIGINS": f"{ALLOWED}/, http://localhost:3000", "GATEWAY_TOKEN": TOKEN}
    assert load_config([], env).cors_origins == (ALLOWED, "http://localhost:3000")
    assert load_config(["--cors-origins", EVIL], env).cors_origins == (EVIL,)
    assert load_config([], {}).cors_origins == ()


@pytest.mark.parametrize("bad", ["*", "https://*.example.com", "app.example.com",
                                 "https://app.example.com/path", "ftp://x"])
def test_wildcards_and_non_origins_are_refused(bad: str) -> None:
    with pytest.raises(SystemExit):
        load_config(["--cors-origins", bad], {})


def test_agent_whep_allows_any_origin_but_needs_its_token(xvfb: Xvfb) -> None:
    """WHEP players of other origins may call the agent (SPEC), which is safe because every
    request but the preflight needs the bearer token, which browsers never hold implicitly."""
    agent = start_agent(xvfb.display, token="agent-secret-cors")
    try:
        req = urllib.request.Request(agent.url + "/whep", method="OPTIONS", headers={"Origin": EVIL})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in r.headers
        req = urllib.request.Request(agent.url + "/whep", data=b"v=0\r\n", method="POST",
                                     headers={"Origin": EVIL, "Content-Type": "application/sdp"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 401
    finally:
        agent.stop()
