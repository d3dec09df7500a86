"""The auth cookie: HttpOnly, SameSite=Strict, Secure when the browser talks TLS (SECURITY.md §3)."""
from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from aiohttp.test_utils import TestClient

import asyncio
import base64
import json

from gateway.auth import COOKIE
from gateway.config import load_config
from tests.gateway.conftest import TOKEN, make_jwt
from tests.security.conftest import Gateway


async def login(client: TestClient, credential: str = TOKEN,
                headers: dict[str, str] | None = None) -> SimpleCookie:
    r = await client.get(f"/?token={credential}&x=1", headers=headers, allow_redirects=False)
    assert r.status == 303
    assert TOKEN not in r.headers["Location"] and r.headers["Location"] == "/?x=1"
    assert r.headers["Cache-Control"] == "no-store"
    cookie = SimpleCookie()
    cookie.load(r.headers["Set-Cookie"])
    # A signed grant, never the credential (a copied cookie must not reveal the token).
    assert cookie[COOKIE].value and credential not in cookie[COOKIE].value
    return cookie


def flags(cookie: SimpleCookie) -> tuple[bool, str, bool]:
    morsel = cookie[COOKIE]
    return bool(morsel["httponly"]), morsel["samesite"], bool(morsel["secure"])


async def test_plain_http_cookie_is_httponly_and_strict(gateway: Gateway) -> None:
    client = await gateway()
    assert flags(await login(client)) == (True, "Strict", False)


async def test_jwt_cookie_has_the_same_flags(gateway: Gateway) -> None:
    client = await gateway(auth="jwt")
    assert flags(await login(client, make_jwt("alice"))) == (True, "Strict", False)


async def test_forwarded_proto_from_untrusted_peer_is_ignored(gateway: Gateway) -> None:
    """Anyone can send X-Forwarded-Proto; only a configured proxy's is believed. (Ignoring it
    fails safe: at worst a cookie over TLS lacks Secure, which the settings below fix.)"""
    client = await gateway()
    assert flags(await login(client, headers={"X-Forwarded-Proto": "https"}))[2] is False
    client = await gateway(trusted_proxies=("10.0.0.0/8",))  # not the test's 127.0.0.1
    assert flags(await login(client, headers={"X-Forwarded-Proto": "https"}))[2] is False


async def test_forwarded_proto_from_trusted_proxy_makes_cookie_secure(gateway: Gateway) -> None:
    client = await gateway(trusted_proxies=("127.0.0.0/8",))
    assert flags(await login(client, headers={"X-Forwarded-Proto": "https"})) == (True, "Strict", True)
    assert flags(await login(client, headers={"X-Forwarded-Proto": "https, http"}))[2] is True
    assert flags(await login(client, headers={"X-Forwarded-Proto": "http"}))[2] is False
    assert flags(await login(client))[2] is False


async def test_secure_cookies_setting(gateway: Gateway) -> None:
    client = await gateway(secure_cookies=True)
    assert flags(await login(client)) == (True, "Strict", True)


async def test_bad_token_sets_no_cookie(gateway: Gateway) -> None:
    client = await gateway()
    r = await client.get("/?token=wrong", allow_redirects=False)
    assert r.status == 401
    assert "Set-Cookie" not in r.headers


def test_settings_from_environment() -> None:
    c = load_config([], {"GATEWAY_SECURE_COOKIES": "1", "GATEWAY_TRUSTED_PROXIES": "10.1.2.3, 192.168.0.0/16"})
    assert c.secure_cookies is True
    assert c.trusted_proxies == ("10.1.2.3/32", "192.168.0.0/16")
    assert load_config([], {}).trusted_proxies == ()
    with pytest.raises(SystemExit):
        load_config(["--trusted-proxies", "not-an-address"], {})


def _with_cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


async def test_the_cookie_works_and_a_forged_or_altered_one_does_not(gateway: Gateway) -> None:
    client = await gateway(auth="jwt")
    value = (await login(client, make_jwt("alice")))[COOKIE].value
    client.session.cookie_jar.clear()  # only the values below are sent
    mine = await client.get("/api/sessions", headers=_with_cookie(value))
    assert mine.status == 200
    body, _, signature = value.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims["sub"] == "alice"
    # Mallory rewrites the user in the claims and keeps the signature: refused.
    forged = dict(claims, sub="mallory")
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for bad in (f"{forged_body}.{signature}", value[:-2] + "AA", body, value + ".x", "", "x" * 5000):
        r = await client.get("/api/sessions", headers=_with_cookie(bad))
        assert r.status == 401, bad[:40]
    # A token-mode gateway's grant is not a jwt-mode grant (different key and mode).
    token_client = await gateway()
    token_value = (await login(token_client))[COOKIE].value
    client.session.cookie_jar.clear()
    assert (await client.get("/api/sessions", headers=_with_cookie(token_value))).status == 401


async def test_a_jwt_cookie_expires_with_the_jwt(gateway: Gateway) -> None:
    client = await gateway(auth="jwt")
    cookie = await login(client, make_jwt("alice", ttl=2))
    assert int(cookie[COOKIE]["max-age"]) <= 2
    value = cookie[COOKIE].value
    client.session.cookie_jar.clear()
    assert (await client.get("/api/sessions", headers=_with_cookie(value))).status == 200
    await asyncio.sleep(3)  # past the JWT's exp: the browser may still send it; it is refused
    assert (await client.get("/api/sessions", headers=_with_cookie(value))).status == 401


async def test_logout_clears_the_cookie(gateway: Gateway) -> None:
    client = await gateway()
    await login(client)
    assert (await client.get("/api/sessions")).status == 200  # the jar holds the cookie
    r = await client.post("/api/logout")
    assert r.status == 200 and (await r.json()) == {"status": "logged out"}
    cleared = SimpleCookie()
    cleared.load(r.headers["Set-Cookie"])
    assert cleared[COOKIE].value == "" and cleared[COOKIE]["max-age"] in ("0", 0)
    assert (await client.get("/api/sessions")).status == 401
    await login(client)
    page = await client.get("/logout", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/"
    assert (await client.get("/api/sessions")).status == 401
