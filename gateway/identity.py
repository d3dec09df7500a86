"""Names derived from a user id. Every derived name carries a hash of the *exact* id (its
UTF-8 bytes, case and all), so no two distinct ids share a name whatever the readable part
looks like: "alice@x.org" and "alice-x-org-…" (a valid DNS label) or two spellings that differ
only in letter case get different names. 128 bits of SHA-256: a collision is as likely as
guessing a random 128-bit key."""
from __future__ import annotations

import hashlib
import re

HASH_HEX = 32  # 128 bits


def user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_HEX]


def slug(user_id: str, allowed: str, length: int, fill: str = "-") -> str:
    """A readable part for a derived name (lower case, runs of other characters as `fill`);
    decoration only: the hash beside it is what tells ids apart."""
    return re.sub(f"[^{allowed}]+", fill, user_id.lower())[:length].strip("-_.") or "u"


def turn_user(user_id: str) -> str:
    """The user part of a TURN REST username: coturn logs it, so not the raw id."""
    return user_hash(user_id)
