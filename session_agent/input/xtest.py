"""Inject pointer and keyboard events into X with XTEST.

All requests are one-way and only flushed, so injecting costs no round trip; the keymap is
cached and re-read on MappingNotify. Characters with no key on the keymap are bound to a spare
keycode (one with no keysyms), as neko does. Spare keycodes are reused least-recently-used and
not unbound after the key is released, so an application still reading the previous
MappingNotify never sees a keycode change meaning under it while typing a few distinct
characters.
"""
from __future__ import annotations

from collections import OrderedDict

from Xlib import X, XK
from Xlib.display import Display
from Xlib.ext import xtest

from session_agent.input.keymap import has_case, keysym_char

_SHIFT_L = XK.string_to_keysym("Shift_L")


class Injector:
    def __init__(self, display: Display) -> None:
        self._d = display
        self._root = display.screen().root
        self._min = display.display.info.min_keycode
        self._max = display.display.info.max_keycode
        self._bound: OrderedDict[int, int] = OrderedDict()  # spare keycode -> keysym, LRU first
        self._held_keycodes: dict[int, int] = {}  # keycode -> presses not yet released (all peers)
        self.refresh_keymap()

    def refresh_keymap(self) -> None:
        """Re-read the keymap: where each keysym sits (keycode, shift level) and spare keycodes."""
        syms = self._d.get_keyboard_mapping(self._min, self._max - self._min + 1)
        self._where: dict[int, tuple[int, int]] = {}
        spare = []
        for i, row in enumerate(syms):
            keycode = self._min + i
            if not any(row):
                spare.append(keycode)
            for level in (0, 1):
                if level < len(row) and row[level] and row[level] not in self._where:
                    self._where[row[level]] = (keycode, level)
        # keycodes someone else bound since are no longer ours to reuse
        self._bound = OrderedDict((k, s) for k, s in self._bound.items()
                                  if self._where.get(s, (None,))[0] == k)
        self._spare = [k for k in spare if k not in self._bound and k != self._min]

    def move(self, x: int, y: int) -> None:
        xtest.fake_input(self._d, X.MotionNotify, detail=0, root=self._root, x=x, y=y)
        self._d.flush()

    def move_relative(self, dx: int, dy: int) -> None:
        xtest.fake_input(self._d, X.MotionNotify, detail=1, x=dx, y=dy)
        self._d.flush()

    def button(self, button: int, down: bool) -> None:
        xtest.fake_input(self._d, X.ButtonPress if down else X.ButtonRelease, button)
        self._d.flush()

    def click(self, button: int, times: int) -> None:
        for _ in range(times):
            xtest.fake_input(self._d, X.ButtonPress, button)
            xtest.fake_input(self._d, X.ButtonRelease, button)
        self._d.flush()

    def press_keysym(self, keysym: int) -> int | None:
        """Press the key that types `keysym`; returns the keycode to release later, or None if
        no keycode could be had. For a character, Shift is set as its level needs just for the
        press (the user's layout may differ from the X keymap); other keys keep the modifiers
        the user holds, so that Shift+Arrow still selects."""
        keycode, level = self._locate(keysym)
        if keycode is None:
            return None
        toggle: list[int] = []
        shift_down = False
        if keysym_char(keysym) is not None:
            mask = self._root.query_pointer().mask
            shift_down = bool(mask & X.ShiftMask)
            want_shift = (level == 1) != bool(mask & X.LockMask and has_case(keysym))
            if want_shift != shift_down:
                toggle = self._held_shift_keycodes() if shift_down else self._shift_l()
        before, after = (X.KeyRelease, X.KeyPress) if shift_down else (X.KeyPress, X.KeyRelease)
        for k in toggle:
            xtest.fake_input(self._d, before, k)
        xtest.fake_input(self._d, X.KeyPress, keycode)
        for k in toggle:
            xtest.fake_input(self._d, after, k)
        self._d.flush()
        self._held_keycodes[keycode] = self._held_keycodes.get(keycode, 0) + 1
        return keycode

    def release_keycode(self, keycode: int) -> None:
        count = self._held_keycodes.get(keycode, 0)
        if count <= 1:
            self._held_keycodes.pop(keycode, None)
        else:
            self._held_keycodes[keycode] = count - 1
        xtest.fake_input(self._d, X.KeyRelease, keycode)
        self._d.flush()

    def _held_shift_keycodes(self) -> list[int]:
        """Every Shift key down: all of them must come up for the level to drop."""
        keys = self._d.query_keymap()
        return [k for k in self._d.get_modifier_mapping()[X.ShiftMapIndex]
                if k and keys[k // 8] & (1 << (k % 8))]

    def _shift_l(self) -> list[int]:
        keycode = self._where.get(_SHIFT_L, (None, 0))[0]
        return [keycode] if keycode else []

    def _locate(self, keysym: int) -> tuple[int | None, int]:
        if keysym in self._where:
            keycode, level = self._where[keysym]
            if keycode in self._bound:
                self._bound.move_to_end(keycode)
            return keycode, level
        keycode = self._spare_keycode()
        if keycode is None:
            return None, 0
        # both levels the same keysym, so Shift held by the user does not change it
        self._d.change_keyboard_mapping(keycode, [(keysym, keysym)])
        self._where[keysym] = (keycode, 0)
        self._bound[keycode] = keysym
        return keycode, 0

    def _spare_keycode(self) -> int | None:
        if self._spare:
            return self._spare.pop()
        for keycode, old in self._bound.items():  # least recently used first
            if keycode not in self._held_keycodes:
                del self._bound[keycode]
                self._where.pop(old, None)
                return keycode
        return None
