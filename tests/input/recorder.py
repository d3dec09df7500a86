"""The two ends an input test looks at: a full-screen X window recording the input events it
receives, and a peer's end of a channel (what the agent sent it)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from Xlib import X
from Xlib.display import Display

from session_agent.input.keymap import keysym_char

TIMEOUT = 10.0  # generous: only a broken agent ever waits this long


@dataclass(frozen=True)
class Seen:
    kind: str  # "key", "button", "motion"
    down: bool = False
    detail: int = 0  # button number or keysym
    x: int = 0
    y: int = 0
    state: int = 0

    @property
    def char(self) -> str | None:
        return keysym_char(self.detail) if self.kind == "key" else None


class Recorder:
    def __init__(self, display_name: str) -> None:
        self.d = d = Display(display_name)
        screen = d.screen()
        geom = screen.root.get_geometry()
        self.window = screen.root.create_window(
            0, 0, geom.width, geom.height, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            override_redirect=True, background_pixel=screen.black_pixel,
            event_mask=X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask
            | X.ButtonReleaseMask | X.PointerMotionMask)
        self.window.map()
        self.window.set_input_focus(X.RevertToParent, X.CurrentTime)
        d.sync()
        self.seen: list[Seen] = []

    def close(self) -> None:
        self.d.close()

    def _pump(self) -> None:
        while self.d.pending_events():
            ev = self.d.next_event()
            if ev.type == X.MappingNotify:
                self.d.refresh_keyboard_mapping(ev)
            elif ev.type in (X.KeyPress, X.KeyRelease):
                # translate now: the keymap may change again (spare keycodes get rebound)
                shifted = ev.state & X.ShiftMask and self.d.keycode_to_keysym(ev.detail, 1)
                keysym = shifted or self.d.keycode_to_keysym(ev.detail, 0)  # as Xlib does
                self.seen.append(Seen("key", ev.type == X.KeyPress, keysym, state=ev.state))
            elif ev.type in (X.ButtonPress, X.ButtonRelease):
                self.seen.append(Seen("button", ev.type == X.ButtonPress, ev.detail, ev.root_x,
                                      ev.root_y, ev.state))
            elif ev.type == X.MotionNotify:
                self.seen.append(Seen("motion", x=ev.root_x, y=ev.root_y, state=ev.state))

    async def wait_for(self, done: Callable[[list[Seen]], bool]) -> list[Seen]:
        await _wait_readable(self.d, self._pump, lambda: done(self.seen))
        return self.seen

    def typed(self) -> str:
        return "".join(s.char or "" for s in self.seen if s.kind == "key" and s.down)

    def pointer(self) -> tuple[int, int]:
        p = self.d.screen().root.query_pointer()
        return p.root_x, p.root_y


async def _wait_readable(d: Display, pump: Callable[[], None], done: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(d.fileno(), readable.set)
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                pump()
                if done():
                    return
                d.sync()  # a round trip so that events sent before now are in
                pump()
                if done():
                    return
                readable.clear()
                await readable.wait()
    finally:
        loop.remove_reader(d.fileno())


class Peer:
    """The messages an InputChannel sends to its peer, with a way to wait for one."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def send(self, msg: dict[str, Any]) -> None:
        self.got.append(msg)
        self._changed.set()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [msg for msg in self.got if msg["type"] == kind]

    async def wait_for(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        async with asyncio.timeout(TIMEOUT):
            while not done(self.got):
                self._changed.clear()
                await self._changed.wait()
        return self.got
