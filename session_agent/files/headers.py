"""HTTP semantics of the files endpoints: validators, conditions, ranges, names (pure)."""
from __future__ import annotations

import mimetypes
import os
import re
from datetime import datetime, timezone
from email.utils import formatdate
from urllib.parse import quote

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_UNSAFE_ASCII = re.compile(r'[^\x20-\x7e]|["\\%]')


class RangeNotSatisfiable(ValueError):
    pass


def etag(st: os.stat_result) -> str:
    """A strong validator: the inode, size and modification time (a replaced file is a new inode)."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def precondition_failed(if_match: str | None, if_none_match: str | None, current: str | None) -> bool:
    """RFC 9110 §13.1.1/13.1.2 for a write: `current` is the target's ETag, None when it does not
    exist. If-Match compares strongly (a weak tag never matches), If-None-Match weakly."""
    if if_match is not None:
        tags = _tags(if_match)
        if current is None or ("*" not in tags and current not in tags):
            return True
    if if_none_match is not None:
        tags = _tags(if_none_match)
        if current is not None and ("*" in tags or current in [t.removeprefix("W/") for t in tags]):
            return True
    return False


def byte_range(header: str | None, size: int, if_range: str | None = None,
               validators: tuple[str, ...] = ()) -> tuple[int, int] | None:
    """(first, last) inclusive for a single `Range: bytes=…`, or None to send the whole file
    (no header, a syntax this server ignores, several ranges, or an If-Range that no longer
    matches `validators`). Raises RangeNotSatisfiable for a range that starts past the end."""
    if header is None or (if_range is not None and if_range.strip() not in validators):
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None  # several ranges or another unit: the whole file is a valid answer
    first, last = m.group(1), m.group(2)
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored (RFC 9110 §14.1.1)
    if start >= size:
        raise RangeNotSatisfiable()
    return start, min(end, size - 1)


def content_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def attachment(name: str) -> str:
    """Content-Disposition for a download: an ASCII fallback name and the exact one (RFC 6266)."""
    fallback = _UNSAFE_ASCII.sub("_", name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
