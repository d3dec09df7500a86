"""Share links of a session (SPEC "Sharing a session"), as pure logic: no I/O, no clock of its own.

A share is a role (`view` or `control`) and an expiry, kept on the session record (the local
session table, the Session resource in Kubernetes mode), so every gateway replica knows every
share. The link carries a token of 32 random bytes; only its SHA-256 is stored, so the session
record (etcd, a backup, `kubectl get -o yaml`) never holds a working link. Tokens are found by
comparing digests in constant time.

The browser that opens a link keeps a signed grant for it (gateway/cookies.py), never the token,
and every request with that grant is checked against the session's current shares: a revoked or
expired share stops working at once, on every replica.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

ROLES = ("view", "control")
DEFAULT_EXPIRES_IN = 86400
MAX_EXPIRES_IN = 604800
MAX_SHARES = 32  # live shares per session: a link is for people, not for a script's churn
TOKEN_BYTES = 32
_HEX = frozenset("0123456789abcdef")


class ShareError(ValueError):
    """A request that cannot become a share (the API answers 400 with the message)."""


@dataclass(frozen=True)
class Share:
    id: str
    role: str  # "view" | "control"
    token_hash: str  # hex SHA-256 of the link's token
    expires_at: int  # Unix seconds
    created: int  # Unix seconds

    def live(self, now: float) -> bool:
        return now < self.expires_at

    def public(self, session_id: str | None = None) -> dict[str, Any]:
        """What the owner sees in the list: never the token (it is not kept)."""
        return {"id": self.id, "role": self.role, "expires_at": self.expires_at,
                "created": self.created}

    def record(self) -> dict[str, Any]:
        """The stored form (the Session resource's `spec.shares` items)."""
        return {"id": self.id, "role": self.role, "tokenHash": self.token_hash,
                "expiresAt": self.expires_at, "created": self.created}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_create(body: Any) -> tuple[str, int]:
    """(role, expires_in) from a POST body, or ShareError saying what is wrong."""
    if not isinstance(body, dict):
        raise ShareError("body must be a JSON object")
    unknown = set(body) - {"role", "expires_in"}
    if unknown:
        raise ShareError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    role = body.get("role")
    if role not in ROLES:
        raise ShareError(f"role must be one of: {', '.join(ROLES)}")
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
    if (not isinstance(expires_in, int) or isinstance(expires_in, bool)
            or not 1 <= expires_in <= MAX_EXPIRES_IN):
        raise ShareError(f"expires_in must be a whole number of seconds from 1 to {MAX_EXPIRES_IN}")
    return role, expires_in


def new_share(role: str, expires_in: int, now: float) -> tuple[Share, str]:
    """A fresh share and its token (shown once, in the link)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    share = Share(id="sh" + secrets.token_hex(6), role=role, token_hash=digest(token),
                  expires_at=int(now) + expires_in, created=int(now))
    return share, token


def link(session_id: str, token: str) -> str:
    return f"/streaming/{session_id}/?share={token}"


def find(shares: tuple[Share, ...], token: str, now: float) -> Share | None:
    """The live share a token opens, or None. Every share's digest is compared, in constant
    time, so how long this takes says nothing about which digest nearly matched."""
    if not isinstance(token, str) or not token.isascii() or not 0 < len(token) <= 128:
        return None
    wanted = digest(token).encode()
    found = None
    for share in shares:
        if hmac.compare_digest(wanted, share.token_hash.encode()) and share.live(now):
            found = share
    return found


def by_id(shares: tuple[Share, ...], share_id: object, now: float) -> Share | None:
    """The live share with this id (a grant's check on every request), or None."""
    for share in shares:
        if share.id == share_id and share.live(now):
            return share
    return None


def pruned(shares: tuple[Share, ...], now: float) -> tuple[Share, ...]:
    """The shares still live: expired ones are dropped whenever the list is written."""
    return tuple(s for s in shares if s.live(now))


def label(share: Share) -> str:
    """How the others see this link's viewers (on pointers and in the owner's list)."""
    return f"guest {share.id[2:6]} ({share.role})"


def from_records(value: Any) -> tuple[Share, ...]:
    """Shares from their stored form; items of any other shape are skipped, never trusted."""
    if not isinstance(value, list):
        return ()
    shares = []
    for item in value:
        if not isinstance(item, dict):
            continue
        sid, role, token_hash = item.get("id"), item.get("role"), item.get("tokenHash")
        expires_at, created = item.get("expiresAt"), item.get("created", 0)
        if (isinstance(sid, str) and 0 < len(sid) <= 64 and role in ROLES
                and isinstance(token_hash, str) and len(token_hash) == 64 and set(token_hash) <= _HEX
                and isinstance(expires_at, int) and not isinstance(expires_at, bool)
                and isinstance(created, int) and not isinstance(created, bool)):
            shares.append(Share(sid, role, token_hash, expires_at, created))
    return tuple(shares)
