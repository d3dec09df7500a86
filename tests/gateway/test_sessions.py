"""Session life as the API shows it: SSE progress, start failures, metrics and logs."""
from __future__ import annotations

import json
import logging

from gateway.logs import JsonFormatter
from tests.gateway.conftest import bearer, eventually, user


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "data" in lines:
            events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


async def create(client, application="gimp", headers=None, **body):
    r = await client.post("/api/sessions", json={"application": application, **body},
                          headers=headers or bearer())
    assert r.status in (200, 201), await r.text()
    return await r.json()


async def test_events_follow_a_start_that_times_out_to_failed(gateway):
    client = await gateway(start_timeout=1.5)
    session = await create(client)
    r = await client.get(f"/api/sessions/{session['id']}/events", headers=bearer())
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    events = parse_sse(await r.text())  # the stream ends by itself once the session failed
    assert events[0][1]["phase"] == "pending"
    kind, last = events[-1]
    assert kind == "session" and last["phase"] == "failed"
    assert "did not start within 1.5 s" in last["message"]
    assert all(0 <= data["progress"] <= 1 for _, data in events)
    got = await (await client.get(f"/api/sessions/{session['id']}", headers=bearer())).json()
    assert got["phase"] == "failed" and got["message"] == last["message"]


async def test_a_failed_session_is_replaced_by_the_next_create(gateway):
    client = await gateway(start_timeout=0.5)
    first = await create(client)

    async def failed():
        r = await client.get(f"/api/sessions/{first['id']}", headers=bearer())
        return (await r.json())["phase"] == "failed"
    await eventually(failed)
    second = await create(client)
    assert second["id"] != first["id"]

    async def replaced():
        r = await client.get("/api/sessions", headers=bearer())
        return [s["id"] for s in (await r.json())["sessions"]] == [second["id"]]
    await eventually(replaced)


async def test_events_end_with_deleted_when_the_session_is_deleted(gateway):
    client = await gateway()
    session = await create(client)
    stream = await client.get(f"/api/sessions/{session['id']}/events", headers=bearer())
    first = await stream.content.readuntil(b"\n\n")
    assert b'"phase": "pending"' in first
    assert (await client.delete(f"/api/sessions/{session['id']}", headers=bearer())).status == 202
    rest = parse_sse((await stream.content.read()).decode())
    assert rest[-1][0] == "deleted"


async def test_an_application_that_is_not_installed_fails_with_a_reason(gateway):
    client = await gateway(app_commands={"gimp": "/nonexistent/gimp-2.10", "inkscape": "", "blender": ""})
    for app, name in (("gimp", "/nonexistent/gimp-2.10"), ("inkscape", "(none configured)")):
        session = await create(client, app)
        events = parse_sse(await (await client.get(f"/api/sessions/{session['id']}/events",
                                                    headers=bearer())).text())
        assert events[-1][1]["phase"] == "failed"
        assert events[-1][1]["message"] == f"{app} is not installed here (command {name!r} not found)"
    apps = await (await client.get("/api/applications", headers=bearer())).json()
    assert {a["name"]: a["available"] for a in apps["applications"]} == {
        "gimp": False, "inkscape": False, "blender": False}


async def test_metrics_have_the_design_names_and_labels(gateway):
    client = await gateway(auth="jwt", region="eu-west-1")
    await create(client, headers=user("alice", tier="pro"))
    await create(client, headers=user("bob"))
    text = await (await client.get("/metrics")).text()
    assert 'gimp_sessions_total{region="eu-west-1",user_tier="pro"} 1.0' in text
    assert 'gimp_sessions_total{region="eu-west-1",user_tier="standard"} 1.0' in text
    assert "# TYPE gimp_session_duration_seconds histogram" in text
    assert "# TYPE gimp_active_sessions gauge" in text
    assert 'gateway_http_requests_total{method="POST",route="/api/sessions",status="201"} 2.0' in text


async def test_logs_carry_the_design_fields(gateway, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    client = await gateway()
    session = await create(client, resources={"cpu": "1", "memory": "2Gi"})
    created = next(r for r in caplog.records if getattr(r, "fields", {}).get("action") == "session_created")
    line = json.loads(JsonFormatter().format(created))
    assert line["component"] == "session-manager"
    assert line["level"] == "info" and line["timestamp"].endswith("Z")
    assert line["user_id"] == "local" and line["session_id"] == session["id"]
    assert line["resource_allocation"] == {"cpu": "1", "memory": "2Gi"}
    assert line["region"] == "local"

    async def logged_process():
        return any(getattr(r, "fields", {}).get("action") == "session_process_started"
                   and r.fields.get("process") for r in caplog.records)
    await eventually(logged_process)
    request = next(r for r in caplog.records if getattr(r, "fields", {}).get("action") == "http_request")
    assert {"method", "path", "status", "duration_ms"} <= set(request.fields)
