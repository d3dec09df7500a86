"""Every input message type against a real Xvfb, checked by what a real X window receives."""
from __future__ import annotations

import asyncio
import json

from Xlib import X, XK
from Xlib.display import Display

from session_agent.input.session import InputSession
from tests.input.recorder import Peer, Recorder, Seen
from tests.xserver import Xvfb


def j(**msg: object) -> str:
    return json.dumps(msg)


def key_events(seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if s.kind == "key"]


def type_text(channel, text: str) -> None:
    """What a browser sends for typing `text` on a US layout: Shift around capitals."""
    for ch in text:
        shifted = ch.isupper() or ch in '!@#$%^&*()_+{}|:"<>?~'
        if shifted:
            channel.on_message(j(type="key", code="ShiftLeft", key="Shift", down=True))
        code = f"Key{ch.upper()}" if ch.isascii() and ch.isalpha() else ""
        channel.on_message(j(type="key", code=code, key=ch, down=True))
        channel.on_message(j(type="key", code=code, key=ch, down=False))
        if shifted:
            channel.on_message(j(type="key", code="ShiftLeft", key="Shift", down=False))


async def test_pointer_absolute_and_relative(session: InputSession, recorder: Recorder) -> None:
    ch = session.channel(Peer().send)
    ch.on_message(j(type="pointer", x=100, y=200))
    await recorder.wait_for(lambda seen: any(s.kind == "motion" and (s.x, s.y) == (100, 200) for s in seen))
    ch.on_message(j(type="pointer_rel", dx=-30, dy=15))
    await recorder.wait_for(lambda seen: any(s.kind == "motion" and (s.x, s.y) == (70, 215) for s in seen))
    assert recorder.pointer() == (70, 215)


async def test_buttons_and_release_on_close(session: InputSession, recorder: Recorder) -> None:
    ch = session.channel(Peer().send)
    ch.on_message(j(type="pointer", x=10, y=10))
    for button in (1, 2, 3, 8, 9):
        ch.on_message(j(type="button", button=button, down=True))
        ch.on_message(j(type="button", button=button, down=False))
    ch.on_message(j(type="button", button=1, down=True))
    ch.close()  # the peer went with button 1 down: it must come up
    seen = await recorder.wait_for(lambda seen: len([s for s in seen if s.kind == "button"]) == 12)
    buttons = [(s.detail, s.down) for s in seen if s.kind == "button"]
    assert buttons == [(b, d) for b in (1, 2, 3, 8, 9) for d in (True, False)] + [(1, True), (1, False)]
    assert recorder.d.screen().root.query_pointer().mask & X.Button1Mask == 0


async def test_wheel_directions_and_accumulation(session: InputSession, recorder: Recorder) -> None:
    ch = session.channel(Peer().send)
    ch.on_message(j(type="pointer", x=10, y=10))
    ch.on_message(j(type="wheel", dx=0, dy=100))   # down: 5
    ch.on_message(j(type="wheel", dx=0, dy=-200))  # up: 4 twice
    ch.on_message(j(type="wheel", dx=100, dy=0))   # right: 7
    ch.on_message(j(type="wheel", dx=-100, dy=0))  # left: 6
    for _ in range(4):  # a trackpad: four small deltas make one notch, not four
        ch.on_message(j(type="wheel", dx=0, dy=25))
    seen = await recorder.wait_for(lambda seen: len([s for s in seen if s.kind == "button"]) == 12)
    presses = [s.detail for s in seen if s.kind == "button" and s.down]
    assert presses == [5, 4, 4, 7, 6, 5]


async def test_typing_with_shift(session: InputSession, recorder: Recorder) -> None:
    ch = session.channel(Peer().send)
    type_text(ch, "Hello, World!")
    await recorder.wait_for(lambda seen: recorder.typed().endswith("!"))
    assert recorder.typed() == "Hello, World!"


async def test_characters_off_the_keymap_still_type(session: InputSession, recorder: Recorder) -> None:
    ch = session.channel(Peer().send)
    text = "ñ€漢😀ñ"  # none of these is on Xvfb's US keymap
    for c in text:
        ch.on_message(j(type="key", code="", key=c, down=True))
        ch.on_message(j(type="key", code="", key=c, down=False))
    await recorder.wait_for(lambda seen: len([s for s in key_events(seen) if s.down]) == len(text))
    assert recorder.typed() == text


async def test_shift_held_by_user_does_not_change_a_character_typed_without_it(
        session: InputSession, recorder: Recorder) -> None:
    # a layout where "1" needs Shift reaches us as Shift down + key "1": the agent drops Shift
    ch = session.channel(Peer().send)
    ch.on_message(j(type="key", code="ShiftLeft", key="Shift", down=True))
    ch.on_message(j(type="key", code="Digit1", key="1", down=True))
    ch.on_message(j(type="key", code="Digit1", key="1", down=False))
    ch.on_message(j(type="key", code="ShiftLeft", key="Shift", down=False))
    ch.on_message(j(type="key", code="Digit1", key="!", down=True))  # and the other way round
    ch.on_message(j(type="key", code="Digit1", key="!", down=False))
    await recorder.wait_for(lambda seen: recorder.typed().endswith("!"))
    assert recorder.typed() == "1!"


async def test_keys_held_when_the_peer_goes_are_released(session: InputSession, recorder: Recorder) -> None:
    ch = session.channel(Peer().send)
    ch.on_message(j(type="key", code="ControlLeft", key="Control", down=True))
    ch.on_message(j(type="key", code="KeyA", key="a", down=True))
    ch.on_message(j(type="key", code="", key="ñ", down=True))
    ch.close()
    seen = await recorder.wait_for(lambda seen: len(key_events(seen)) == 6)
    assert [s.down for s in key_events(seen)] == [True] * 3 + [False] * 3
    assert not any(recorder.d.query_keymap())


async def test_ping_and_errors_keep_the_channel_open(session: InputSession, recorder: Recorder) -> None:
    peer = Peer()
    ch = session.channel(peer.send)
    width, height = session.size
    bad = [
        b"\xff\xfe", "not json", "[]", j(type=5), j(type="nope"), j(type="pointer", x=width, y=0),
        j(type="pointer", x=-1, y=0), j(type="pointer", x="1", y=2), j(type="pointer", x=True, y=2),
        j(type="button", button=4, down=True), j(type="button", button=1, down="yes"),
        j(type="key", code="", key="", down=True), j(type="key", code="Nonsense", key="Nonsense", down=True),
        j(type="wheel", dx=0, dy=1e9), j(type="resize", width=0, height=100),
        j(type="clipboard", text=None), '{"type":"ping","t":NaN}', "x" * 300_000,
    ]
    for raw in bad:
        ch.on_message(raw)
    ch.on_message(j(type="ping", t=42))
    errors = peer.of_type("error")
    assert len(errors) == len(bad) and all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert peer.got[-1] == {"type": "pong", "t": 42}
    await recorder.wait_for(lambda seen: True)
    assert [s for s in recorder.seen if s.kind in ("key", "button")] == []


async def test_view_only_peer_can_ping_but_not_drive(session: InputSession, recorder: Recorder) -> None:
    peer = Peer()
    ch = session.channel(peer.send, control=False)
    ch.on_message(j(type="button", button=1, down=True))
    ch.on_message(j(type="ping", t="a"))
    assert peer.of_type("error") and peer.got[-1] == {"type": "pong", "t": "a"}
    await recorder.wait_for(lambda seen: True)
    assert [s for s in recorder.seen if s.kind == "button"] == []


async def test_rate_limit_answers_error(xvfb) -> None:
    session = InputSession(xvfb.display, rate=1.0, burst=5)
    await session.start()
    try:
        peer = Peer()
        ch = session.channel(peer.send)
        for t in range(10):
            ch.on_message(j(type="ping", t=t))
        assert len(peer.of_type("pong")) == 5
        assert len(peer.of_type("error")) == 5
    finally:
        await session.stop()


async def test_new_channel_gets_size_and_cursor(session: InputSession) -> None:
    peer = Peer()
    session.channel(peer.send)
    assert peer.got[0] == {"type": "resized", "width": 1280, "height": 720}
    assert peer.got[1]["type"] == "cursor"


async def test_x_autorepeat_is_off_while_the_agent_runs(xvfb: Xvfb) -> None:
    # browsers repeat held keys themselves; X repeating too would double every repeat
    d = Display(xvfb.display)
    try:
        session = InputSession(xvfb.display)
        await session.start()
        assert d.get_keyboard_control().global_auto_repeat == X.AutoRepeatModeOff
        await session.stop()
        assert d.get_keyboard_control().global_auto_repeat == X.AutoRepeatModeOn
    finally:
        d.close()


async def test_browser_auto_repeat_repeats_the_key(session: InputSession, recorder: Recorder) -> None:
    ch = session.channel(Peer().send)
    for _ in range(3):
        ch.on_message(j(type="key", code="KeyB", key="b", down=True))
    ch.on_message(j(type="key", code="KeyB", key="b", down=False))
    seen = await recorder.wait_for(lambda seen: len(key_events(seen)) == 6)
    assert recorder.typed() == "bbb" and [s.down for s in key_events(seen)] == [True, False] * 3


async def test_x_server_gone_means_errors_not_a_crash(xvfb: Xvfb) -> None:
    session = InputSession(xvfb.display)
    await session.start()
    peer = Peer()
    ch = session.channel(peer.send)
    xvfb.stop()
    await asyncio.sleep(0)  # let the loop see the closed socket
    ch.on_message(j(type="key", code="KeyA", key="a", down=True))
    ch.on_message(j(type="pointer", x=1, y=1))
    ch.on_message(j(type="ping", t=7))
    assert [m["type"] for m in peer.got[-3:]] == ["error", "error", "pong"]
    await session.stop()


async def test_shift_stays_down_for_keys_that_are_no_character(session: InputSession, recorder: Recorder) -> None:
    # Shift+Arrow selects: the agent must not drop Shift as it does for characters
    ch = session.channel(Peer().send)
    ch.on_message(j(type="key", code="ShiftLeft", key="Shift", down=True))
    ch.on_message(j(type="key", code="ArrowRight", key="ArrowRight", down=True))
    ch.on_message(j(type="key", code="ArrowRight", key="ArrowRight", down=False))
    ch.on_message(j(type="key", code="ShiftLeft", key="Shift", down=False))
    seen = await recorder.wait_for(lambda seen: len(key_events(seen)) == 4)
    assert [(s.down, s.detail) for s in key_events(seen)] == [
        (True, XK.XK_Shift_L), (True, XK.XK_Right), (False, XK.XK_Right), (False, XK.XK_Shift_L)]
    assert key_events(seen)[1].state & X.ShiftMask
