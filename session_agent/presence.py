"""Several people in one session: roles on the input channel, the floor, pointers, the owner's list.

One `Presence` per agent, next to the `ViewerRegistry` (viewers.py) and the `InputSession`. A
transport asks it for each viewer's input channel (`channel(send, peer)`, after registering the
viewer) and it acts as that channel's gate (input/channel.py `Gate`): a `view` viewer's input
is refused, `control` viewers take turns by the floor (floor.py), and only the owner hands
control over. Agent -> client messages it adds (docs/PROTOCOL.md):

- `{"type":"viewers","viewers":[…]}` to every owner viewer whenever someone joins or leaves;
- `{"type":"pointer","id","label","x","y"}` to the others (at most POINTER_HZ per participant;
  `"gone":true` when one leaves), drawn by each client, never by X; `id` names the pointer, not
  the peer (peer ids go to owners only);
- `{"type":"control","role","exclusive","holder"}` to each viewer: its role, whether the owner
  holds control alone, and who holds a button or key now;
- `{"type":"disconnect","reason":"revoked"|"expired","message"}` just before a share's viewer
  is closed, so its page says so instead of reconnecting.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from session_agent.floor import Floor, Kind
from session_agent.input import messages as m
from session_agent.input.channel import InputChannel, Send
from session_agent.input.session import InputSession
from session_agent.viewers import Viewer, ViewerRegistry

log = logging.getLogger(__name__)

POINTER_HZ = 30.0
ENDED_MESSAGE = "this link was revoked or has expired"

_KINDS: dict[type, Kind] = {m.Pointer: "move", m.PointerRel: "move", m.Wheel: "wheel",
                            m.Clipboard: "clipboard", m.Resize: "resize"}


def kind_of(msg: m.Message) -> Kind:
    if isinstance(msg, (m.Button, m.Key)):
        return "press" if msg.down else "release"
    return _KINDS.get(type(msg), "other")


@dataclass
class _Pointer:
    id: str = field(default_factory=lambda: secrets.token_hex(6))  # never the peer id (see below)
    x: int = 0
    y: int = 0
    sent: float = -1.0  # monotonic time of the last broadcast
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Presence:
    def __init__(self, registry: ViewerRegistry, input_session: InputSession) -> None:
        self.registry = registry
        self.input = input_session
        self.floor = Floor()
        self._channels: dict[str, InputChannel] = {}
        # id(channel) -> (peer, role), fixed when the channel is made; a channel not in here
        # (its peer is gone) is refused everything, whatever it sends
        self._peer_of: dict[int, tuple[str, str]] = {}
        self._pointers: dict[str, _Pointer] = {}
        registry.on_change(self._viewers_changed)
        registry.on_ending(self._ending)

    # -- for the transports ----------------------------------------------------------------

    def channel(self, send: Send, peer: str) -> InputChannel:
        """The input channel of a registered viewer (unknown peers are the owner, as before)."""
        role = self._role(peer)
        channel = self.input.channel(send, control=role != "view", gate=self)
        old = self._channels.get(peer)
        if old is not None:  # a second `input` channel of one peer replaces the first
            self._peer_of.pop(id(old), None)
        self._channels[peer] = channel
        self._peer_of[id(channel)] = (peer, role)
        channel.send(self._control_message(peer))
        if role == "owner":
            channel.send(self._viewers_message())
        for other, pointer in self._pointers.items():  # where everybody points already
            if other != peer and pointer.sent >= 0:
                channel.send(self._pointer_message(other, pointer))
        return channel

    def closed(self, peer: str) -> None:
        """The viewer's channel is gone (call after `channel.close()`)."""
        channel = self._channels.pop(peer, None)
        if channel is not None:
            self._peer_of.pop(id(channel), None)
        pointer = self._pointers.pop(peer, None)
        if pointer is not None:
            if pointer.timer is not None:
                pointer.timer.cancel()
            self._broadcast({"type": "pointer", "id": pointer.id, "gone": True}, skip=peer)
        if self.floor.leave(peer):
            self._control_changed()

    # -- Gate (input/channel.py) -------------------------------------------------------------

    def admit(self, channel: InputChannel, msg: m.Message) -> str | None:
        known = self._peer_of.get(id(channel))
        if known is None:
            return "this channel's viewer has left"
        peer, role = known
        if isinstance(msg, m.Control):
            return None if role == "owner" else "only the session's owner hands control over"
        holder = self.registry.get(self.floor.holder) if self.floor.holder else None
        return self.floor.refusal(peer, role, kind_of(msg), holder.label if holder else "someone")

    def done(self, channel: InputChannel, msg: m.Message) -> None:
        known = self._peer_of.get(id(channel))
        if known is None:
            return
        peer = known[0]
        if isinstance(msg, m.Control):
            self._set_exclusive(msg.exclusive)
        elif isinstance(msg, (m.Pointer, m.Point)):
            self._pointer(peer, msg.x, msg.y)
        elif isinstance(msg, (m.Button, m.Key)):
            if self.floor.update(peer, channel.holding):
                self._control_changed()

    # -- state -----------------------------------------------------------------------------

    def _role(self, peer: str) -> str:
        viewer = self.registry.get(peer)
        return viewer.role if viewer is not None else "owner"

    def _set_exclusive(self, exclusive: bool) -> None:
        holder = self.floor.holder
        if self.floor.set_exclusive(exclusive, self._role(holder) if holder else None):
            assert holder is not None
            self._channels[holder].release_all()  # the owner's click takes the mouse at once
            self.floor.leave(holder)
        log.info("control changed", extra={"action": "control_exclusive", "exclusive": exclusive})
        self._control_changed()

    def _control_message(self, peer: str) -> dict[str, Any]:
        holder = self.registry.get(self.floor.holder) if self.floor.holder else None
        return {"type": "control", "role": self._role(peer), "exclusive": self.floor.exclusive,
                "holder": holder.label if holder else None,
                "holding": self.floor.holder == peer}

    def _control_changed(self) -> None:
        for peer, channel in list(self._channels.items()):
            channel.send(self._control_message(peer))

    def _viewers_message(self) -> dict[str, Any]:
        return {"type": "viewers", "viewers": [v.public() for v in self.registry.list()]}

    def _viewers_changed(self) -> None:
        message = self._viewers_message()
        for peer, channel in list(self._channels.items()):
            if self._role(peer) == "owner":
                channel.send(message)

    def _ending(self, viewer: Viewer, reason: str) -> None:
        channel = self._channels.get(viewer.peer)
        if channel is not None:
            channel.send({"type": "disconnect", "reason": reason, "message": ENDED_MESSAGE})

    # -- pointers ----------------------------------------------------------------------------

    def _pointer(self, peer: str, x: int, y: int) -> None:
        """Remember where `peer` points; tell the others now, or when its interval is over
        (the latest position then): at most POINTER_HZ messages per participant."""
        pointer = self._pointers.setdefault(peer, _Pointer())
        pointer.x, pointer.y = x, y
        if pointer.timer is not None:
            return
        wait = pointer.sent + 1.0 / POINTER_HZ - time.monotonic()
        if wait <= 0:
            self._send_pointer(peer)
        else:
            pointer.timer = asyncio.get_running_loop().call_later(wait, self._send_pointer, peer)

    def _send_pointer(self, peer: str) -> None:
        pointer = self._pointers.get(peer)
        if pointer is None:
            return
        pointer.timer = None
        pointer.sent = time.monotonic()
        self._broadcast(self._pointer_message(peer, pointer), skip=peer)

    def _pointer_message(self, peer: str, pointer: _Pointer) -> dict[str, Any]:
        viewer = self.registry.get(peer)
        # A pointer is named by an id of its own: a peer id would let a guest end that peer.
        return {"type": "pointer", "id": pointer.id, "label": viewer.label if viewer else "owner",
                "x": pointer.x, "y": pointer.y}

    def _broadcast(self, message: dict[str, Any], skip: str | None = None) -> None:
        for peer, channel in list(self._channels.items()):
            if peer != skip:
                channel.send(message)
