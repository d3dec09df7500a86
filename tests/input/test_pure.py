"""The pure parts: message validation, keysym mapping, wheel accumulation, the rate bucket."""
from __future__ import annotations

import json

import pytest
from Xlib import XK

from session_agent.input import messages as m
from session_agent.input.keymap import char_keysym, has_case, keysym_char, keysym_for
from session_agent.input.ratelimit import TokenBucket
from session_agent.input.wheel import MAX_NOTCHES, WheelAccumulator


@pytest.mark.parametrize("msg, parsed", [
    ({"type": "pointer", "x": 10, "y": 20.6}, m.Pointer(10, 20)),
    ({"type": "pointer_rel", "dx": -5, "dy": 3}, m.PointerRel(-5, 3)),
    ({"type": "button", "button": 3, "down": True}, m.Button(3, True)),
    ({"type": "wheel", "dx": 0, "dy": -12.5}, m.Wheel(0, -12.5)),
    ({"type": "key", "code": "KeyA", "key": "a", "down": False}, m.Key("KeyA", "a", False)),
    ({"type": "key", "key": "ñ", "down": True}, m.Key("", "ñ", True)),
    ({"type": "clipboard", "text": "x"}, m.Clipboard("x", False)),
    ({"type": "clipboard", "text": "x", "more": True}, m.Clipboard("x", True)),
    ({"type": "resize", "width": 1000, "height": 700}, m.Resize(1000, 700)),
    ({"type": "resize", "width": 2000, "height": 1400, "scale": 2}, m.Resize(2000, 1400, 2)),
    ({"type": "resize", "width": 1500, "height": 1050, "scale": 1.5}, m.Resize(1500, 1050, 1.5)),
    ({"type": "resize", "width": 800, "height": 600, "scale": 4}, m.Resize(800, 600, 4)),
    ({"type": "ping", "t": 1.5}, m.Ping(1.5)),
    ({"type": "ping"}, m.Ping(None)),
    ({"type": "pointer", "x": 1, "y": 2, "extra": "ignored"}, m.Pointer(1, 2)),
])
def test_valid_messages(msg: dict, parsed: m.Message) -> None:
    assert m.parse(json.dumps(msg)) == parsed
    assert m.parse(json.dumps(msg).encode()) == parsed


@pytest.mark.parametrize("raw", [
    "", "{", "[1]", "null", '"ping"', '{"type": 1}', '{"type": "Pointer"}',
    '{"type": "pointer", "x": 1}', '{"type": "pointer", "x": 1, "y": 70000}',
    '{"type": "pointer", "x": true, "y": 1}', '{"type": "pointer", "x": Infinity, "y": 1}',
    '{"type": "pointer_rel", "dx": 10001, "dy": 0}', '{"type": "button", "button": 5, "down": true}',
    '{"type": "button", "button": 1, "down": 1}', '{"type": "button", "button": true, "down": true}',
    '{"type": "wheel", "dx": NaN, "dy": 0}', '{"type": "key", "down": true}',
    '{"type": "key", "code": "KeyA", "key": "a"}', '{"type": "key", "code": 1, "key": "a", "down": true}',
    '{"type": "key", "code": "' + "K" * 33 + '", "down": true}', '{"type": "clipboard"}',
    '{"type": "clipboard", "text": "\\ud800"}', '{"type": "clipboard", "text": "", "more": 1}',
    '{"type": "resize", "width": 0, "height": 10}', '{"type": "resize", "width": 9, "height": 9, "scale": 0.5}',
    '{"type": "resize", "width": 9, "height": 9, "scale": 4.01}', '{"type": "resize", "width": 9, "height": 9, "scale": "2"}',
    '{"type": "resize", "width": 9, "height": 9, "scale": true}', '{"type": "resize", "width": 9, "height": 9, "scale": null}',
    '{"type": "resize", "width": 9, "height": 9, "scale": NaN}', '{"type": "ping", "t": [1]}',
    '{"type": "ping", "t": NaN}', '{"type": "ping", "t": "' + "t" * 65 + '"}',
    "[" * 100_000, " " * (m.MAX_MESSAGE_BYTES + 1), b"\xff",
])
def test_malformed_messages_are_protocol_errors(raw: str | bytes) -> None:
    with pytest.raises(m.ProtocolError) as err:
        m.parse(raw)
    assert str(err.value)


def ks(name: str) -> int:
    return XK.string_to_keysym(name)


@pytest.mark.parametrize("code, key, keysym", [
    ("KeyA", "a", ord("a")), ("KeyA", "A", ord("A")), ("KeyQ", "a", ord("a")),  # AZERTY: key wins
    ("Digit2", "é", 0xE9), ("", "€", 0x010020AC), ("", "漢", 0x01006F22), ("", "😀", 0x0101F600),
    ("ShiftRight", "Shift", ks("Shift_R")), ("ControlLeft", "Control", ks("Control_L")),
    ("AltRight", "AltGraph", ks("Alt_R")), ("MetaLeft", "Meta", ks("Super_L")),
    ("Enter", "Enter", ks("Return")), ("NumpadEnter", "Enter", ks("KP_Enter")),
    ("Numpad7", "7", ord("7")), ("Numpad7", "Home", ks("Home")), ("NumpadAdd", "+", ks("KP_Add")),
    ("ArrowUp", "ArrowUp", ks("Up")),
    ("F5", "F5", ks("F5")), ("KeyE", "Dead", ord("e")), ("Space", " ", ord(" ")),
    ("KeyA", "Unidentified", ord("a")), ("", "Tab", ks("Tab")),
])
def test_keysym_for(code: str, key: str, keysym: int) -> None:
    assert keysym_for(code, key) == keysym


def test_no_keysym_for_nonsense_or_control_characters() -> None:
    assert keysym_for("Nonsense", "Nonsense") is None
    assert keysym_for("", "\x07") is None
    assert char_keysym("\ud800") is None


def test_keysym_char_inverts_char_keysym() -> None:
    for ch in "aZ~ ñÿ€漢😀":
        assert keysym_char(char_keysym(ch)) == ch
    assert has_case(ord("a")) and has_case(0x01000000 | ord("ж")) and not has_case(ord("1"))


def test_wheel_notches_and_trackpad_accumulation() -> None:
    wheel = WheelAccumulator()
    assert wheel.add(0, 100) == [(5, 1)]
    assert wheel.add(0, -250) == [(4, 2)]
    assert wheel.add(0, -40) == []  # with the 50 left over: 90
    assert wheel.add(0, -10) == [(4, 1)]
    assert wheel.add(30, 0) == [] and wheel.add(30, 0) == [] and wheel.add(40, 0) == [(7, 1)]


def test_wheel_direction_change_drops_the_remainder() -> None:
    wheel = WheelAccumulator()
    assert wheel.add(0, 90) == []
    assert wheel.add(0, -20) == []  # not a notch down, and not 70 toward one either
    assert wheel.add(0, -80) == [(4, 1)]


def test_wheel_caps_clicks_per_event() -> None:
    assert WheelAccumulator().add(-10000, 0) == [(6, MAX_NOTCHES)]


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.1
    assert bucket.take() and not bucket.take()
    now[0] = 100.0
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
