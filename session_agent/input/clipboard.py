"""The X clipboard both ways: own CLIPBOARD and PRIMARY for text from peers, and report text
that an application copies (XFixes selection notification, so no polling).

Runs on the session's X connection; the session passes every X event to `handle()`. Transfers
bigger than one X request use the ICCCM INCR protocol, in both directions.
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

MAX_TEXT_BYTES = 1024 * 1024
_CHUNK = 64 * 1024  # well under the 256 KiB core request limit (python-xlib has no BIG-REQUESTS)
_MAX_TRANSFERS = 8  # INCR transfers to other clients in progress at once


@dataclass
class _Outgoing:
    """An INCR transfer to one requestor: the rest of the data, sent a chunk per delete."""
    window: Window
    prop: int
    target: int
    data: bytes
    done: bool = False


@dataclass
class _Incoming:
    """An INCR transfer from the owner into our window's property."""
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class Clipboard:
    def __init__(self, display: Display, on_copy: Callable[[str], None]) -> None:
        self._d = display
        self._on_copy = on_copy
        atom = display.intern_atom
        self._clipboard = atom("CLIPBOARD")
        self._utf8 = atom("UTF8_STRING")
        self._targets = atom("TARGETS")
        self._incr = atom("INCR")
        self._prop = atom("SESSION_AGENT_CLIPBOARD")
        self._offers = [self._utf8, Xatom.STRING, atom("TEXT"), atom("text/plain;charset=utf-8")]
        self._window = display.screen().root.create_window(
            -10, -10, 1, 1, 0, X.CopyFromParent, X.InputOnly, X.CopyFromParent,
            event_mask=X.PropertyChangeMask)
        self._data = b""
        self._outgoing: dict[tuple[int, int], _Outgoing] = {}
        self._incoming: _Incoming | None = None
        self._asked = X.NONE  # target of the conversion we are waiting for
        display.xfixes_select_selection_input(
            self._window, self._clipboard, xfixes.XFixesSetSelectionOwnerNotifyMask)

    def set_text(self, text: str) -> None:
        self._data = text.encode()
        for selection in (self._clipboard, Xatom.PRIMARY):
            self._window.set_selection_owner(selection, X.CurrentTime)
        # ICCCM: check that we really own it (a round trip, so it is done before we return)
        if self._d.get_selection_owner(self._clipboard) != self._window:
            log.warning("could not take the CLIPBOARD selection")

    def close(self) -> None:
        self._window.destroy()
        self._d.flush()

    def handle(self, ev: object) -> None:
        if isinstance(ev, xevent.SelectionRequest) and _wid(ev.owner) == self._window.id:
            self._answer(ev)
        elif is_extension_event(self._d, ev, "SetSelectionOwnerNotify"):
            if ev.selection == self._clipboard and _wid(ev.owner) not in (X.NONE, self._window.id):
                self._ask(self._utf8, ev.selection_timestamp)
        elif isinstance(ev, xevent.SelectionNotify) and _wid(ev.requestor) == self._window.id:
            self._received(ev)
        elif isinstance(ev, xevent.PropertyNotify):
            self._property(ev)

    # -- serving our text -------------------------------------------------------------------

    def _answer(self, ev: xevent.SelectionRequest) -> None:
        requestor = self._d.create_resource_object("window", _wid(ev.requestor))
        prop = ev.property or ev.target  # obsolete clients pass None: use the target
        if ev.target == self._targets:
            requestor.change_property(prop, Xatom.ATOM, 32, [self._targets, *self._offers])
        elif ev.target in self._offers:
            target = Xatom.STRING if ev.target == Xatom.STRING else self._utf8
            data = self._data
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
            chunk, out.data = out.data[:_CHUNK], out.data[_CHUNK:]
            out.window.change_property(out.prop, out.target, 8, chunk)
            if not chunk:  # the zero-length chunk ends the transfer
                del self._outgoing[(_wid(ev.window), ev.atom)]
            self._d.flush()
        elif (self._incoming is not None and _wid(ev.window) == self._window.id
              and ev.atom == self._prop and ev.state == X.PropertyNewValue):
            self._incoming_chunk()

    # -- reading what an application copied --------------------------------------------------

    def _ask(self, target: int, timestamp: int) -> None:
        self._asked = target
        self._incoming = None
        self._window.convert_selection(self._clipboard, target, self._prop, timestamp)
        self._d.flush()

    def _received(self, ev: xevent.SelectionNotify) -> None:
        if ev.property == X.NONE:  # the owner has no UTF-8 text: try Latin-1 once
            if self._asked == self._utf8:
                self._ask(Xatom.STRING, ev.time)
            return
        reply = self._window.get_full_property(self._prop, X.AnyPropertyType, sizehint=_CHUNK)
        if reply is None:
            return
        if reply.property_type == self._incr:
            self._incoming = _Incoming()
            self._window.delete_property(self._prop)  # the delete asks for the first chunk
            self._d.flush()
            return
        self._window.delete_property(self._prop)
        self._d.flush()
        self._deliver(bytes(reply.value), reply.property_type)

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
            if incoming.size <= MAX_TEXT_BYTES:
                incoming.chunks.append(chunk)
            return
        self._incoming = None
        if incoming.size <= MAX_TEXT_BYTES:
            self._deliver(b"".join(incoming.chunks), reply.property_type)

    def _deliver(self, data: bytes, prop_type: int) -> None:
        if len(data) > MAX_TEXT_BYTES:
            return
        self._on_copy(data.decode("latin-1") if prop_type == Xatom.STRING else
                      data.decode("utf-8", "replace"))


def _wid(window: Window | int) -> int:
    """A window field of an event as an id (python-xlib gives a Window object or an int)."""
    return getattr(window, "id", window)
