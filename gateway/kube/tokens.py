"""Agent tokens, derived rather than read back: token = HMAC-SHA256(key, uid), url-safe base64.

The key is one Secret that only the gateway and the controller mount (a pod mount, not an API
read). The controller writes the token into the per-session Secret the session pod mounts; the
gateway computes the same token from the Session it watches, so it needs no access to Secrets
at all (where users' cloud credentials also live). `uid` is the Session's own uid, or, for a
session served by a warm pod (made before any Session existed), that pod's uid; the controller
records which in `status.tokenUID`."""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

MIN_KEY_BYTES = 16


class TokenKeyError(ValueError):
    """An unusable key: the message says why (for a one-line configuration error)."""


def check_key(key: str) -> bytes:
    data = key.encode()
    if len(data) < MIN_KEY_BYTES:
        raise TokenKeyError(f"the agent token key must be at least {MIN_KEY_BYTES} bytes "
                        f"(got {len(data)}); use a long random string")
    return data


def agent_token(key: bytes, uid: str) -> str:
    digest = hmac.new(key, uid.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_uid(session: dict[str, Any]) -> str:
    """The uid a Session's agent token is derived from ("" when it has none yet)."""
    status = session.get("status")
    recorded = status.get("tokenUID") if isinstance(status, dict) else None
    if isinstance(recorded, str) and recorded:
        return recorded
    uid = (session.get("metadata") or {}).get("uid")
    return uid if isinstance(uid, str) else ""


def pod_token_uid(session: dict[str, Any], pod: dict[str, Any]) -> str:
    """What `status.tokenUID` is for `session` served by `pod`: the Session's uid when the pod
    was made for it (named after it), else (a claimed warm pod) the pod's own."""
    if pod["metadata"]["name"] == session["metadata"]["name"]:
        return str(session["metadata"].get("uid") or "")
    return str(pod["metadata"].get("uid") or "")
