"""Keep the application filling the screen after a RandR resize.

A window manager that keeps windows maximized (openbox, as the agent's --launch starts it)
refits them itself on RRScreenChangeNotify. Without one (the agent attached to a bare X server)
the agent does it: top-level windows that covered the whole old screen are resized to the new.
"""
from __future__ import annotations

from Xlib import X, Xatom
from Xlib.display import Display
from Xlib.protocol.event import ClientMessage


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


class MaximizeKeeper:
    """Keeps each normal application window maximized, through EWMH.

    openbox's per-application `maximized` rule is not enough: GIMP restores its own saved
    geometry once it is mapped, which undoes it, and without decorations a user has no way
    back. So each main window is asked to be maximized when the window manager lists it
    (_NET_CLIENT_LIST) and again whenever its _NET_WM_STATE loses the maximized state.
    Dialogs and utility windows stay as they are.
    """

    def __init__(self, display: Display) -> None:
        self._d = display
        atom = display.intern_atom
        self._client_list = atom("_NET_CLIENT_LIST")
        self._state = atom("_NET_WM_STATE")
        self._maximized = (atom("_NET_WM_STATE_MAXIMIZED_VERT"), atom("_NET_WM_STATE_MAXIMIZED_HORZ"))
        self._type = atom("_NET_WM_WINDOW_TYPE")
        self._normal = atom("_NET_WM_WINDOW_TYPE_NORMAL")
        self._root = display.screen().root
        self._root.change_attributes(event_mask=X.PropertyChangeMask)
        self._known: set[int] = set()
        self._main: set[int] = set()
        self._refits: dict[int, int] = {}  # bounded, in case a WM maximizes to less than the screen
        self.check()

    def handle(self, ev) -> None:
        if ev.type == X.ConfigureNotify:
            # Marked maximized but not the screen's size: a configure request the window
            # manager honoured after the maximize (GIMP restoring its geometry while it was
            # being maximized). Taking the state away and giving it back refits it.
            wid = ev.window.id
            if wid in self._main and (ev.width, ev.height) != self._screen() \
                    and self._refits.get(wid, 0) < 8:
                self._refits[wid] = self._refits.get(wid, 0) + 1
                self._refit(ev.window)
                self._d.flush()
            return
        if ev.type != X.PropertyNotify:
            return
        if ev.window == self._root and ev.atom == self._client_list:
            self.check()
        elif ev.atom == self._state and ev.window.id in self._main:
            self._keep_maximized(ev.window)
            self._d.flush()

    def check(self) -> None:
        prop = self._root.get_full_property(self._client_list, Xatom.WINDOW)
        clients = set(prop.value) if prop else set()
        for wid in clients - self._known:
            window = self._d.create_resource_object("window", wid)
            if self._is_main_window(window):
                self._main.add(wid)
                window.change_attributes(event_mask=X.PropertyChangeMask | X.StructureNotifyMask)
                self._keep_maximized(window)
        self._known = clients
        self._main &= clients
        self._refits = {w: n for w, n in self._refits.items() if w in self._main}
        self._d.flush()

    def _keep_maximized(self, window) -> None:
        state = window.get_full_property(self._state, Xatom.ATOM)
        if state is not None and all(a in state.value for a in self._maximized):
            return
        self._set_maximized(window, True)

    def _refit(self, window) -> None:
        state = window.get_full_property(self._state, Xatom.ATOM)
        if state is None or not all(a in state.value for a in self._maximized):
            return  # not maximized: the PropertyNotify path asks for it
        self._set_maximized(window, False)
        self._set_maximized(window, True)

    def _set_maximized(self, window, on: bool) -> None:
        event = ClientMessage(window=window, client_type=self._state,  # 1 add, 0 remove
                              data=(32, [1 if on else 0, *self._maximized, 1, 0]))
        self._root.send_event(event, event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask)

    def _screen(self) -> tuple[int, int]:
        geometry = self._root.get_geometry()
        return geometry.width, geometry.height

    def _is_main_window(self, window) -> bool:
        if window.get_wm_transient_for():
            return False
        kind = window.get_full_property(self._type, Xatom.ATOM)
        return kind is None or self._normal in kind.value
