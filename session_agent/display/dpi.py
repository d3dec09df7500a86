"""Tell X applications the display's DPI (SPEC "HiDPI": 96 × the viewer's devicePixelRatio).

Applications read it from different places, so the agent sets all three:

- RandR: the screen's size in millimetres (`display/randr.py`; xdpyinfo, GIMP's "monitor
  resolution" for View > Dot for Dot, Qt);
- the `Xft.dpi` resource in the root window's RESOURCE_MANAGER (what `xrdb` sets): read once,
  when an application starts, by GTK 2 and 3, Qt and Xft. GIMP 2.10 started after it draws its
  fonts at that DPI, but a running one never looks at the property again;
- XSETTINGS `Xft/DPI`, with the agent as the screen's XSETTINGS manager when no other program
  is: running GTK applications (GIMP 2.10 included) follow it at once and redraw their fonts.
  GTK asks the Xft resources for every setting the manager does not name, so owning the
  manager selection with this one setting changes nothing else.
"""
from __future__ import annotations

import logging
import re
import struct

from Xlib import X, Xatom
from Xlib.display import Display
from Xlib.protocol import event as xevent

log = logging.getLogger(__name__)

BASE_DPI = 96


def with_resource(database: str, name: str, value: str) -> str:
    """The RESOURCE_MANAGER text with `name: value` set, every other line as it was (pure)."""
    line = re.compile(rf"^{re.escape(name)}\s*:.*$", re.MULTILINE)
    entry = f"{name}:\t{value}"
    if line.search(database):
        return line.sub(lambda _: entry, database, count=1)
    return database + ("" if not database or database.endswith("\n") else "\n") + entry + "\n"


def xsettings(serial: int, integers: dict[str, int]) -> bytes:
    """The `_XSETTINGS_SETTINGS` property for integer settings (pure; XSETTINGS spec 0.5):
    byte order, serial, count, then per setting type 0, name padded to 4, its serial, value."""
    out = struct.pack("<B3xII", 0, serial, len(integers))  # 0: LSBFirst
    for name, value in integers.items():
        raw = name.encode()
        out += struct.pack("<BxH", 0, len(raw)) + raw + b"\0" * (-len(raw) % 4)
        out += struct.pack("<Ii", serial, value)
    return out


class DpiSetter:
    """Sets the resource and the XSETTINGS value on the session's X connection."""

    def __init__(self, display: Display) -> None:
        self._d = display
        self._manager = None  # our XSETTINGS window, once we are the manager
        self._serial = 0
        self.dpi: int | None = None  # the DPI last set; None: never set (X's own)

    def set(self, dpi: int) -> None:
        if dpi == self.dpi:
            return
        self.dpi = dpi
        self._set_resource(dpi)
        self._set_xsettings(dpi)
        self._d.flush()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.destroy()  # the selection goes with the window

    def _set_resource(self, dpi: int) -> None:
        root = self._d.screen().root
        atom = self._d.intern_atom("RESOURCE_MANAGER")
        current = root.get_full_property(atom, Xatom.STRING)
        text = bytes(current.value).decode("latin-1") if current is not None else ""
        root.change_property(atom, Xatom.STRING, 8, with_resource(text, "Xft.dpi", str(dpi)).encode("latin-1"))

    def _set_xsettings(self, dpi: int) -> None:
        d = self._d
        screen = d.get_default_screen()
        selection = d.intern_atom(f"_XSETTINGS_S{screen}")
        prop = d.intern_atom("_XSETTINGS_SETTINGS")
        root = d.screen().root
        if self._manager is None:
            if d.get_selection_owner(selection) != X.NONE:
                log.info("another XSETTINGS manager runs: running applications keep their DPI")
                return
            self._manager = root.create_window(-10, -10, 1, 1, 0, X.CopyFromParent, X.InputOnly,
                                               X.CopyFromParent)
        self._serial += 1
        self._manager.change_property(prop, prop, 8, xsettings(self._serial, {"Xft/DPI": dpi * 1024}))
        if self._serial == 1:
            self._manager.set_selection_owner(selection, X.CurrentTime)
            # ICCCM manager selections: tell clients on the root window that a manager is there
            root.send_event(xevent.ClientMessage(
                window=root, client_type=d.intern_atom("MANAGER"),
                data=(32, [X.CurrentTime, selection, self._manager.id, 0, 0])),
                event_mask=X.StructureNotifyMask)
