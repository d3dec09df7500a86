"""Browser `KeyboardEvent` (code, key) to an X keysym, pure.

`key` says what the user meant on their own layout, so a printable `key` wins: the agent then
finds (or binds) a keycode for that keysym and the application sees the same character whatever
the X keymap is. `code` decides left/right modifiers and the keypad, and is the fallback when
`key` names no character (dead keys, IME "Process", "Unidentified").
"""
from __future__ import annotations

from Xlib import XK

# KeyboardEvent.key names that are not characters, as X keysym names.
_KEY_NAMES = {
    "Enter": "Return", "Tab": "Tab", "Backspace": "BackSpace", "Escape": "Escape",
    "Delete": "Delete", "Insert": "Insert", "Home": "Home", "End": "End",
    "PageUp": "Prior", "PageDown": "Next", "ArrowLeft": "Left", "ArrowRight": "Right",
    "ArrowUp": "Up", "ArrowDown": "Down", "CapsLock": "Caps_Lock", "NumLock": "Num_Lock",
    "ScrollLock": "Scroll_Lock", "Pause": "Pause", "PrintScreen": "Print",
    "ContextMenu": "Menu", "AltGraph": "ISO_Level3_Shift", "Shift": "Shift_L",
    "Control": "Control_L", "Alt": "Alt_L", "Meta": "Super_L", "OS": "Super_L",
    "Super": "Super_L", "Clear": "Clear", "Help": "Help", "Cancel": "Cancel",
    **{f"F{n}": f"F{n}" for n in range(1, 25)},
}

# KeyboardEvent.code values whose keysym must come from the code, whatever `key` says: sided
# modifiers, and keypad keys that are no character. Keypad digits go by `key` ("7" with NumLock
# on at the client, "Home" with it off) since KP_7 would depend on the X server's NumLock.
_CODE_FIRST = {
    "ShiftLeft": "Shift_L", "ShiftRight": "Shift_R", "ControlLeft": "Control_L",
    "ControlRight": "Control_R", "AltLeft": "Alt_L", "AltRight": "Alt_R",
    "MetaLeft": "Super_L", "MetaRight": "Super_R", "OSLeft": "Super_L", "OSRight": "Super_R",
    "NumpadEnter": "KP_Enter", "NumpadAdd": "KP_Add", "NumpadSubtract": "KP_Subtract",
    "NumpadMultiply": "KP_Multiply", "NumpadDivide": "KP_Divide",
}

# US-layout fallback by physical position, for keys whose `key` is no character.
_CODE_US = {
    **{f"Key{c}": c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **{f"Digit{n}": str(n) for n in range(10)},
    "Space": "space", "Minus": "minus", "Equal": "equal", "BracketLeft": "bracketleft",
    "BracketRight": "bracketright", "Backslash": "backslash", "Semicolon": "semicolon",
    "Quote": "apostrophe", "Backquote": "grave", "Comma": "comma", "Period": "period",
    "Slash": "slash", "IntlBackslash": "less",
}


def char_keysym(ch: str) -> int | None:
    """The keysym of one character: Latin-1 keysyms equal the code point, others are
    0x01000000 + code point (X11 Unicode keysyms). Control characters have none."""
    cp = ord(ch)
    if cp < 0x20 or 0x7F <= cp < 0xA0 or 0xD800 <= cp < 0xE000:
        return None
    return cp if cp <= 0xFF else 0x01000000 | cp


def keysym_for(code: str, key: str) -> int | None:
    """The keysym for a browser key event, or None when neither field names a key."""
    if code in _CODE_FIRST:
        return XK.string_to_keysym(_CODE_FIRST[code])
    if len(key) == 1:  # json.loads joins surrogate pairs, so any one character is len 1
        return char_keysym(key)
    if key in _KEY_NAMES:
        return XK.string_to_keysym(_KEY_NAMES[key])
    if code in _CODE_US:
        return XK.string_to_keysym(_CODE_US[code])
    return None


def keysym_char(keysym: int) -> str | None:
    """The character a keysym types (inverse of char_keysym, for keysyms it produces)."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if keysym & 0xFF000000 == 0x01000000:
        return chr(keysym & 0x00FFFFFF)
    return None


def has_case(keysym: int) -> bool:
    """Whether Caps Lock changes this keysym's level (letters with an upper and lower case)."""
    ch = keysym_char(keysym)
    return ch is not None and ch.lower() != ch.upper()
