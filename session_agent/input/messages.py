"""Parse and validate `input` data-channel messages (pure: no X, no I/O).

`parse()` turns one raw message into a typed message or raises `ProtocolError` whose text is
sent back to the peer. Checks that need the live display (pointer inside the screen) are the
channel's; everything here depends on the message alone.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Union

# aiortc accepts SCTP messages up to 256 KiB; bigger clipboards arrive in pieces ("more").
MAX_MESSAGE_BYTES = 256 * 1024
MAX_COORD = 65535  # X coordinates are 16-bit
MAX_DELTA = 10000  # one relative move or wheel event; more is a bug or abuse, not a gesture
MAX_KEY_FIELD = 32  # longest KeyboardEvent.key/code value is ~20 characters
BUTTONS = (1, 2, 3, 8, 9)  # left, middle, right, back, forward; 4-7 are the wheel
SCALES = (1, 4)  # devicePixelRatio of a `resize` (SPEC "HiDPI")


class ProtocolError(ValueError):
    """A message that is malformed or out of range; its text goes back to the peer."""


@dataclass(frozen=True)
class Pointer:
    x: int
    y: int


@dataclass(frozen=True)
class PointerRel:
    dx: int
    dy: int


@dataclass(frozen=True)
class Button:
    button: int
    down: bool


@dataclass(frozen=True)
class Wheel:
    dx: float
    dy: float


@dataclass(frozen=True)
class Key:
    code: str
    key: str
    down: bool


@dataclass(frozen=True)
class Clipboard:
    text: str
    more: bool  # another piece of the same text follows


@dataclass(frozen=True)
class Resize:
    width: int
    height: int
    scale: float | None = None  # the browser's devicePixelRatio: width and height are device pixels


@dataclass(frozen=True)
class Ping:
    t: float | str | None


Message = Union[Pointer, PointerRel, Button, Wheel, Key, Clipboard, Resize, Ping]


def parse(raw: str | bytes) -> Message:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("message is not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("message must be an object with a string 'type'")
    builder = _BUILDERS.get(msg["type"])
    if builder is None:
        raise ProtocolError(f"unknown message type {msg['type'][:40]!r}")
    return builder(msg)


def _number(msg: dict[str, Any], name: str, lo: float, hi: float) -> float:
    value = msg.get(name)
    # bool is an int in Python, but true is not a coordinate
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"'{name}' must be a number")
    if not lo <= value <= hi:
        raise ProtocolError(f"'{name}' out of range [{lo}, {hi}]")
    return value


def _int(msg: dict[str, Any], name: str, lo: int, hi: int) -> int:
    return round(_number(msg, name, lo, hi))


def _bool(msg: dict[str, Any], name: str) -> bool:
    value = msg.get(name)
    if not isinstance(value, bool):
        raise ProtocolError(f"'{name}' must be true or false")
    return value


def _str(msg: dict[str, Any], name: str, max_len: int) -> str:
    value = msg.get(name, "")
    if not isinstance(value, str):
        raise ProtocolError(f"'{name}' must be a string")
    if len(value) > max_len:
        raise ProtocolError(f"'{name}' longer than {max_len} characters")
    return value


def _pointer(msg: dict[str, Any]) -> Pointer:
    # floor, not round: a scaled view gives 1279.6 for the last pixel of a 1280-pixel screen
    x, y = _number(msg, "x", 0, MAX_COORD), _number(msg, "y", 0, MAX_COORD)
    return Pointer(math.floor(x), math.floor(y))


def _pointer_rel(msg: dict[str, Any]) -> PointerRel:
    return PointerRel(_int(msg, "dx", -MAX_DELTA, MAX_DELTA), _int(msg, "dy", -MAX_DELTA, MAX_DELTA))


def _button(msg: dict[str, Any]) -> Button:
    button = msg.get("button")
    if isinstance(button, bool) or button not in BUTTONS:
        raise ProtocolError(f"'button' must be one of {list(BUTTONS)}")
    return Button(button, _bool(msg, "down"))


def _wheel(msg: dict[str, Any]) -> Wheel:
    return Wheel(_number(msg, "dx", -MAX_DELTA, MAX_DELTA), _number(msg, "dy", -MAX_DELTA, MAX_DELTA))


def _key(msg: dict[str, Any]) -> Key:
    code, key = _str(msg, "code", MAX_KEY_FIELD), _str(msg, "key", MAX_KEY_FIELD)
    if not code and not key:
        raise ProtocolError("'code' or 'key' must be given")
    return Key(code, key, _bool(msg, "down"))


def _clipboard(msg: dict[str, Any]) -> Clipboard:
    text = msg.get("text")
    if not isinstance(text, str):
        raise ProtocolError("'text' must be a string")
    try:
        text.encode()
    except UnicodeEncodeError:  # JSON can carry lone surrogates; X wants valid UTF-8
        raise ProtocolError("'text' is not valid Unicode") from None
    more = msg.get("more", False)
    if not isinstance(more, bool):
        raise ProtocolError("'more' must be true or false")
    return Clipboard(text, more)


def _resize(msg: dict[str, Any]) -> Resize:
    scale = _number(msg, "scale", *SCALES) if "scale" in msg else None
    return Resize(_int(msg, "width", 1, MAX_COORD), _int(msg, "height", 1, MAX_COORD), scale)


def _ping(msg: dict[str, Any]) -> Ping:
    t = msg.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float, str, type(None))) or (
            isinstance(t, float) and not math.isfinite(t)):
        raise ProtocolError("'t' must be a number or a string")
    if isinstance(t, str) and len(t) > 64:
        raise ProtocolError("'t' longer than 64 characters")
    return Ping(t)


_BUILDERS = {
    "pointer": _pointer,
    "pointer_rel": _pointer_rel,
    "button": _button,
    "wheel": _wheel,
    "key": _key,
    "clipboard": _clipboard,
    "resize": _resize,
    "ping": _ping,
}
