"""One peer's `input` data channel: parse each message, act on it, answer errors."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from Xlib.error import ConnectionClosedError, XError

from session_agent.input import messages as m
from session_agent.input.clipboard import MAX_TEXT_BYTES
from session_agent.input.keymap import keysym_for
from session_agent.input.ratelimit import TokenBucket
from session_agent.input.wheel import WheelAccumulator

if TYPE_CHECKING:
    from session_agent.input.session import InputSession

Send = Callable[[dict[str, Any]], None]
log = logging.getLogger(__name__)


class InputChannel:
    """Handles the messages of one peer's `input` data channel.

    `send` delivers a message to this peer only. The server keeps one InputChannel per peer and
    calls `close()` when the peer goes, so that nothing it held stays pressed. Channels come
    from `InputSession.channel()`, which shares the X connection between them.
    """

    def __init__(self, send: Send, session: InputSession, *, control: bool = True,
                 rate: float = 400.0, burst: float = 800.0) -> None:
        self._send = send
        self._session = session
        self._control = control
        self._bucket = TokenBucket(rate, burst)
        self._wheel = WheelAccumulator()
        self._keys: dict[str, int] = {}  # held: KeyboardEvent.code (or key) -> X keycode
        self._buttons: set[int] = set()
        self._clip: list[str] = []  # pieces of a clipboard text still arriving
        self._clip_bytes = 0
        self._clip_overflow = False
        self._closed = False

    @property
    def holding(self) -> bool:
        """Whether this peer holds a key or a button down right now."""
        return bool(self._keys or self._buttons)

    def send(self, msg: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            self._send(msg)
        except Exception:  # a peer whose transport is gone must not break the others
            log.debug("send to peer failed", exc_info=True)

    def on_message(self, raw: str | bytes) -> None:
        if self._closed:
            return
        if not self._bucket.take():
            self._error("too many messages: slow down")
            return
        try:
            msg = m.parse(raw)
            if not isinstance(msg, (m.Ping, m.Resize)):
                # A person is there (a view-only guest's refused input counts too: they watch).
                self._session.note_activity()
            if not isinstance(msg, m.Ping) and not self._control:
                raise m.ProtocolError("this peer is view-only")
            self._dispatch(msg)
        except m.ProtocolError as exc:
            self._error(str(exc))
        except (XError, ConnectionClosedError) as exc:
            log.warning("X request failed: %s", exc)
            self._error("the display refused the request")
        except Exception:  # a bug must cost this message only, never the peer or the agent
            log.exception("input message failed")
            self._error("internal error")
        self._session.after_input()

    def close(self) -> None:
        """Release every key and button this peer still holds; idempotent."""
        if self._closed:
            return
        self._closed = True
        injector = self._session.injector
        try:
            for keycode in self._keys.values():
                injector.release_keycode(keycode)
            for button in self._buttons:
                injector.button(button, False)
        except (XError, ConnectionClosedError) as exc:
            log.warning("releasing input of a closed channel failed: %s", exc)
        self._keys.clear()
        self._buttons.clear()
        self._session.forget(self)

    def _error(self, message: str) -> None:
        self.send({"type": "error", "message": message})

    def _dispatch(self, msg: m.Message) -> None:
        injector = self._session.injector
        if isinstance(msg, m.Ping):
            self.send({"type": "pong", "t": msg.t})
        elif isinstance(msg, m.Pointer):
            width, height = self._session.size
            if msg.x >= width or msg.y >= height:
                raise m.ProtocolError(f"pointer outside the {width}x{height} screen")
            injector.move(msg.x, msg.y)
        elif isinstance(msg, m.PointerRel):
            injector.move_relative(msg.dx, msg.dy)
        elif isinstance(msg, m.Button):
            if msg.down != (msg.button in self._buttons):
                injector.button(msg.button, msg.down)
                (self._buttons.add if msg.down else self._buttons.discard)(msg.button)
        elif isinstance(msg, m.Wheel):
            for button, clicks in self._wheel.add(msg.dx, msg.dy):
                injector.click(button, clicks)
        elif isinstance(msg, m.Key):
            self._key(msg)
        elif isinstance(msg, m.Clipboard):
            self._clipboard(msg)
        elif isinstance(msg, m.Resize):
            self._session.request_resize(msg.width, msg.height, msg.scale)

    def _key(self, msg: m.Key) -> None:
        injector = self._session.injector
        held_as = msg.code or msg.key
        if not msg.down:
            keycode = self._keys.pop(held_as, None)
            if keycode is not None:  # a key pressed before the channel opened: nothing to do
                injector.release_keycode(keycode)
            return
        keysym = keysym_for(msg.code, msg.key)
        if keysym is None:
            raise m.ProtocolError(f"no X key for code {msg.code!r} key {msg.key!r}")
        if held_as in self._keys:  # browser auto-repeat: release first so counts stay paired
            injector.release_keycode(self._keys.pop(held_as))
        keycode = injector.press_keysym(keysym)
        if keycode is None:
            raise m.ProtocolError("no free keycode to type this character")
        self._keys[held_as] = keycode

    def _clipboard(self, msg: m.Clipboard) -> None:
        if not self._clip_overflow:
            self._clip_bytes += len(msg.text.encode())
            self._clip.append(msg.text)
            if self._clip_bytes > MAX_TEXT_BYTES:
                self._clip_overflow = True
                self._clip.clear()
        if msg.more:
            return
        text, overflow = "".join(self._clip), self._clip_overflow
        self._clip, self._clip_bytes, self._clip_overflow = [], 0, False
        if overflow:
            raise m.ProtocolError(f"clipboard text larger than {MAX_TEXT_BYTES} bytes")
        self._session.set_clipboard(text)
