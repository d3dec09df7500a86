"""Authentication: token, jwt and header modes, and every way a credential can be wrong."""
from __future__ import annotations

import time

import jwt
import pytest

from gateway.config import load_config
from tests.gateway.conftest import JWT_SECRET, TOKEN, bearer, make_jwt, user


async def test_token_mode_accepts_the_token_and_nothing_else(gateway):
    client = await gateway()
    ok = await client.get("/api/sessions", headers=bearer())
    assert ok.status == 200
    assert await ok.json() == {"sessions": []}
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}, {"Authorization": TOKEN}):
        r = await client.get("/api/sessions", headers=headers)
        assert r.status == 401, headers
        assert "error" in await r.json()
        assert r.headers["WWW-Authenticate"] == "Bearer"


async def test_a_page_token_becomes_an_httponly_strict_cookie_and_leaves_the_url(gateway):
    client = await gateway()
    r = await client.get(f"/?token={TOKEN}&lang=en", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/?lang=en"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # The cookie alone now authenticates the API and the pages.
    assert (await client.get("/api/sessions")).status == 200
    page = await client.get("/")
    assert page.status == 200 and "<title>Applications</title>" in await page.text()


async def test_a_wrong_page_token_sets_no_cookie(gateway):
    client = await gateway()
    r = await client.get("/?token=wrong", allow_redirects=False)
    assert r.status == 401
    assert "Set-Cookie" not in r.headers
    assert (await client.get("/api/sessions")).status == 401


async def test_the_query_token_is_for_pages_only(gateway):
    client = await gateway()
    r = await client.get(f"/api/sessions?token={TOKEN}")
    assert r.status == 401
    assert "Set-Cookie" not in r.headers


async def test_pages_without_credentials_explain_how_to_sign_in(gateway):
    client = await gateway()
    r = await client.get("/")
    assert r.status == 401
    assert "?token=" in await r.text()


async def test_public_endpoints_need_no_credentials(gateway):
    client = await gateway()
    assert (await client.get("/health")).status == 200
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/static/viewer.js")).status == 200


async def test_jwt_mode_identifies_the_subject(gateway):
    client = await gateway(auth="jwt")
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=user("alice"))
    assert r.status == 201
    assert (await r.json())["user"] == "alice"


def _token(claims: dict[str, object], algorithm: str = "HS256") -> str:
    return jwt.encode(claims, JWT_SECRET, algorithm=algorithm)


BAD_JWTS = {
    "alg none": jwt.encode({"sub": "eve", "exp": int(time.time()) + 600}, None, algorithm="none"),
    "wrong signature": make_jwt("eve", secret="another-secret-long-enough-for-hs512-too-0123456789abcdef01234567"),
    "expired": make_jwt("eve", ttl=-60),
    "no exp": _token({"sub": "eve"}),
    "no sub": _token({"exp": int(time.time()) + 600}),
    "empty sub": _token({"sub": "", "exp": int(time.time()) + 600}),
    "sub not a string": _token({"sub": 42, "exp": int(time.time()) + 600}),
    "HS512": _token({"sub": "eve", "exp": int(time.time()) + 600}, algorithm="HS512"),
    "malformed": "not.a.jwt",
    "garbage": "%%%",
}


@pytest.mark.parametrize("name", sorted(BAD_JWTS))
async def test_jwt_mode_rejects(gateway, name):
    client = await gateway(auth="jwt")
    r = await client.get("/api/sessions", headers=bearer(BAD_JWTS[name]))
    assert r.status == 401, name
    assert "error" in await r.json()
    page = await client.get(f"/?token={BAD_JWTS[name]}", allow_redirects=False)
    assert page.status == 401 and "Set-Cookie" not in page.headers


async def test_jwt_page_token_sets_the_cookie(gateway):
    client = await gateway(auth="jwt")
    r = await client.get(f"/?token={make_jwt('alice')}", allow_redirects=False)
    assert r.status == 303
    listing = await client.get("/api/sessions")
    assert listing.status == 200


async def test_header_mode_trusts_only_the_configured_header(gateway):
    client = await gateway(auth="header", trusted_proxies=("127.0.0.0/8",))
    r = await client.post("/api/sessions", json={"application": "gimp"},
                          headers={"X-Forwarded-User": "carol"})
    assert r.status == 201 and (await r.json())["user"] == "carol"
    assert (await client.get("/api/sessions")).status == 401
    assert (await client.get("/api/sessions", headers=bearer())).status == 401
    # ?token= means nothing here: no cookie is set.
    page = await client.get(f"/?token={TOKEN}", allow_redirects=False)
    assert page.status == 401 and "Set-Cookie" not in page.headers


async def test_header_mode_ignores_the_user_header_from_anyone_but_the_proxies(gateway):
    """The attacker talks to the gateway directly (it binds 0.0.0.0) and names a victim."""
    client = await gateway(auth="header", trusted_proxies=("10.0.0.0/8",))  # not 127.0.0.1
    for method, path in (("GET", "/api/sessions"), ("POST", "/api/sessions"), ("GET", "/")):
        r = await client.request(method, path, json={"application": "gimp"} if method == "POST" else None,
                                 headers={"X-Forwarded-User": "carol"})
        assert r.status == 401, (method, path)
    # Nothing was created for carol.
    trusted = await gateway(auth="header", trusted_proxies=("127.0.0.0/8",))
    r = await trusted.get("/api/sessions", headers={"X-Forwarded-User": "carol"})
    assert (await r.json()) == {"sessions": []}


def test_header_mode_without_trusted_proxies_does_not_start():
    with pytest.raises(SystemExit):
        load_config(["--auth", "header"], {})
    config = load_config(["--auth", "header", "--trusted-proxies", "10.1.0.0/16"], {})
    assert config.trusted_proxies == ("10.1.0.0/16",)


async def test_users_see_and_reach_only_their_own_sessions(gateway):
    client = await gateway(auth="jwt")
    created = await client.post("/api/sessions", json={"application": "gimp"}, headers=user("alice"))
    sid = (await created.json())["id"]
    bob = user("bob")
    assert (await (await client.get("/api/sessions", headers=bob)).json()) == {"sessions": []}
    for method, path in (("GET", f"/api/sessions/{sid}"), ("DELETE", f"/api/sessions/{sid}"),
                         ("GET", f"/api/sessions/{sid}/events"), ("GET", f"/streaming/{sid}/"),
                         ("POST", f"/streaming/{sid}/whep"), ("OPTIONS", f"/streaming/{sid}/whep"),
                         ("DELETE", f"/streaming/{sid}/whep/peer1")):
        r = await client.request(method, path, headers=bob, data=b"v=0\r\n" if method == "POST" else None)
        assert r.status == 404, (method, path)
    # Bob's attempts changed nothing: Alice's session is still there, still hers.
    mine = await client.get(f"/api/sessions/{sid}", headers=user("alice"))
    assert mine.status == 200 and (await mine.json())["phase"] == "pending"
