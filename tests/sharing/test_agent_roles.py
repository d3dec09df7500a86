"""Roles enforced by a real agent process (real Xvfb, real aiortc viewers, X input read back):
a `view` viewer's input never reaches X, control participants take turns, the owner takes
control back, revocation and expiry disconnect, the owner's list follows joins and leaves."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.agent_process import start_agent
from tests.input.recorder import Recorder
from tests.whep_client import Viewer
from tests.xserver import start_xvfb


@pytest.fixture
def agent():
    x = start_xvfb("640x480")
    agent = start_agent(x.display)
    yield agent
    agent.stop()
    x.stop()


def guest(share: str, role: str, label: str = "guest", expires: float | None = None) -> dict[str, str]:
    headers = {"X-Viewer-Role": role, "X-Viewer-Share": share, "X-Viewer-Label": label}
    if expires is not None:
        headers["X-Viewer-Expires"] = str(int(expires))
    return headers


async def join(agent, headers: dict[str, str] | None = None) -> Viewer:
    viewer = Viewer(agent.url, token=agent.token, headers=headers or {})
    await viewer.connect()
    return viewer


async def errors_after(viewer: Viewer, message: dict) -> str:
    viewer.send(message)
    return (await viewer.receive("error"))["message"]


async def agent_get(agent, path: str, token: str | None = None):
    async with aiohttp.ClientSession() as http:
        async with http.get(agent.url + path, headers={"Authorization": f"Bearer {token or agent.token}"}) as r:
            return r.status, await r.json()


async def agent_post(agent, path: str, body, token: str | None = None):
    async with aiohttp.ClientSession() as http:
        async with http.post(agent.url + path, json=body,
                             headers={"Authorization": f"Bearer {token or agent.token}"}) as r:
            return r.status, await r.json()


async def test_view_only_input_never_reaches_x_and_control_does(agent):
    recorder = Recorder(agent.display)
    owner = await join(agent)
    watcher = await join(agent, guest("shview", "view", "Vera"))
    helper = await join(agent, guest("shctl", "control", "Carl"))
    try:
        assert (await watcher.receive("control"))["role"] == "view"
        assert (await helper.receive("control"))["role"] == "control"
        assert (await owner.receive("control"))["role"] == "owner"
        # Everything a view-only guest could send is refused by the agent with an error.
        for message in ({"type": "key", "code": "KeyV", "key": "v", "down": True},
                        {"type": "button", "button": 1, "down": True},
                        {"type": "pointer", "x": 10, "y": 10},
                        {"type": "wheel", "dx": 0, "dy": 120},
                        {"type": "clipboard", "text": "stolen"},
                        {"type": "resize", "width": 320, "height": 240},
                        {"type": "control", "exclusive": False}):
            assert "view-only" in await errors_after(watcher, message)
        # The control guest types; X sees the guest's key and never the watcher's.
        helper.send({"type": "key", "code": "KeyC", "key": "c", "down": True})
        helper.send({"type": "key", "code": "KeyC", "key": "c", "down": False})
        await recorder.wait_for(lambda seen: any(s.kind == "key" and not s.down for s in seen))
        assert recorder.typed() == "c"
        assert not any(s.kind == "button" for s in recorder.seen)
        # A guest may not resize the owner's display, nor hand control over.
        assert "owner" in await errors_after(helper, {"type": "resize", "width": 320, "height": 240})
        assert "owner" in await errors_after(helper, {"type": "control", "exclusive": True})
    finally:
        for v in (owner, watcher, helper):
            await v.close()
        recorder.close()


async def test_the_floor_keeps_a_held_button_and_the_owner_takes_control(agent):
    recorder = Recorder(agent.display)
    owner = await join(agent)
    carl = await join(agent, guest("sha", "control", "Carl"))
    dora = await join(agent, guest("shb", "control", "Dora"))
    try:
        for v in (owner, carl, dora):
            await v.receive("control")
        carl.send({"type": "pointer", "x": 100, "y": 100})
        carl.send({"type": "button", "button": 1, "down": True})
        held = await dora.receive("control")
        while held["holder"] is None:
            held = await dora.receive("control")
        assert held["holder"] == "Carl"
        # Dora cannot press, move or type while Carl holds the button.
        for message in ({"type": "button", "button": 1, "down": True},
                        {"type": "pointer", "x": 300, "y": 300},
                        {"type": "key", "code": "KeyD", "key": "d", "down": True}):
            assert "Carl" in await errors_after(dora, message)
        carl.send({"type": "pointer", "x": 120, "y": 110})
        carl.send({"type": "button", "button": 1, "down": False})
        await recorder.wait_for(lambda seen: any(s.kind == "button" and not s.down for s in seen))
        buttons = [(s.down, s.x, s.y) for s in recorder.seen if s.kind == "button"]
        assert buttons == [(True, 100, 100), (False, 120, 110)]  # Dora's moves never came between
        assert not any(s.kind == "key" for s in recorder.seen)
        # Released: Dora may now; she presses a key and keeps it while Carl is refused.
        while (await dora.receive("control"))["holder"] is not None:
            pass
        dora.send({"type": "key", "code": "KeyD", "key": "d", "down": True})
        while (await carl.receive("control"))["holder"] != "Dora":
            pass
        assert "Dora" in await errors_after(carl, {"type": "button", "button": 3, "down": True})
        # The owner takes control: Dora's key is released at once, both guests are refused.
        owner.send({"type": "control", "exclusive": True})
        await recorder.wait_for(lambda seen: any(s.kind == "key" and not s.down for s in seen))
        for v in (carl, dora):
            assert "taken control" in await errors_after(v, {"type": "pointer", "x": 5, "y": 5})
        owner.send({"type": "pointer", "x": 200, "y": 210})
        await recorder.wait_for(lambda seen: any(s.kind == "motion" and (s.x, s.y) == (200, 210) for s in seen))
        owner.send({"type": "control", "exclusive": False})  # and gives it back
        state = await carl.receive("control")
        while state["exclusive"]:
            state = await carl.receive("control")
        carl.send({"type": "pointer", "x": 50, "y": 60})
        await recorder.wait_for(lambda seen: any(s.kind == "motion" and (s.x, s.y) == (50, 60) for s in seen))
    finally:
        for v in (owner, carl, dora):
            await v.close()
        recorder.close()


async def test_presence_pointers_and_the_owners_live_list(agent):
    owner = await join(agent)
    first = await owner.receive("viewers")
    assert [v["role"] for v in first["viewers"]] == ["owner"]
    vera = await join(agent, guest("shv", "view", "Vera%20V"))
    joined = await owner.receive("viewers")
    assert [(v["role"], v["label"], v["transport"]) for v in joined["viewers"]] == [
        ("owner", "owner", "webrtc"), ("view", "Vera V", "webrtc")]
    assert all(isinstance(v["since"], float) and v["since"] <= time.time() for v in joined["viewers"])
    status, listed = await agent_get(agent, "/viewers")
    assert status == 200 and [v["peer"] for v in listed["viewers"]] == [v["peer"] for v in joined["viewers"]]
    assert (await agent_get(agent, "/viewers", token="wrong"))[0] == 401
    # A view-only guest points (never touching X); the owner sees it, labelled.
    vera.send({"type": "point", "x": 33, "y": 44})
    pointer = await owner.receive("pointer")
    assert (pointer["label"], pointer["x"], pointer["y"]) == ("Vera V", 33, 44)
    # The owner's pointer reaches the guest, throttled: a burst arrives as few messages.
    for i in range(100):
        owner.send({"type": "pointer", "x": i, "y": i})
    received = [await vera.receive("pointer")]
    while (received[-1]["x"], received[-1]["y"]) != (99, 99):  # the latest position always comes
        received.append(await vera.receive("pointer"))
    assert all(p["label"] == "owner" for p in received)
    assert len(received) < 50  # not one message per move (at most 30 a second)
    await vera.close()
    left = await owner.receive("viewers")
    while len(left["viewers"]) != 1:
        left = await owner.receive("viewers")
    await owner.close()


async def test_revocation_and_expiry_disconnect_only_that_share(agent):
    owner = await join(agent)
    revoked = await join(agent, guest("shgone", "control"))
    kept = await join(agent, guest("shkept", "view"))
    soon = await join(agent, guest("shsoon", "view", expires=time.time() + 2))
    try:
        status, body = await agent_post(agent, "/viewers/disconnect", {"share": "shgone"})
        assert status == 200 and body == {"disconnected": 1}
        ended = await revoked.receive("disconnect", timeout=10)
        assert ended["reason"] == "revoked" and "revoked or has expired" in ended["message"]
        expired = await soon.receive("disconnect", timeout=10)
        assert expired["reason"] == "expired"

        async def peers():
            return [v["share"] if "share" in v else "owner" for v in (await agent_get(agent, "/viewers"))[1]["viewers"]]
        deadline = time.monotonic() + 5
        while await peers() != ["owner", "shkept"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await peers() == ["owner", "shkept"]
        # Bad requests change nothing; an expired link's viewer cannot even be created.
        for body in ({}, {"share": 5}, {"share": "x", "more": 1}, [1]):
            assert (await agent_post(agent, "/viewers/disconnect", body))[0] == 400
        assert (await agent_post(agent, "/viewers/disconnect", {"share": "shkept"}, token="bad"))[0] == 401
        with pytest.raises(AssertionError, match="400"):
            await join(agent, guest("shold", "view", expires=time.time() - 1))
        with pytest.raises(AssertionError, match="400"):
            await join(agent, {"X-Viewer-Role": "admin"})
        assert await peers() == ["owner", "shkept"]
    finally:
        for v in (owner, revoked, kept, soon):
            await v.close()


async def test_a_second_input_channel_never_gains_a_role(agent):
    """A guest's client opening another `input` channel and closing the first: what is left
    is refused everything, never taken for the owner (unknown peers are owners by default)."""
    import json

    recorder = Recorder(agent.display)
    helper = await join(agent, guest("shtwo", "control", "Carl"))
    try:
        await helper.receive("control")
        second = helper.pc.createDataChannel("input")
        opened, got = asyncio.Event(), asyncio.Queue()
        second.on("open", opened.set)
        second.on("message", lambda raw: got.put_nowait(json.loads(raw)))
        await asyncio.wait_for(opened.wait(), 10)
        helper.channel.close()
        await asyncio.sleep(0.5)
        for message in ({"type": "control", "exclusive": True}, {"type": "resize", "width": 320, "height": 240},
                        {"type": "key", "code": "KeyK", "key": "k", "down": True}):
            second.send(json.dumps(message))
            while (answer := await asyncio.wait_for(got.get(), 10))["type"] != "error":
                pass
            assert "left" in answer["message"] or "owner" in answer["message"], answer
        await asyncio.sleep(0.3)
        await recorder.wait_for(lambda seen: True)
        assert not any(s.kind == "key" for s in recorder.seen)
    finally:
        await helper.close()
        recorder.close()


async def test_the_websocket_transport_enforces_roles_and_revocation_too(agent):
    """Shares are transport-neutral: a guest on /ws is listed with its role, its input is
    refused the same way, and revoking its share closes its socket."""
    from tests.ws_client import WsViewer

    recorder = Recorder(agent.display)
    owner = await join(agent)
    watcher = WsViewer(agent.url, token=agent.token, headers=guest("shws", "view", "Wendy"))
    await watcher.connect()
    try:
        assert (await watcher.receive("control"))["role"] == "view"
        for message in ({"type": "key", "code": "KeyV", "key": "v", "down": True},
                        {"type": "button", "button": 1, "down": True},
                        {"type": "clipboard", "text": "stolen"}):
            watcher.send(message)
            assert "view-only" in (await watcher.receive("error"))["message"]
        listed = (await agent_get(agent, "/viewers"))[1]["viewers"]
        assert {(v["role"], v["transport"]) for v in listed} == {("owner", "webrtc"), ("view", "ws")}
        await asyncio.sleep(0.3)
        assert not any(s.kind in ("key", "button") for s in recorder.seen)
        # A lying header is refused before the upgrade.
        liar = WsViewer(agent.url, token=agent.token, headers={"X-Viewer-Role": "admin"})
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await liar.connect()
        assert refused.value.status == 400
        status, body = await agent_post(agent, "/viewers/disconnect", {"share": "shws"})
        assert status == 200 and body == {"disconnected": 1}
        assert (await watcher.receive("disconnect", timeout=5))["reason"] == "revoked"
        deadline = time.monotonic() + 5
        while not watcher.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert watcher.closed
        listed = (await agent_get(agent, "/viewers"))[1]["viewers"]
        assert [v["role"] for v in listed] == ["owner"]
    finally:
        await watcher.close()
        await owner.close()
        recorder.close()
