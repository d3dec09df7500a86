"""Recognise X extension events.

python-xlib clones an extension's event class per connection, so `isinstance` against the class
in `Xlib.ext.*` is always false; the event code (and sub-code) it registered is what identifies
the event.
"""
from __future__ import annotations

from typing import Any

from Xlib.display import Display


def is_extension_event(display: Display, ev: Any, name: str) -> bool:
    code = getattr(display.extension_event, name, None)
    if isinstance(code, tuple):  # (code, sub-code) of events sharing one code
        return (ev.type, getattr(ev, "sub_code", None)) == code
    return code is not None and ev.type == code
