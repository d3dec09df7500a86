"""The X clipboard both ways: text and PNG images.

The agent owns CLIPBOARD (and PRIMARY, for text) with what peers give it, and serves it to X
applications; it learns of what an application copies from XFixes (no polling), asks the owner
for its TARGETS and reads `image/png` when it is offered, else text. An application's copy is
read at once (text up to 1 MiB, images up to 32 MiB), so `content` always holds what CLIPBOARD
holds. Content that is neither valid text nor a PNG image is never passed on as text.

Runs on the session's X connection; the session passes every X event to `handle()`. Transfers
bigger than one X request use the ICCCM INCR protocol, in both directions (GIMP pastes large
images that way).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from Xlib import X, Xatom
from Xlib.display import Display
from Xlib.ext import xfixes
from Xlib.protocol import event as xevent
from Xlib.xobject.drawable import Window

from session_agent.display.xevents import is_extension_event

log = logging.getLogger(__name__)

TEXT = "text/plain"
PNG = "image/png"
MAX_TEXT_BYTES = 1024 * 1024
MAX_IMAGE_BYTES = 32 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Under the 256 KiB core request limit (python-xlib has no BIG-REQUESTS) with room for the
# ChangeProperty header; a 32 MiB image is 256 INCR chunks.
_CHUNK = 128 * 1024
_MAX_TRANSFERS = 8  # INCR transfers to other clients in progress at once
_OWNER_GONE = ("SelectionWindowDestroyNotify", "SelectionClientCloseNotify")


@dataclass(frozen=True)
class Content:
    """What a selection holds: UTF-8 text (`TEXT`) or a PNG image (`PNG`)."""
    mime: str
    data: bytes

    @classmethod
    def text(cls, text: str) -> Content:
        return cls(TEXT, text.encode())

    @property
    def limit(self) -> int:
        return MAX_IMAGE_BYTES if self.mime == PNG else MAX_TEXT_BYTES


def classify(data: bytes, prop_type: int | None = None) -> Content | None:
    """What bytes an owner handed over really are (pure): a PNG image, text (Latin-1 for the
    STRING type, else UTF-8), or None for anything binary (NUL bytes, invalid UTF-8)."""
    if data.startswith(PNG_SIGNATURE):
        return Content(PNG, data)
    try:
        text = data.decode("latin-1" if prop_type == Xatom.STRING else "utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else Content.text(text)


@dataclass
class _Outgoing:
    """An INCR transfer to one requestor: the data from `sent` on, a chunk per delete."""
    window: Window
    prop: int
    target: int
    data: bytes
    sent: int = 0


@dataclass
class _Incoming:
    """An INCR transfer from the owner into our window's property."""
    limit: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class Clipboard:
    """`on_copy(content)`: an application copied something (never called for what a peer set).
    `on_busy(busy)`: reading an application's copy started (True) or ended (False)."""

    def __init__(self, display: Display, on_copy: Callable[[Content], None],
                 on_busy: Callable[[bool], None] = lambda busy: None) -> None:
        self._d = display
        self._on_copy = on_copy
        self._on_busy = on_busy
        atom = display.intern_atom
        self._clipboard = atom("CLIPBOARD")
        self._utf8 = atom("UTF8_STRING")
        self._targets = atom("TARGETS")
        self._incr = atom("INCR")
        self._png = atom(PNG)
        self._prop = atom("SESSION_AGENT_CLIPBOARD")
        self._offers = {TEXT: [self._utf8, Xatom.STRING, atom("TEXT"), atom("text/plain;charset=utf-8")],
                        PNG: [self._png]}
        self._window = display.screen().root.create_window(
            -10, -10, 1, 1, 0, X.CopyFromParent, X.InputOnly, X.CopyFromParent,
            event_mask=X.PropertyChangeMask)
        self.content: Content | None = None  # what CLIPBOARD holds, ours or an application's
        self.busy = False  # an application's copy is being read
        self._owned: dict[int, Content] = {}  # selection -> what we serve for it
        self._outgoing: dict[tuple[int, int], _Outgoing] = {}
        self._incoming: _Incoming | None = None
        self._asked = X.NONE  # target of the conversion we are waiting for
        display.xfixes_select_selection_input(
            self._window, self._clipboard,
            xfixes.XFixesSetSelectionOwnerNotifyMask | xfixes.XFixesSelectionWindowDestroyNotifyMask
            | xfixes.XFixesSelectionClientCloseNotifyMask)
        if _wid(display.get_selection_owner(self._clipboard)) != X.NONE:  # copied before we started
            self._start_reading(X.CurrentTime)

    def set(self, content: Content) -> None:
        """Own CLIPBOARD with `content`, and PRIMARY too for text (as a paste in X expects)."""
        self._stop_reading(content)
        selections = [self._clipboard, Xatom.PRIMARY] if content.mime == TEXT else [self._clipboard]
        for selection in selections:
            self._owned[selection] = content
            self._window.set_selection_owner(selection, X.CurrentTime)
        # ICCCM: check that we really own it (a round trip, so it is done before we return)
        if self._d.get_selection_owner(self._clipboard) != self._window:
            log.warning("could not take the CLIPBOARD selection")

    def set_text(self, text: str) -> None:
        self.set(Content.text(text))

    def close(self) -> None:
        self._window.destroy()
        self._d.flush()

    def handle(self, ev: object) -> None:
        if isinstance(ev, xevent.SelectionRequest) and _wid(ev.owner) == self._window.id:
            self._answer(ev)
        elif isinstance(ev, xevent.SelectionClear) and _wid(ev.window) == self._window.id:
            self._owned.pop(ev.atom, None)  # somebody else's now: let the data go
        elif is_extension_event(self._d, ev, "SetSelectionOwnerNotify"):
            if ev.selection != self._clipboard:
                return
            if _wid(ev.owner) == self._window.id:  # our own set(): whatever was being read is stale
                self._stop_reading(self._owned.get(self._clipboard))
            elif _wid(ev.owner) == X.NONE:
                self._stop_reading(None)
            else:
                self._start_reading(ev.selection_timestamp)
        elif any(is_extension_event(self._d, ev, name) for name in _OWNER_GONE):
            if ev.selection == self._clipboard and _wid(ev.owner) != self._window.id:
                self._stop_reading(None)  # the owner went: nobody can paste it any more
        elif isinstance(ev, xevent.SelectionNotify) and _wid(ev.requestor) == self._window.id:
            self._received(ev)
        elif isinstance(ev, xevent.PropertyNotify):
            self._property(ev)

    # -- serving what peers set --------------------------------------------------------------

    def _answer(self, ev: xevent.SelectionRequest) -> None:
        requestor = self._d.create_resource_object("window", _wid(ev.requestor))
        prop = ev.property or ev.target  # obsolete clients pass None: use the target
        content = self._owned.get(ev.selection)
        offers = self._offers[content.mime] if content is not None else []
        if content is None:
            prop = X.NONE
        elif ev.target == self._targets:
            requestor.change_property(prop, Xatom.ATOM, 32, [self._targets, *offers])
        elif ev.target in offers:
            target = self._png if content.mime == PNG else (
                Xatom.STRING if ev.target == Xatom.STRING else self._utf8)
            data = content.data
            if target == Xatom.STRING:  # ICCCM: STRING is Latin-1
                data = data.decode().encode("latin-1", "replace")
            if len(data) <= _CHUNK:
                requestor.change_property(prop, target, 8, data)
            else:
                if len(self._outgoing) >= _MAX_TRANSFERS:  # requestors that died mid-transfer
                    del self._outgoing[next(iter(self._outgoing))]
                requestor.change_attributes(event_mask=X.PropertyChangeMask)
                requestor.change_property(prop, self._incr, 32, [len(data)])
                self._outgoing[(requestor.id, prop)] = _Outgoing(requestor, prop, target, data)
        else:
            prop = X.NONE
        requestor.send_event(xevent.SelectionNotify(
            time=ev.time, requestor=requestor, selection=ev.selection, target=ev.target,
            property=prop))
        self._d.flush()

    def _property(self, ev: xevent.PropertyNotify) -> None:
        out = self._outgoing.get((_wid(ev.window), ev.atom))
        if out is not None and ev.state == X.PropertyDelete:
            chunk = out.data[out.sent:out.sent + _CHUNK]  # one copy of one chunk, never the rest
            out.sent += len(chunk)
            out.window.change_property(out.prop, out.target, 8, chunk)
            if not chunk:  # the zero-length chunk ends the transfer
                del self._outgoing[(_wid(ev.window), ev.atom)]
            self._d.flush()
        elif (self._incoming is not None and _wid(ev.window) == self._window.id
              and ev.atom == self._prop and ev.state == X.PropertyNewValue):
            self._incoming_chunk()

    # -- reading what an application copied --------------------------------------------------

    def _start_reading(self, timestamp: int) -> None:
        self.content = None  # the old content is gone, whatever the new owner hands over
        if not self.busy:
            self.busy = True
            self._on_busy(True)
        self._ask(self._targets, timestamp)

    def _stop_reading(self, content: Content | None) -> None:
        self.content = content
        self._asked, self._incoming = X.NONE, None  # late answers are ignored
        if self.busy:
            self.busy = False
            self._on_busy(False)

    def _ask(self, target: int, timestamp: int) -> None:
        self._asked = target
        self._incoming = None
        self._window.convert_selection(self._clipboard, target, self._prop, timestamp)
        self._d.flush()

    def _limit(self) -> int:
        return MAX_IMAGE_BYTES if self._asked == self._png else MAX_TEXT_BYTES

    def _received(self, ev: xevent.SelectionNotify) -> None:
        if not self.busy or ev.target != self._asked:
            return
        if ev.property == X.NONE:  # refused: fall back to text (an owner without TARGETS)
            fallback = {self._targets: self._utf8, self._utf8: Xatom.STRING}.get(self._asked)
            if fallback is None:
                self._stop_reading(None)
            else:
                self._ask(fallback, ev.time)
            return
        # The size first (a zero-length read): an owner's oversized property is never read.
        head = self._window.get_property(self._prop, X.AnyPropertyType, 0, 0)
        if head is None:
            self._stop_reading(None)
            return
        if head.property_type == self._incr:
            self._incoming = _Incoming(self._limit())
            self._window.delete_property(self._prop)  # the delete asks for the first chunk
            self._d.flush()
            return
        size = head.bytes_after
        reply = None
        if size <= self._limit():
            reply = self._window.get_property(self._prop, X.AnyPropertyType, 0, (size + 3) // 4)
        self._window.delete_property(self._prop)
        self._d.flush()
        if reply is None:
            log.info("clipboard of %s bytes not taken: over the limit", size)
            self._stop_reading(None)
        elif self._asked == self._targets:
            self._chose(list(reply.value) if reply.format == 32 else [], ev.time)
        else:
            self._deliver(bytes(reply.value), reply.property_type)

    def _chose(self, targets: list[int], timestamp: int) -> None:
        """Ask for an image when the owner offers one, else for its text, else give up."""
        for wanted in (self._png, self._utf8, Xatom.STRING):
            if wanted in targets:
                self._ask(wanted, timestamp)
                return
        self._stop_reading(None)  # only formats we cannot carry (image/bmp alone, files, …)

    def _incoming_chunk(self) -> None:
        incoming = self._incoming
        reply = self._window.get_full_property(self._prop, X.AnyPropertyType, sizehint=_CHUNK)
        self._window.delete_property(self._prop)
        self._d.flush()
        if reply is None or incoming is None:
            return
        chunk = bytes(reply.value)
        if chunk:
            incoming.size += len(chunk)
            # past the limit keep draining (the owner waits on our deletes) but store nothing
            if incoming.size <= incoming.limit:
                incoming.chunks.append(chunk)
            else:
                incoming.chunks.clear()
            return
        self._incoming = None
        if incoming.size > incoming.limit:
            log.info("clipboard of %s bytes not taken: over the limit", incoming.size)
            self._stop_reading(None)
        else:
            self._deliver(b"".join(incoming.chunks), reply.property_type)

    def _deliver(self, data: bytes, prop_type: int) -> None:
        if self._asked == self._png:
            content = Content(PNG, data) if data.startswith(PNG_SIGNATURE) else None
        else:  # an owner may hand image bytes over as "text" (xclip does): take what they are
            content = classify(data, prop_type)
        if content is not None and len(content.data) > content.limit:
            content = None
        if content is None:
            log.info("clipboard content that is neither text nor a PNG image: not passed on")
        self._stop_reading(content)
        if content is not None:
            self._on_copy(content)


def _wid(window: Window | int) -> int:
    """A window field of an event as an id (python-xlib gives a Window object or an int)."""
    return getattr(window, "id", window)
