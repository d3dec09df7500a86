"""Signed cookie values: the browser holds a grant the gateway signed, never a credential.

A value is `base64url(JSON claims) "." base64url(HMAC-SHA256(key, that part))`. Claims carry
an `exp` (Unix seconds) that is checked on every request, so a cookie made from a JWT stops
working when the JWT would have, whatever the browser does with Max-Age. The key is derived
from the gateway's own secret (the token, or the JWT secret), so every replica accepts every
replica's cookies and changing the secret logs everybody out.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

MAX_VALUE = 4096  # browsers keep at most about this much per cookie


def derive_key(secret: str, purpose: str = "gateway-cookie") -> bytes:
    """A key for cookies only: knowing a cookie's signature says nothing about the secret."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: bytes, claims: dict[str, Any]) -> str:
    """The cookie value for `claims` (which must include an integer `exp`)."""
    if not isinstance(claims.get("exp"), int):
        raise ValueError("claims need an integer exp")
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


def unseal(key: bytes, value: str, now: float | None = None) -> dict[str, Any] | None:
    """The claims of a genuine, unexpired value; None for anything else (never raises)."""
    if not isinstance(value, str) or len(value) > MAX_VALUE or value.count(".") != 1:
        return None
    body, _, signature = value.partition(".")
    try:
        expected = hmac.new(key, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(_unb64(signature), expected):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
        return None
    if claims["exp"] <= (time.time() if now is None else now):
        return None
    return claims
