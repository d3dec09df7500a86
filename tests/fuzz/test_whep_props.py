"""WHEP bodies and headers, at a real agent process and through the gateway's proxy to one:
every answer is a WHEP answer (201 + SDP + Location) or a clear 4xx JSON error, never a 5xx, and
the agent still answers a real viewer afterwards."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.agent_process import AgentProcess, start_agent
from tests.fuzz.conftest import LiveGateway
from tests.fuzz.strategies import (OFFER, authorizations, content_types, extra_headers,
                                   header_safe, offers, peer_ids)
from tests.gateway.conftest import TOKEN, bearer
from tests.xserver import start_xvfb

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    x = start_xvfb("320x240")
    process = start_agent(x.display, "--max-peers", "4")
    yield process
    process.stop()
    x.stop()


def headers_for(auth: str | None, content_type: str, extra: dict[str, str]) -> dict[str, str]:
    headers = {**extra, "Content-Type": content_type}
    if auth is not None:
        headers["Authorization"] = auth
    return {k: v for k, v in headers.items() if header_safe(v)}


def assert_clear(r: requests.Response, allowed: set[int]) -> None:
    """The answer is a listed status; an error says what went wrong as JSON."""
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        assert isinstance(r.json().get("error"), str) and r.json()["error"]


def offer_then_end(http: requests.Session, base: str, whep: str, body: bytes,
                   headers: dict[str, str], allowed: set[int]) -> None:
    r = http.post(base + whep, data=body, headers=headers, timeout=60)
    assert_clear(r, allowed)
    if r.status_code == 201:
        assert r.headers["Content-Type"].startswith("application/sdp")
        assert r.text.startswith("v=0")
        ended = http.delete(base + r.headers["Location"], headers={
            k: v for k, v in headers.items() if k == "Authorization"}, timeout=30)
        assert ended.status_code == 200, ended.text


def still_serves(http: requests.Session, base: str, whep: str, auth: dict[str, str]) -> None:
    r = http.post(base + whep, data=OFFER, headers={**auth, "Content-Type": "application/sdp"},
                  timeout=60)
    assert r.status_code == 201, r.text
    assert http.delete(base + r.headers["Location"], headers=auth, timeout=30).status_code == 200


AGENT_OFFER = {201, 400, 401, 413, 415}


def test_agent_offers(agent: AgentProcess) -> None:
    http = requests.Session()

    @FUZZ
    @given(body=offers, auth=authorizations(agent.token or ""), content_type=content_types,
           extra=extra_headers)
    def run(body: bytes, auth: str | None, content_type: str, extra: dict[str, str]) -> None:
        offer_then_end(http, agent.url, "/whep", body, headers_for(auth, content_type, extra),
                       AGENT_OFFER)

    run()
    still_serves(http, agent.url, "/whep", {"Authorization": f"Bearer {agent.token}"})
    assert agent.health()[0] == 200


def test_agent_peer_resources(agent: AgentProcess) -> None:
    http = requests.Session()

    @FUZZ
    @given(method=st.sampled_from(["DELETE", "PATCH", "OPTIONS", "GET", "PUT"]), peer=peer_ids,
           auth=authorizations(agent.token or ""), body=st.binary(max_size=50),
           content_type=content_types)
    def run(method: str, peer: str, auth: str | None, body: bytes, content_type: str) -> None:
        r = http.request(method, f"{agent.url}/whep/{requests.utils.quote(peer, safe='')}",
                         data=body, headers=headers_for(auth, content_type, {}), timeout=30)
        assert_clear(r, {200, 204, 401, 404, 405})

    run()
    assert agent.health()[0] == 200


def running_session(gateway: LiveGateway) -> str:
    status, body = gateway.request("POST", "/api/sessions", {"application": "inkscape"})
    assert status in (200, 201), body
    sid = body["id"]
    events = requests.get(f"{gateway.url}/api/sessions/{sid}/events", headers=bearer(),
                          timeout=120)  # the stream ends when the session runs (or fails)
    assert '"phase": "running"' in events.text, events.text[-500:]
    return sid


GATEWAY_OFFER = AGENT_OFFER | {404}


def test_gateway_proxy(live_gateway: LiveGateway) -> None:
    sid = running_session(live_gateway)
    whep = f"/streaming/{sid}/whep"
    http = requests.Session()

    @FUZZ
    @given(body=offers, auth=authorizations(TOKEN), content_type=content_types,
           extra=extra_headers, session=st.sampled_from([sid, sid, "s0000000000000000", "..",
                                                         "%2e%2e", sid.upper()]))
    def run(body: bytes, auth: str | None, content_type: str, extra: dict[str, str],
            session: str) -> None:
        offer_then_end(http, live_gateway.url, f"/streaming/{session}/whep", body,
                       headers_for(auth, content_type, extra), GATEWAY_OFFER)

    run()

    @FUZZ
    @given(method=st.sampled_from(["DELETE", "PATCH"]), peer=peer_ids, auth=authorizations(TOKEN),
           body=st.binary(max_size=50))
    def peers(method: str, peer: str, auth: str | None, body: bytes) -> None:
        r = http.request(method, f"{live_gateway.url}{whep}/{requests.utils.quote(peer, safe='')}",
                         data=body, headers=headers_for(auth, "application/trickle-ice-sdpfrag", {}),
                         timeout=30)
        assert_clear(r, {401, 404, 405})

    peers()
    still_serves(http, live_gateway.url, whep, bearer())


def test_gateway_options(live_gateway: LiveGateway) -> None:
    sid = running_session(live_gateway)
    http = requests.Session()

    @FUZZ
    @given(auth=authorizations(TOKEN), extra=extra_headers)
    def run(auth: str | None, extra: dict[str, Any]) -> None:
        r = http.options(f"{live_gateway.url}/streaming/{sid}/whep",
                         headers=headers_for(auth, "text/plain", extra), timeout=30)
        assert_clear(r, {204, 401})

    run()
