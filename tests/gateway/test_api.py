"""The session API: create/list/get/delete, validation, limits, SSE progress, metrics."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_config
from gateway.http import REGISTRY
from gateway.resources import parse_limits
from tests.gateway.conftest import alive, bearer, eventually, user


async def sessions(client, headers=None):
    r = await client.get("/api/sessions", headers=headers or bearer())
    assert r.status == 200
    return (await r.json())["sessions"]


async def test_create_returns_the_session_object_and_a_second_create_the_same_one(gateway):
    client = await gateway()
    r = await client.post("/api/sessions", json={"application": "gimp", "timeout": 600,
                                                 "resources": {"cpu": "1", "memory": "2Gi"}},
                          headers=bearer())
    assert r.status == 201
    body = await r.json()
    assert set(body) <= {"id", "user", "application", "phase", "streaming_url", "created_at",
                         "started_at", "message"}
    assert body["user"] == "local" and body["application"] == "gimp" and body["phase"] == "pending"
    assert body["streaming_url"] == f"/streaming/{body['id']}/"
    assert body["created_at"].endswith("Z")
    again = await client.post("/api/sessions", json={"application": "gimp"}, headers=bearer())
    assert again.status == 200 and (await again.json())["id"] == body["id"]
    other = await client.post("/api/sessions", json={"application": "inkscape"}, headers=bearer())
    assert other.status == 201
    assert {s["id"] for s in await sessions(client)} == {body["id"], (await other.json())["id"]}
    got = await client.get(f"/api/sessions/{body['id']}", headers=bearer())
    assert got.status == 200 and (await got.json())["id"] == body["id"]


BAD_BODIES = [
    b"", b"not json", b"[]", b'"gimp"', b"null", b"{}",
    b'{"application": "photoshop"}', b'{"application": 1}', b'{"application": "gimp", "x": 1}',
    b'{"application": "gimp", "timeout": 0}', b'{"application": "gimp", "timeout": -5}',
    b'{"application": "gimp", "timeout": "60"}', b'{"application": "gimp", "timeout": true}',
    b'{"application": "gimp", "timeout": 1.5}', b'{"application": "gimp", "timeout": 99999999999}',
    b'{"application": "gimp", "resources": []}', b'{"application": "gimp", "resources": {"disk": "1"}}',
    b'{"application": "gimp", "resources": {"cpu": "lots"}}',
    b'{"application": "gimp", "resources": {"memory": {"a": 1}}}',
    b'{"application": "gimp", "resources": {"cpu": true}}',
    b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000,
]


async def test_bad_bodies_are_400_with_a_reason_and_change_nothing(gateway):
    client = await gateway()
    for body in BAD_BODIES:
        r = await client.post("/api/sessions", data=body, headers=bearer())
        assert r.status == 400, body
        assert isinstance((await r.json())["error"], str), body
    assert await sessions(client) == []


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=8)
BODIES = JSON | st.fixed_dictionaries(
    {"application": st.sampled_from(["gimp", "inkscape", "blender", "x"])},
    optional={"timeout": JSON, "resources": JSON | st.dictionaries(
        st.sampled_from(["cpu", "memory", "gpu", "disk"]), JSON, max_size=3)})


async def test_any_json_body_gets_a_clean_answer(gateway):
    """Whatever the body, the answer is a session or a 4xx JSON error; never a 5xx."""
    # No creation rate limit: the examples replace failed sessions often enough to reach it.
    client = await gateway(max_sessions_per_user=2, create_limit=0)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(BODIES)
    def check(body):
        async def post():
            r = await client.post("/api/sessions", data=json.dumps(body), headers=bearer())
            data = await r.json()
            assert r.status in (200, 201, 400, 409), (body, r.status, data)
            if r.status >= 400:
                assert isinstance(data["error"], str)
            else:
                assert data["application"] == body["application"]
        future = asyncio.run_coroutine_threadsafe(post(), loop)
        future.result(30)

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, check)
    active = [s["application"] for s in await sessions(client) if s["phase"] in ("pending", "running")]
    assert len(set(active)) == len(active) <= 2


async def test_unknown_ids_and_paths_are_404_json(gateway):
    client = await gateway()
    for path in ("/api/sessions/nope", "/api/sessions/nope/events", "/api/nothing"):
        r = await client.get(path, headers=bearer())
        assert r.status == 404 and "error" in await r.json(), path
    r = await client.delete("/api/sessions/nope", headers=bearer())
    assert r.status == 404
    r = await client.put("/api/sessions", headers=bearer())
    assert r.status == 405 and "error" in await r.json()


async def test_per_user_limit_is_409_and_total_limit_is_429(gateway):
    client = await gateway(auth="jwt", max_sessions_per_user=1, max_sessions_total=2)
    assert (await client.post("/api/sessions", json={"application": "gimp"}, headers=user("a"))).status == 201
    r = await client.post("/api/sessions", json={"application": "inkscape"}, headers=user("a"))
    assert r.status == 409 and "1 sessions" in (await r.json())["error"]
    assert (await client.post("/api/sessions", json={"application": "gimp"}, headers=user("b"))).status == 201
    r = await client.post("/api/sessions", json={"application": "gimp"}, headers=user("c"))
    assert r.status == 429 and "limit" in (await r.json())["error"]
    assert r.headers["Retry-After"]
    assert await sessions(client, user("c")) == []
    # The existing session is still returned to its owner at the limit.
    assert (await client.post("/api/sessions", json={"application": "gimp"}, headers=user("a"))).status == 200


async def test_concurrent_creates_make_one_session(gateway):
    client = await gateway()
    answers = await asyncio.gather(*(client.post("/api/sessions", json={"application": "gimp"},
                                                 headers=bearer()) for _ in range(8)))
    assert sorted(r.status for r in answers) == [200] * 7 + [201]
    assert len({(await r.json())["id"] for r in answers}) == 1


async def test_delete_is_202_terminating_then_gone_with_its_processes(gateway):
    client = await gateway()
    sid = (await (await client.post("/api/sessions", json={"application": "gimp"}, headers=bearer())).json())["id"]
    pid = int(await eventually(lambda: _worker(client, sid)))
    r = await client.delete(f"/api/sessions/{sid}", headers=bearer())
    assert r.status == 202 and (await r.json())["phase"] == "terminating"

    async def gone():
        return (await client.get(f"/api/sessions/{sid}", headers=bearer())).status == 404
    await eventually(gone)
    assert not alive(pid)
    assert (await client.delete(f"/api/sessions/{sid}", headers=bearer())).status == 404


async def _worker(client, sid):
    """The session's supervisor pid: internal, so read from the spawner rather than the API."""
    session = client.app[REGISTRY].spawner.get(sid)
    return session.worker if session else None


async def test_resources_above_the_tier_maximum_are_400_naming_the_limit(gateway):
    client = await gateway(auth="jwt", resource_limits=parse_limits(
        '{"premium": {"cpu": "8", "memory": "32Gi"}, "*": {"cpu": "2", "memory": "4Gi", "gpu": "0"}}'))
    for resources, who, named in (({"cpu": "99999"}, user("ann"), "cpu 99999 is above the maximum of 2"),
                                  ({"memory": "5Gi"}, user("ann"), "maximum of 4Gi"),
                                  ({"memory": "4097Mi"}, user("ann"), "maximum of 4Gi"),
                                  ({"gpu": "1"}, user("ann"), "maximum of 0"),
                                  ({"cpu": "9"}, user("pat", tier="premium"), "maximum of 8 for the premium tier"),
                                  ({"gpu": "1"}, user("pat", tier="premium"), "maximum of 0")):
        r = await client.post("/api/sessions", json={"application": "gimp", "resources": resources},
                              headers=who)
        assert r.status == 400 and named in (await r.json())["error"], (resources, await r.text())
    # Nothing was created by the refused requests; within the limits it is.
    assert (await (await client.get("/api/sessions", headers=user("ann"))).json()) == {"sessions": []}
    ok = await client.post("/api/sessions", json={"application": "gimp", "resources": {
        "cpu": "1500m", "memory": "4Gi"}}, headers=user("ann"))
    assert ok.status == 201
    big = await client.post("/api/sessions", json={"application": "gimp", "resources": {
        "cpu": "8", "memory": "32Gi"}}, headers=user("pat", tier="premium"))
    assert big.status == 201


def test_resource_limits_setting():
    assert load_config([], {}).resource_limits == {"*": {"cpu": "4", "memory": "8Gi", "gpu": "1"}}
    c = load_config(["--resource-limits", '{"pro": {"cpu": "16"}}'], {})
    assert c.resource_limits["pro"] == {"cpu": "16"} and "*" in c.resource_limits
    for bad in ("not json", '{"pro": {"disk": "1"}}', '{"pro": {"cpu": "lots"}}', '["cpu"]'):
        with pytest.raises(SystemExit):
            load_config(["--resource-limits", bad], {})
