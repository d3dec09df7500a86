"""The WHEP proxy in front of a real session agent (streaming a light application)."""
from __future__ import annotations

import re

from gateway.http import REGISTRY
from gateway.identity import turn_user
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, bearer, eventually, sdp_offer, user
from tests.whep_client import Viewer

TURN = ("turn:turn.example.org:3478?transport=udp",)


async def running_session(client, headers):
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=headers)
    sid = (await r.json())["id"]

    async def running():
        r = await client.get(f"/api/sessions/{sid}", headers=headers)
        return (await r.json())["phase"] == "running"
    await eventually(running)
    return sid


async def test_whep_through_the_gateway_streams_and_hides_the_agent(gateway):
    client = await gateway(auth="jwt", agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           turn_urls=TURN, turn_secret="coturn-secret")
    alice = user("alice")
    sid = await running_session(client, alice)
    agent_token = client.app[REGISTRY].spawner.get(sid).agent_token
    url = f"/streaming/{sid}/whep"
    seen: list[str] = []

    # A real viewer through the gateway: video frames and the input channel both ways.
    viewer = Viewer(str(client.make_url("")), headers=alice)
    try:
        await viewer.connect(url)
        assert re.fullmatch(rf"/streaming/{sid}/whep/[A-Za-z0-9._~-]+", viewer.location)
        frame = await viewer.wait_for(lambda f: f.width > 0, timeout=60)
        assert frame.height > 0
        viewer.send({"type": "ping", "t": 7})
        assert await viewer.receive("pong", timeout=30) == {"type": "pong", "t": 7}
        # Another user cannot end Alice's peer; PATCH (trickle ICE) is the agent's 405.
        assert (await client.delete(viewer.location, headers=user("bob"))).status == 404
        assert (await client.patch(viewer.location, headers=alice, data=b"a=end-of-candidates")).status == 405
    finally:
        await viewer.close()
    assert (await client.delete(viewer.location, headers=alice)).status == 404  # already ended

    # What the browser is told: SDP, the gateway's Location, TURN credentials; never the token.
    pc, offer = await sdp_offer()
    try:
        r = await client.post(url, data=offer, headers={**alice, "Content-Type": "application/sdp"})
        assert r.status == 201
        seen += [str(r.headers), await r.text()]
        assert r.headers["Content-Type"].startswith("application/sdp")
        assert r.headers["Location"].startswith(f"/streaming/{sid}/whep/")
        assert any(link.startswith(f'<{TURN[0]}>; rel="ice-server"; username="') and f':{turn_user("alice")}"' in link
                   for link in r.headers.getall("Link"))
        ended = await client.delete(r.headers["Location"], headers=alice)
        assert ended.status == 200
        seen.append(await ended.text())
        # Errors of the agent reach the browser as the agent gave them.
        wrong_type = await client.post(url, data=offer, headers={**alice, "Content-Type": "text/plain"})
        assert wrong_type.status == 415
        not_sdp = await client.post(url, data=b"hello", headers={**alice, "Content-Type": "application/sdp"})
        assert not_sdp.status == 400 and "error" in await not_sdp.json()
        seen += [await wrong_type.text(), await not_sdp.text(), str(wrong_type.headers)]
    finally:
        await pc.close()
    assert (await client.delete(f"{url}/..%2F..%2Fhealth", headers=alice)).status == 404
    assert not any(agent_token in text for text in seen)


async def test_whep_to_an_ended_session_says_so(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP}, start_timeout=30)
    sid = await running_session(client, bearer())
    spawner = client.app[REGISTRY].spawner
    await spawner.delete(sid)
    r = await client.post(f"/streaming/{sid}/whep", data=b"v=0", headers={**bearer(), "Content-Type": "application/sdp"})
    assert r.status in (404, 409)
    assert "error" in await r.json()
