"""`{path}` of `/files/{path}`: parsed and checked before anything touches the disk (pure).

The path is relative to the home, `/`-separated, each segment percent-encoded UTF-8. Refused
here: an empty segment (a leading `/`, `//`), `.` and `..`, NUL, a `/` inside a segment
(`%2F`), a broken escape or invalid UTF-8, names over NAME_MAX bytes, and the prefix of the
temporary files uploads use. What the segments lead to on disk (symlinks, hard links, races)
a string cannot tell: that is `resolve.py`'s job, with descriptors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

NAME_MAX = 255  # bytes, Linux
PATH_MAX = 4000  # bytes of the whole relative path (PATH_MAX is 4096 with the home in front)
MAX_DEPTH = 128
UPLOAD_PREFIX = ".gsp-upload-"  # temporary upload files when O_TMPFILE is unavailable
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class PathError(ValueError):
    """The path cannot name anything in the home: a 400 saying why."""


@dataclass(frozen=True)
class FilePath:
    segments: tuple[str, ...]  # decoded names; () is the home
    directory: bool  # written with a trailing `/` (the home always is one)

    @property
    def is_home(self) -> bool:
        return not self.segments

    @property
    def name(self) -> str:
        return self.segments[-1]

    @property
    def parent(self) -> tuple[str, ...]:
        return self.segments[:-1]

    @property
    def text(self) -> str:
        """The path as listings show it: decoded, no trailing `/`, "" for the home."""
        return "/".join(self.segments)


def parse(raw: str) -> FilePath:
    """A FilePath from the still percent-encoded part of the URL after `/files/` (no query)."""
    if raw == "":
        return FilePath((), True)
    if raw.startswith("/"):
        raise PathError("the path must be relative to the home (no leading '/')")
    directory = raw.endswith("/")
    parts = (raw[:-1] if directory else raw).split("/")
    if len(parts) > MAX_DEPTH:
        raise PathError(f"the path is deeper than {MAX_DEPTH} folders")
    segments = tuple(_segment(part) for part in parts)
    if sum(len(s.encode()) + 1 for s in segments) > PATH_MAX:
        raise PathError(f"the path is longer than {PATH_MAX} bytes")
    return FilePath(segments, directory)


def _segment(part: str) -> str:
    if part == "":
        raise PathError("empty path segment ('//')")
    if _BAD_ESCAPE.search(part):
        raise PathError("malformed percent-encoding in the path")
    try:
        name = unquote_to_bytes(part).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):  # raw non-ASCII that is not UTF-8, or bad escapes
        raise PathError("the path is not percent-encoded UTF-8") from None
    if "/" in name:
        raise PathError("a path segment contains an encoded '/' (%2F)")
    if "\0" in name:
        raise PathError("the path contains a NUL character")
    if name in (".", ".."):
        raise PathError("'.' and '..' are not allowed in the path")
    if len(name.encode()) > NAME_MAX:
        raise PathError(f"a name is longer than {NAME_MAX} bytes")
    if name.startswith(UPLOAD_PREFIX):
        raise PathError(f"names starting with {UPLOAD_PREFIX!r} are reserved for uploads in progress")
    return name
