"""`/streaming/{id}/ws`: the WebSocket relay in front of a real session agent (a light application)."""
from __future__ import annotations

import aiohttp
import pytest

from gateway.http import REGISTRY
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, eventually, user
from tests.gateway.test_whep_proxy import running_session
from tests.ws_client import WsViewer


async def test_ws_through_the_gateway_streams_and_hides_the_agent(gateway):
    client = await gateway(auth="jwt", agent_command=(*REAL_AGENT, "--max-peers", "1"),
                           app_commands={"gimp": LIGHT_APP})
    alice = user("alice")
    sid = await running_session(client, alice)
    agent_token = client.app[REGISTRY].spawner.get(sid).agent_token
    base, path = str(client.make_url("")), f"/streaming/{sid}/ws"

    viewer = WsViewer(base, headers=alice, path=path)
    await viewer.connect()
    try:
        frame = await viewer.wait_for(lambda f: f.width > 0, timeout=60)
        assert frame.height > 0 and viewer.received[0][0]  # a keyframe first, through the relay too
        viewer.send({"type": "ping", "t": 7})
        pong = await viewer.receive("pong", timeout=30)
        assert pong["t"] == 7
        seen = [str(viewer.ws._response.headers), str(pong)]

        async with aiohttp.ClientSession() as http:
            # Another user's session does not exist for them; no credentials: 401; both before
            # any upgrade. A plain GET is told what the URL is.
            for headers, status in ((user("bob"), 404), ({}, 401)):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(base.rstrip("/") + path, headers=headers)
                assert refused.value.status == status
            async with http.get(base.rstrip("/") + path, headers=alice) as r:
                assert r.status == 426 and "WebSocket" in (await r.json())["error"]
                seen.append(await r.text())
            # Over the agent's viewer limit: the browser learns why from the close frame.
            async with http.ws_connect(base.rstrip("/") + path, headers=alice) as second:
                message = await second.receive_json(timeout=30)
                assert message["status"] == 503 and "viewers" in message["message"]
                closing = await second.receive(timeout=30)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4503
                seen.append(str(message))
        assert not any(agent_token in text for text in seen)
    finally:
        await viewer.close()


async def test_ws_to_an_ended_session_says_so(gateway):
    client = await gateway(auth="jwt", agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           start_timeout=30)
    alice = user("alice")
    sid = await running_session(client, alice)
    base, path = str(client.make_url("")), f"/streaming/{sid}/ws"
    viewer = WsViewer(base, headers=alice, path=path)
    await viewer.connect()
    try:
        await viewer.wait_for(lambda f: f.width > 0, timeout=60)
        await client.app[REGISTRY].spawner.delete(sid)

        async def closed() -> bool:
            return viewer.closed
        await eventually(closed, timeout=30)  # the relay closes the browser's socket too
    finally:
        await viewer.close()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(base.rstrip("/") + path, headers=alice)
        assert refused.value.status in (404, 409)
