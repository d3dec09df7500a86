"""A test application that behaves like GIMP restoring its saved geometry: once the window
manager has maximized its window, it unmaximizes itself and shrinks to 300x200."""
import sys
import time

from Xlib import X, Xatom, display as xdisplay
from Xlib.protocol.event import ClientMessage

d = xdisplay.Display()
root = d.screen().root
window = root.create_window(40, 40, 300, 200, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
                            background_pixel=d.screen().white_pixel, event_mask=X.PropertyChangeMask)
window.set_wm_class("unmaximizing", "Unmaximizing")
window.set_wm_name("unmaximizing")
window.map()
d.flush()
state, vert, horz = (d.intern_atom(n) for n in ("_NET_WM_STATE", "_NET_WM_STATE_MAXIMIZED_VERT",
                                                 "_NET_WM_STATE_MAXIMIZED_HORZ"))
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    prop = window.get_full_property(state, Xatom.ATOM)
    if prop is not None and vert in prop.value:
        break
    time.sleep(0.05)
else:
    sys.exit("never maximized")
root.send_event(ClientMessage(window=window, client_type=state, data=(32, [0, vert, horz, 1, 0])),
                event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask)  # 0 = remove
window.configure(width=300, height=200)
d.flush()
while True:
    time.sleep(60)
