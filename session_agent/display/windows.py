"""Keep the application filling the screen after a RandR resize.

A window manager that keeps windows maximized (openbox, as the agent's --launch starts it)
refits them itself on RRScreenChangeNotify. Without one (the agent attached to a bare X server)
the agent does it: top-level windows that covered the whole old screen are resized to the new.
"""
from __future__ import annotations

from Xlib import X
from Xlib.display import Display


def has_window_manager(display: Display) -> bool:
    root = display.screen().root
    check = root.get_full_property(display.intern_atom("_NET_SUPPORTING_WM_CHECK"), X.AnyPropertyType)
    return bool(check and check.value)


def refit_fullscreen_windows(display: Display, old: tuple[int, int], new: tuple[int, int]) -> None:
    if has_window_manager(display):
        return
    for window in display.screen().root.query_tree().children:
        attrs = window.get_attributes()
        if attrs.map_state != X.IsViewable:
            continue
        geom = window.get_geometry()
        if (geom.x, geom.y) == (0, 0) and geom.width >= old[0] and geom.height >= old[1]:
            window.configure(width=new[0], height=new[1])
    display.flush()
