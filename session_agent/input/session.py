"""The agent's input side for one X display, shared by every peer.

Wiring (server.py): `session = InputSession(display_name)`; `await session.start()` at startup
and `await session.stop()` at shutdown. When a peer's `input` data channel opens:
`ch = session.channel(lambda m: dc.send(json.dumps(m)))`, then
`dc.on("message", ch.on_message)`; call `ch.close()` when the channel closes or the peer goes.
The session itself sends clipboard, cursor and `resized` broadcasts to every open channel.
`await session.clipboard()` and `session.set_clipboard_content()` serve `/clipboard`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from Xlib import X
from Xlib.display import Display
from Xlib.error import ConnectionClosedError, XError
from Xlib.ext import randr
from Xlib.protocol import event as xevent

from session_agent.display.cursor import CursorWatcher
from session_agent.display.dpi import DpiSetter, display_dpi
from session_agent.display.randr import clamp_size, max_screen_size, screen_size, set_screen_size
from session_agent.display.titles import TitleWatcher
from session_agent.display.windows import MaximizeKeeper, refit_fullscreen_windows
from session_agent.display.xevents import is_extension_event
from session_agent.input.channel import Gate, InputChannel, Send
from session_agent.input.clipboard import PNG, Clipboard, Content
from session_agent.input.xtest import Injector

log = logging.getLogger(__name__)

CLIPBOARD_PIECE = 4096  # characters per message: <= 48 KiB of JSON even when all are escaped
RESIZE_INTERVAL = 0.25  # seconds between RandR changes; a window being dragged sends many
CLIPBOARD_WAIT_S = 5.0  # how long /clipboard waits for an application's copy being read


class ClipboardBusy(Exception):
    """The application holding CLIPBOARD has not handed its content over (yet)."""


class InputSession:
    def __init__(self, display_name: str, *, max_size: tuple[int, int] | None = None,
                 rate: float = 400.0, burst: float = 800.0) -> None:
        self.display_name = display_name
        self._max_size = max_size  # below the framebuffer when the agent's --max-size says so
        self._rate, self._burst = rate, burst
        self._channels: set[InputChannel] = set()
        self._drain_scheduled = False
        self._resize_pending: tuple[int, int, float | None] | None = None
        self._resize_handle: asyncio.TimerHandle | None = None
        self._last_resize = -RESIZE_INTERVAL
        # The last sign of a person: input from any viewer, a viewer coming or going. The
        # gateway ends a session idle longer than its timeout (and warns viewers first).
        self.last_activity = 0.0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._d = d = Display(self.display_name)
        d.set_error_handler(self._x_error)
        d.xfixes_query_version()  # XFixes requires the version handshake before any request
        # The browser repeats held keys itself (at the user's rate, and never after a key-up
        # lost in a network stall); X repeating XTEST-held keys as well would double them.
        self._auto_repeat = d.get_keyboard_control().global_auto_repeat
        d.change_keyboard_control(auto_repeat_mode=X.AutoRepeatModeOff)
        self.injector = Injector(d)
        self._clipboard_read = asyncio.Event()  # set while no application's copy is being read
        self._clipboard_read.set()
        self._clipboard = Clipboard(d, self._on_copy, self._on_clipboard_busy)
        self._dpi = DpiSetter(d)
        self._cursor = CursorWatcher(d)
        self._windows = MaximizeKeeper(d)
        self._titles = TitleWatcher(d, self._on_unsaved)
        self.last_activity = self._loop.time()
        d.screen().root.xrandr_select_input(randr.RRScreenChangeNotifyMask)
        self.size = screen_size(d)
        self._cursor.read()
        d.flush()
        self._fd = d.fileno()  # python-xlib refuses fileno() once the connection is lost
        self._loop.add_reader(self._fd, self._drain)

    async def stop(self) -> None:
        for channel in list(self._channels):
            channel.close()
        if self._resize_handle is not None:
            self._resize_handle.cancel()
        self._loop.remove_reader(self._fd)
        try:
            self._clipboard.close()
            self._dpi.close()
            self._d.change_keyboard_control(auto_repeat_mode=self._auto_repeat)
            self._d.sync()  # done when stop() returns, not whenever the server gets to it
            self._d.close()
        except ConnectionClosedError:
            pass  # the X server went first

    def channel(self, send: Send, *, control: bool = True, gate: Gate | None = None) -> InputChannel:
        """A channel for one peer; with control=False the peer may only ping (view-only);
        `gate` decides between several participants (session_agent/presence.py)."""
        channel = InputChannel(send, self, control=control, rate=self._rate, burst=self._burst,
                               gate=gate)
        self._channels.add(channel)
        self.note_activity()
        channel.send({"type": "resized", "width": self.size[0], "height": self.size[1]})
        if self._cursor.current is not None:
            channel.send(self._cursor.current)
        channel.send({"type": "unsaved", "documents": self._titles.documents})
        return channel

    def idle_seconds(self) -> float:
        """Seconds since anybody used the session; nobody is idle while holding a key or a
        button down (in the middle of a drag, a long key press)."""
        if any(channel.holding for channel in self._channels):
            self.note_activity()
        return max(0.0, self._loop.time() - self.last_activity)

    def broadcast(self, message: dict[str, Any]) -> None:
        """A message from the media side (refine/unrefine) to every viewer."""
        self._broadcast(message)

    def notify(self, notice: dict[str, Any]) -> None:
        """A notice from the gateway (the session ends soon, ...) to every viewer."""
        self._broadcast({"type": "notice", **notice})

    # -- called by channels ----------------------------------------------------------------

    def forget(self, channel: InputChannel) -> None:
        self._channels.discard(channel)
        self.note_activity()

    def note_activity(self) -> None:
        self.last_activity = self._loop.time()

    def set_clipboard(self, text: str) -> None:
        self._clipboard.set_text(text)

    def set_clipboard_content(self, content: Content) -> None:
        """A peer's text or PNG image (PUT /clipboard) becomes what X applications paste."""
        self.note_activity()
        self._clipboard.set(content)
        self.after_input()

    async def clipboard(self) -> Content | None:
        """What CLIPBOARD holds (None: nothing we can hand over). An application's copy still
        being read is waited for, up to CLIPBOARD_WAIT_S, then ClipboardBusy."""
        try:
            await asyncio.wait_for(self._clipboard_read.wait(), CLIPBOARD_WAIT_S)
        except TimeoutError:
            raise ClipboardBusy() from None
        return self._clipboard.content

    def request_resize(self, width: int, height: int, scale: float | None = None) -> None:
        """Resize now, or at the end of the current interval (the latest request wins). With
        `scale` (the viewer's devicePixelRatio) the X DPI becomes 96 × scale; without it the
        DPI stays as it is."""
        self._resize_pending = (width, height, scale)
        if self._resize_handle is None:
            wait = self._last_resize + RESIZE_INTERVAL - self._loop.time()
            self._resize_handle = self._loop.call_later(max(0.0, wait), self._apply_resize)

    def after_input(self) -> None:
        """Replies to round trips may have queued X events without the socket being readable."""
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    # -- X side ----------------------------------------------------------------------------

    def _apply_resize(self) -> None:
        self._resize_handle = None
        self._last_resize = self._loop.time()
        if self._resize_pending is None:
            return
        width, height, scale = self._resize_pending
        self._resize_pending = None
        old = self.size
        try:
            dpi = self._dpi.dpi
            if scale is not None:
                framebuffer = max_screen_size(self._d)
                limit = self._max_size or framebuffer
                granted = clamp_size(width, height, (min(framebuffer[0], limit[0]), min(framebuffer[1], limit[1])))
                dpi = display_dpi(scale, (width, height), granted)
            if dpi is not None:  # first: applications that redraw on the resize see the new DPI
                self._dpi.set(dpi)
            new = set_screen_size(self._d, width, height, self._max_size, dpi)
            refit_fullscreen_windows(self._d, old, new)
        except XError as exc:
            log.warning("resize to %sx%s failed: %s", width, height, exc)
            return
        if new != (width - width % 2, height - height % 2):
            log.info("resize to %sx%s clamped to %sx%s (the agent's --max-size or the framebuffer)",
                     width, height, *new)
        self._size_changed(new)
        # a request for the size it already has still gets its answer
        if new == old:
            self._broadcast({"type": "resized", "width": new[0], "height": new[1]})

    def _drain(self) -> None:
        self._drain_scheduled = False
        try:
            while self._d.pending_events():
                self._handle(self._d.next_event())
        except ConnectionClosedError:
            # the socket stays readable at EOF: stop listening or this would spin
            if self._loop.remove_reader(self._fd):
                log.error("X display %s closed the connection", self.display_name)
        except Exception:  # one bad event must not stop the input side
            log.exception("X event handling failed")

    def _handle(self, ev: Any) -> None:
        if isinstance(ev, xevent.MappingNotify) and ev.request != X.MappingPointer:
            self.injector.refresh_keymap()
        elif is_extension_event(self._d, ev, "ScreenChangeNotify"):
            self._size_changed(screen_size(self._d))
        else:
            self._windows.handle(ev)
            self._titles.handle(ev)
            self._clipboard.handle(ev)
            cursor = self._cursor.handle(ev)
            if cursor is not None:
                self._broadcast(cursor)

    def _size_changed(self, size: tuple[int, int]) -> None:
        if size != self.size:
            self.size = size
            self._broadcast({"type": "resized", "width": size[0], "height": size[1]})

    def _on_clipboard_busy(self, busy: bool) -> None:
        (self._clipboard_read.clear if busy else self._clipboard_read.set)()

    def _on_copy(self, content: Content) -> None:
        if content.mime == PNG:  # never as text: clients fetch it (GET /clipboard)
            self._broadcast({"type": "clipboard", "mime": PNG, "size": len(content.data)})
            return
        text = content.data.decode()
        pieces = [text[i:i + CLIPBOARD_PIECE] for i in range(0, len(text), CLIPBOARD_PIECE)] or [""]
        for i, piece in enumerate(pieces):
            msg: dict[str, Any] = {"type": "clipboard", "text": piece}
            if i < len(pieces) - 1:
                msg["more"] = True
            self._broadcast(msg)

    def _on_unsaved(self, documents: list[str]) -> None:
        self._broadcast({"type": "unsaved", "documents": documents})

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for channel in list(self._channels):
            channel.send(msg)

    def _x_error(self, err: XError, request: Any) -> None:
        # errors of one-way requests (a window that went away mid-transfer): log, carry on
        log.debug("X error: %s", err)
