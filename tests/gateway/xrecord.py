"""What input really reached an X server: its RECORD extension reports every key and button
press it processed (XTEST-injected ones included), with the pointer's position; and what its
CLIPBOARD holds."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from Xlib import X, XK, display
from Xlib.ext import record
from Xlib.protocol import rq


@dataclass(frozen=True)
class Press:
    kind: str  # "key" or "button"
    detail: int  # keycode or button number
    x: int
    y: int
    time: int = 0  # the server's timestamp (ms)


class XRecorder:
    def __init__(self, display_name: str) -> None:
        self._control = display.Display(display_name)
        self._data = display.Display(display_name)
        self.presses: queue.Queue[Press] = queue.Queue()
        self._context = self._control.record_create_context(0, [record.AllClients], [{
            "core_requests": (0, 0), "core_replies": (0, 0),
            "ext_requests": (0, 0, 0, 0), "ext_replies": (0, 0, 0, 0),
            "delivered_events": (0, 0), "device_events": (X.KeyPress, X.ButtonPress),
            "errors": (0, 0), "client_started": False, "client_died": False}])
        self._control.sync()  # the context must exist before the other connection enables it
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._data.record_enable_context(self._context, self._on_reply)
        self._data.record_free_context(self._context)

    def _on_reply(self, reply: object) -> None:
        if reply.category != record.FromServer or reply.client_swapped or not reply.data:
            return
        data = reply.data
        while data:
            event, data = rq.EventField(None).parse_binary_value(data, self._data.display, None, None)
            kind = "key" if event.type == X.KeyPress else "button" if event.type == X.ButtonPress else None
            if kind is None:  # a release (the range KeyPress..ButtonPress has KeyRelease too)
                continue
            self.presses.put(Press(kind, event.detail, event.root_x, event.root_y, event.time))

    def next_press(self, kind: str, timeout: float = 30.0) -> Press:
        deadline = time.monotonic() + timeout
        while True:
            try:
                press = self.presses.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise
                # The server holds recorded events back until it flushes some client's output:
                # on an otherwise quiet display, a round trip of ours is that flush.
                self._control.get_input_focus()
                continue
            if press.kind == kind:
                return press

    def text_of(self, keycode: int) -> str:
        keysym = self._control.keycode_to_keysym(keycode, 0)
        return XK.keysym_to_string(keysym) or ""

    def close(self) -> None:
        self._control.record_disable_context(self._context)
        self._control.flush()
        self._thread.join(10)
        self._control.close()
        self._data.close()


def clipboard_text(display_name: str, timeout: float = 10.0) -> str | None:
    """The CLIPBOARD selection's text as an X client pasting it would get it (None: no owner)."""
    d = display.Display(display_name)
    try:
        root = d.screen().root
        window = root.create_window(0, 0, 1, 1, 0, d.screen().root_depth)
        prop = d.intern_atom("TEST_CLIPBOARD")
        window.convert_selection(d.intern_atom("CLIPBOARD"), d.intern_atom("UTF8_STRING"), prop, X.CurrentTime)
        d.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not d.pending_events():
                time.sleep(0.02)
                continue
            event = d.next_event()
            if event.type == X.SelectionNotify:
                if event.property == X.NONE:
                    return None
                value = window.get_full_property(prop, X.AnyPropertyType).value
                return value.decode() if isinstance(value, bytes) else str(value)
        raise TimeoutError("no answer from the CLIPBOARD owner")
    finally:
        d.close()
