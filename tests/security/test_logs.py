"""No token or secret in the logs of the gateway or the agent, gathered during real flows:
login, API calls, a WebRTC viewer through the WHEP proxy, refused credentials (SECURITY.md §4)."""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.http import REGISTRY
from gateway.logs import JsonFormatter, setup_logging
from tests.gateway.conftest import (LIGHT_APP, REAL_AGENT, TOKEN, bearer, eventually, make_jwt,
                                    user)
from tests.security.conftest import Gateway, running_session
from tests.whep_client import Viewer

TURN_SECRET = "turn-secret-7d2a61e0"
WRONG = "wrong-credential-93b1c7"


@pytest.fixture
def gateway_log() -> Iterator[io.StringIO]:
    """The gateway's log at DEBUG, set up by production's own setup_logging (which also keeps
    aiohttp's access log, whose lines hold query strings, below its level), into a buffer."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    saved = (root.handlers[:], root.level, access.level)
    setup_logging("debug")
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, JsonFormatter)
    handler.setStream(stream)
    yield stream
    root.handlers[:], _, _ = saved
    root.setLevel(saved[1])
    access.setLevel(saved[2])


def assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret and secret not in text, f"a secret ({secret[:4]}…) is in the logs"


async def test_token_mode_flow_logs_no_secret(gateway: Gateway, gateway_log: io.StringIO,
                                              tmp_path: Path) -> None:
    client = await gateway(agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           turn_urls=("turn:127.0.0.1:3478",), turn_secret=TURN_SECRET)
    # Login through the page URL (the token is in the query), then refused credentials.
    assert (await client.get(f"/?token={TOKEN}", allow_redirects=False)).status == 303
    assert (await client.get(f"/?token={WRONG}", allow_redirects=False)).status == 401
    assert (await client.get("/api/sessions", headers=bearer(WRONG))).status == 401
    assert (await client.get("/api/sessions", cookies={"gateway_auth": WRONG})).status == 401

    session_id = await running_session(client)
    session = client.app[REGISTRY].spawner.get(session_id)
    assert session is not None and session.agent_token
    agent_token = session.agent_token

    viewer = Viewer(str(client.make_url("")), token=TOKEN)
    await viewer.connect(f"/streaming/{session_id}/whep")  # TURN credentials go out as Link headers
    await viewer.wait_for(lambda frame: True)
    await viewer.close()  # DELETE through the proxy
    assert (await client.options(f"/streaming/{session_id}/whep", headers=bearer())).status == 204
    assert (await client.get("/metrics")).status == 200

    assert (await client.delete(f"/api/sessions/{session_id}", headers=bearer())).status == 202

    async def gone() -> bool:
        return (await client.get(f"/api/sessions/{session_id}", headers=bearer())).status == 404

    await eventually(gone)

    gateway_lines = gateway_log.getvalue()
    agent_lines = (tmp_path / "data" / "sessions" / f"{session_id}.log").read_text()
    # The flow was logged (so the check below looked at something).
    for action in ("session_created", "session_running", "http_request", "session_deleted"):
        assert f'"action": "{action}"' in gateway_lines, action
    assert '"action": "agent_started"' in agent_lines
    assert_clean(gateway_lines + agent_lines, [TOKEN, agent_token, TURN_SECRET, WRONG])


async def test_jwt_mode_logs_no_token(gateway: Gateway, gateway_log: io.StringIO) -> None:
    client = await gateway(auth="jwt")
    token = make_jwt("alice")
    forged = make_jwt("mallory", secret="not-the-secret-but-long-enough-for-hs256-0123456789")
    assert (await client.get(f"/?token={token}", allow_redirects=False)).status == 303
    assert (await client.get(f"/streaming/x/?token={forged}", allow_redirects=False)).status == 401
    assert (await client.get("/api/sessions", headers=bearer(forged))).status == 401
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=user("alice"))
    assert r.status == 201
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.delete(f"/api/sessions/{(await r.json())['id']}", headers=headers)).status == 202
    text = gateway_log.getvalue()
    assert '"user_id": "alice"' in text
    # Neither the whole JWT nor its signature part.
    assert_clean(text, [token, token.rsplit(".", 1)[1], forged, forged.rsplit(".", 1)[1]])
