"""The auth cookie: HttpOnly, SameSite=Strict, Secure when the browser talks TLS (SECURITY.md §3)."""
from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from aiohttp.test_utils import TestClient

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
    assert cookie[COOKIE].value == credential
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
