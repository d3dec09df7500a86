"""Safe readers of objects as the API holds them (pure).

A real API server validates Sessions against the CRD, but the controller and the gateway must
not depend on it: an object written under an older or looser schema, or by hand, can have any
shape. Every reader here returns a usable value (or None) for any JSON input and never raises,
so one odd Session cannot stop the loops that serve every other one."""
from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from typing import Any

PHASES = ("pending", "running", "terminating", "failed")
MAX_TIMEOUT_S = 10 * 365 * 24 * 3600  # far beyond any real idle timeout; keeps dates in range


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def meta(obj: Any) -> dict[str, Any]:
    return mapping(mapping(obj).get("metadata"))


def spec(obj: Any) -> dict[str, Any]:
    return mapping(mapping(obj).get("spec"))


def status(obj: Any) -> dict[str, Any]:
    return mapping(mapping(obj).get("status"))


def deleting(obj: Any) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def phase(obj: Any) -> str:
    """The Session's phase: terminating once deletion began, else status.phase (pending when
    missing or not one of the four)."""
    if deleting(obj):
        return "terminating"
    value = status(obj).get("phase")
    return value if value in PHASES else "pending"


def active(obj: Any) -> bool:
    """Counts against limits and answers a second create: pending or running, not going."""
    return phase(obj) in ("pending", "running")


def timeout(obj: Any) -> int | None:
    """spec.timeout as whole positive seconds, or None (no idle timeout, or not a number)."""
    value = spec(obj).get("timeout")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return min(value, MAX_TIMEOUT_S)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time, always timezone-aware (UTC when it names none); None when unusable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def endpoint(obj: Any) -> str | None:
    """status.endpoint if it is what the controller writes, `http://<IP>:<port>`; else None,
    so nothing else in the cluster (or beyond) is ever called on a Session's say-so."""
    value = text(status(obj).get("endpoint"))
    if value is None or not value.startswith("http://"):
        return None
    host, sep, port = value.removeprefix("http://").rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return value


def conditions(obj: Any) -> list[dict[str, Any]]:
    value = status(obj).get("conditions")
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def ready_condition(obj: Any) -> dict[str, Any]:
    return next((c for c in conditions(obj) if c.get("type") == "Ready"), {})
