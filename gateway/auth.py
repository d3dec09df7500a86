"""Who is calling: `token`, `jwt` or `header` authentication (SPEC "Gateway").

Credentials come from `Authorization: Bearer …` or from the HttpOnly cookie that a page URL's
`?token=…` sets once. The cookie never holds the credential itself: it holds a grant the
gateway signed (gateway/cookies.py) that expires with the credential (a JWT's `exp`), so a
copied cookie neither reveals the token nor outlives it. In header mode the authenticating
proxy's header is believed only from `--trusted-proxies` addresses, and nothing else is
looked at.
"""
from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from gateway.config import Config
from gateway.cookies import derive_key, seal, unseal
from gateway.proxies import networks, trusted_peer

COOKIE = "gateway_auth"
SHARE_COOKIE = "gateway_share"  # a share link's grant, scoped to one session's paths
COOKIE_MAX_AGE = 30 * 24 * 3600
LOCAL_USER = "local"
DEFAULT_TIER = "standard"
_TIER = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class User:
    id: str
    tier: str = DEFAULT_TIER


@dataclass(frozen=True)
class Guest:
    """Who came in with a share link: that session's viewer, nothing else (gateway/app.py)."""
    session: str
    share: str
    role: str  # "view" | "control"
    expires_at: int


def _valid_user_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()


def _tier(value: object) -> str:
    return value if isinstance(value, str) and _TIER.match(value) else DEFAULT_TIER


class Authenticator:
    def __init__(self, config: Config) -> None:
        self.mode = config.auth
        self._token = config.token
        self._jwt_secret = config.jwt_secret
        self._user_header = config.user_header
        self._proxies = networks(config.trusted_proxies)
        secret = config.token if self.mode == "token" else config.jwt_secret
        self._cookie_key = derive_key(secret) if secret else b""
        # Share grants need a key in every mode, the same on every replica: the gateway's
        # secret, else the agent token key (kubernetes), else one for this process (a local
        # gateway with --auth header is a single process).
        share_secret = secret or config.agent_token_key or secrets.token_urlsafe(32)
        self._share_key = derive_key(share_secret, "gateway-share-cookie")

    @property
    def uses_credentials(self) -> bool:
        """Whether a `?token=` / cookie credential means anything (not in header mode)."""
        return self.mode != "header"

    def _claims(self, credential: str) -> dict[str, Any] | None:
        """The verified claims of a credential: {"sub", "tier", "exp"?}, or None."""
        if not credential.isascii():
            # Tokens and JWTs are ASCII; header bytes that are not arrive as surrogates,
            # which cannot even be encoded for the comparison.
            return None
        if self.mode == "token":
            ok = bool(self._token) and hmac.compare_digest(credential.encode(), self._token.encode())
            return {"sub": LOCAL_USER, "tier": DEFAULT_TIER} if ok else None
        if self.mode == "jwt":
            try:
                # algorithms pins HS256: "none" and every other algorithm are rejected.
                claims = jwt.decode(credential, self._jwt_secret, algorithms=["HS256"],
                                    options={"require": ["exp", "sub"]})
            except jwt.PyJWTError:
                return None
            if not _valid_user_id(claims.get("sub")) or not isinstance(claims.get("exp"), int):
                return None
            return {"sub": claims["sub"], "tier": _tier(claims.get("tier")), "exp": claims["exp"]}
        return None

    def check(self, credential: str) -> User | None:
        """The user a token or JWT stands for, or None when it is not valid."""
        claims = self._claims(credential)
        return None if claims is None else User(claims["sub"], claims["tier"])

    def cookie_for(self, credential: str, now: float | None = None) -> tuple[str, int] | None:
        """(value, max-age) of the login cookie for a valid credential, else None. It expires
        with the credential: a JWT's `exp`, or COOKIE_MAX_AGE for the gateway token."""
        claims = self._claims(credential)
        if claims is None or not self._cookie_key:
            return None
        now = int(time.time() if now is None else now)
        exp = min(claims.get("exp", now + COOKIE_MAX_AGE), now + COOKIE_MAX_AGE)
        if exp <= now:
            return None
        value = seal(self._cookie_key, {"sub": claims["sub"], "tier": claims["tier"], "exp": exp,
                                        "mode": self.mode})
        return value, exp - now

    def from_cookie(self, value: str) -> User | None:
        claims = unseal(self._cookie_key, value) if self._cookie_key else None
        if claims is None or claims.get("mode") != self.mode or not _valid_user_id(claims.get("sub")):
            return None
        return User(claims["sub"], _tier(claims.get("tier")))

    def share_cookie(self, session_id: str, share_id: str, role: str, expires_at: int,
                     now: float | None = None) -> tuple[str, int] | None:
        """(value, max-age) of a share link's grant, which expires with the share."""
        now = int(time.time() if now is None else now)
        if expires_at <= now:
            return None
        value = seal(self._share_key, {"sid": session_id, "share": share_id, "role": role,
                                       "exp": expires_at})
        return value, expires_at - now

    def guest(self, request: web.Request, session_id: str) -> Guest | None:
        """The share grant this request carries for `session_id` (signed, unexpired, made for
        that very session), or None. Whether the share still exists is the caller's check."""
        claims = unseal(self._share_key, request.cookies.get(SHARE_COOKIE, ""))
        if (claims is None or claims.get("sid") != session_id or not isinstance(claims.get("share"), str)
                or claims.get("role") not in ("view", "control")):
            return None
        return Guest(session_id, claims["share"], claims["role"], claims["exp"])

    def identify(self, request: web.Request) -> User | None:
        if self.mode == "header":
            # Anyone can send the header: only the configured proxy's is believed.
            if not trusted_peer(request.remote, self._proxies):
                return None
            value = request.headers.get(self._user_header)
            return User(value) if value is not None and _valid_user_id(value) else None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                return None
            return self.check(credential.strip())
        cookie = request.cookies.get(COOKIE)
        return self.from_cookie(cookie) if cookie else None
