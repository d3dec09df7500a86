"""Which documents have unsaved changes, from the applications' window titles.

GIMP, Inkscape and Blender mark a modified document in the title of its window with a `*`
("*[Untitled]-1.0 (RGB color 8-bit …) – GIMP", "*drawing.svg - Inkscape",
"Blender* [/home/user/scene.blend]"). The viewer asks before ending a session that has any,
and names them. `unsaved_documents` is pure; `TitleWatcher` follows the titles on X.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from Xlib import X, Xatom
from Xlib.display import Display
from Xlib.error import XError

_MARKED = re.compile(r"^\*\s*(?P<lead>.+)$|^(?P<app>[A-Za-z]+)\*\s*(?P<rest>.*)$")
_TAIL = re.compile(r"\s+(?:\(|[-–—]\s+(?:GIMP|Inkscape|Blender|GNU Image)).*$")


def unsaved_documents(titles: Iterable[str]) -> list[str]:
    """The names of the documents whose window title marks them modified, in order, once."""
    found: list[str] = []
    for title in titles:
        m = _MARKED.match(title.strip())
        if not m:
            continue
        if m.group("lead") is not None:
            name = _TAIL.sub("", m.group("lead")).strip()
        else:
            name = m.group("rest").strip().strip("[]") or m.group("app")
        if name and name not in found:
            found.append(name[:200])
    return found


class TitleWatcher:
    """Follows the titles of the window manager's client windows; calls `changed(documents)`
    whenever the list of unsaved documents changes. Runs on the InputSession's connection."""

    def __init__(self, display: Display, changed: Callable[[list[str]], None]) -> None:
        self._d = display
        self._changed = changed
        atom = display.intern_atom
        self._client_list = atom("_NET_CLIENT_LIST")
        self._names = (atom("_NET_WM_NAME"), Xatom.WM_NAME)
        self._utf8 = atom("UTF8_STRING")
        self._root = display.screen().root
        self._clients: set[int] = set()
        self.documents: list[str] = []
        self.check()

    def handle(self, ev) -> None:
        if ev.type != X.PropertyNotify:
            return
        if (ev.window == self._root and ev.atom == self._client_list) or (
                ev.window.id in self._clients and ev.atom in self._names):
            self.check()

    def check(self) -> None:
        prop = self._root.get_full_property(self._client_list, Xatom.WINDOW)
        clients = set(prop.value) if prop else set()
        titles = []
        for wid in sorted(clients):
            window = self._d.create_resource_object("window", wid)
            try:
                if wid not in self._clients:
                    window.change_attributes(event_mask=X.PropertyChangeMask)
                titles.append(self._title(window))
            except XError:
                continue  # the window went away meanwhile
        self._clients = clients
        documents = unsaved_documents(titles)
        if documents != self.documents:
            self.documents = documents
            self._changed(documents)

    def _title(self, window) -> str:
        prop = window.get_full_property(self._names[0], self._utf8)
        if prop is not None and prop.value:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        name = window.get_wm_name()
        return name.decode("latin-1") if isinstance(name, bytes) else (name or "")
