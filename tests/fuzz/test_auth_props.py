"""JWTs, bearer headers and cookies, random and mangled: a credential is accepted only when it
is an HS256 JWT signed with the gateway's secret, unexpired, with a usable `sub` (or, in token
mode, the token itself), and anything else is a 401 JSON error, never a 5xx."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth import COOKIE, Authenticator
from tests.fuzz.conftest import LiveGateway, serve
from tests.fuzz.strategies import cookie_values, header_safe, tokens
from tests.gateway.conftest import JWT_SECRET, TOKEN, make_config

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def genuine_sub(token: str) -> str | None:
    """The `sub` of a token that PyJWT verifies as HS256 with the secret, exp and sub present."""
    try:
        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"],
                            options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    return claims["sub"]


def test_only_genuine_tokens_name_a_user(tmp_path: Path) -> None:
    auth = Authenticator(make_config(tmp_path, auth="jwt"))

    @FUZZ
    @given(token=tokens())
    def run(token: str) -> None:
        user = auth.check(token)
        if user is not None:
            assert user.id == genuine_sub(token)
            assert user.id.isprintable() and 0 < len(user.id) <= 256

    run()


@pytest.fixture(scope="module")
def jwt_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    yield from serve(make_config(tmp_path_factory.mktemp("jwt"), auth="jwt"))


def test_bearer_headers_and_cookies_over_http(jwt_gateway: LiveGateway, tmp_path: Path) -> None:
    auth = Authenticator(make_config(tmp_path, auth="jwt"))
    http = requests.Session()

    @FUZZ
    @given(token=tokens(), scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
           as_cookie=st.booleans())
    def run(token: str, scheme: str, as_cookie: bool) -> None:
        value = token if as_cookie else scheme + token
        if not header_safe(value):
            return  # no HTTP client can send it
        header = {"Cookie": f"{COOKIE}={token}"} if as_cookie else {"Authorization": value}
        r = http.get(jwt_gateway.url + "/api/sessions", headers=header, timeout=30)
        # A cookie opens only a grant the gateway signed; a raw JWT in it is nothing.
        expected = (auth.from_cookie(token) if as_cookie else
                    auth.check(token.strip()) if scheme.lower().startswith("bearer") else None)
        if expected is None:
            assert r.status_code == 401, r.text
            assert r.json()["error"] and "Bearer" in r.headers["WWW-Authenticate"]
        else:
            assert r.status_code == 200, r.text
            assert all(s["user"] == expected.id for s in r.json()["sessions"])

    run()


def test_cookie_headers_in_token_mode(live_gateway: LiveGateway) -> None:
    http = requests.Session()

    @FUZZ
    @given(value=cookie_values, before=st.text(max_size=20), name=st.sampled_from(
        [COOKIE, COOKIE.upper(), "other", COOKIE + "x"]))
    def run(value: str, before: str, name: str) -> None:
        cookie = f"{before}; {name}={value}" if before else f"{name}={value}"
        if not header_safe(cookie):
            return
        r = http.get(live_gateway.url + "/api/applications", headers={"Cookie": cookie},
                     timeout=30)
        assert r.status_code in (200, 401), r.text
        if r.status_code == 200:  # only a grant this gateway signed opens it
            assert name == COOKIE and Authenticator(make_config(Path("."))).from_cookie(value.strip('"'))
        else:
            assert r.json()["error"]

    run()
