"""Who is calling: `token`, `jwt` or `header` authentication (SPEC "Gateway").

Credentials come from `Authorization: Bearer …` or from the HttpOnly cookie that a page URL's
`?token=…` sets once. In header mode the authenticating proxy's header is trusted, and nothing
else is looked at.
"""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

import jwt
from aiohttp import web

from gateway.config import Config

COOKIE = "gateway_auth"
LOCAL_USER = "local"
DEFAULT_TIER = "standard"
_TIER = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class User:
    id: str
    tier: str = DEFAULT_TIER


def _valid_user_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()


class Authenticator:
    def __init__(self, config: Config) -> None:
        self.mode = config.auth
        self._token = config.token
        self._jwt_secret = config.jwt_secret
        self._user_header = config.user_header

    @property
    def uses_credentials(self) -> bool:
        """Whether a `?token=` / cookie credential means anything (not in header mode)."""
        return self.mode != "header"

    def check(self, credential: str) -> User | None:
        """The user a token or JWT stands for, or None when it is not valid."""
        if self.mode == "token":
            ok = bool(self._token) and hmac.compare_digest(credential.encode(), self._token.encode())
            return User(LOCAL_USER) if ok else None
        if self.mode == "jwt":
            try:
                # algorithms pins HS256: "none" and every other algorithm are rejected.
                claims = jwt.decode(credential, self._jwt_secret, algorithms=["HS256"],
                                    options={"require": ["exp", "sub"]})
            except jwt.PyJWTError:
                return None
            if not _valid_user_id(claims.get("sub")):
                return None
            tier = claims.get("tier")
            return User(claims["sub"], tier if isinstance(tier, str) and _TIER.match(tier) else DEFAULT_TIER)
        return None

    def identify(self, request: web.Request) -> User | None:
        if self.mode == "header":
            value = request.headers.get(self._user_header)
            return User(value) if value is not None and _valid_user_id(value) else None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                return None
            return self.check(credential.strip())
        cookie = request.cookies.get(COOKIE)
        return self.check(cookie) if cookie else None
