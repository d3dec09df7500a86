"""Session creation is rate limited per user: 429 with Retry-After (SECURITY.md §5)."""
from __future__ import annotations

import pytest

from gateway.config import load_config
from gateway.sessions import CreateRateLimit
from tests.gateway.conftest import user
from tests.security.conftest import Gateway


async def test_create_limit_per_user(gateway: Gateway) -> None:
    client = await gateway(auth="jwt", create_limit=2, create_window=3600, max_sessions_per_user=10)
    alice, bob = user("alice"), user("bob")
    first = await client.post("/api/sessions", json={"application": "gimp"}, headers=alice)
    assert first.status == 201
    assert (await client.post("/api/sessions", json={"application": "inkscape"}, headers=alice)).status == 201
    # Asking again for a session that exists creates nothing, so it costs nothing.
    assert (await client.post("/api/sessions", json={"application": "gimp"}, headers=alice)).status == 200

    r = await client.post("/api/sessions", json={"application": "blender"}, headers=alice)
    assert r.status == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    assert "too many sessions" in (await r.json())["error"]

    # Ending a session does not give the creation back: churn is what the limit stops.
    session_id = (await first.json())["id"]
    assert (await client.delete(f"/api/sessions/{session_id}", headers=alice)).status == 202
    r = await client.post("/api/sessions", json={"application": "blender"}, headers=alice)
    assert r.status == 429 and "Retry-After" in r.headers

    # Other users are not affected.
    assert (await client.post("/api/sessions", json={"application": "gimp"}, headers=bob)).status == 201


def test_sliding_window() -> None:
    now = [1000.0]
    limit = CreateRateLimit(2, 60, clock=lambda: now[0])
    assert limit.retry_after("u") == 0
    limit.record("u")
    now[0] += 10
    limit.record("u")
    assert limit.retry_after("u") == 50  # the first creation leaves the window at 1060
    now[0] += 50
    assert limit.retry_after("u") == 0
    limit.record("u")
    assert limit.retry_after("u") == 10
    now[0] += 1000
    assert limit.retry_after("u") == 0
    assert limit._times == {}  # idle users are forgotten


def test_zero_turns_the_limit_off() -> None:
    limit = CreateRateLimit(0, 60)
    for _ in range(100):
        limit.record("u")
    assert limit.retry_after("u") == 0


def test_settings() -> None:
    c = load_config([], {"GATEWAY_CREATE_LIMIT": "5", "GATEWAY_CREATE_WINDOW": "30"})
    assert (c.create_limit, c.create_window) == (5, 30.0)
    d = load_config([], {})
    assert (d.create_limit, d.create_window) == (10, 60.0)
    for argv in (["--create-limit", "-1"], ["--create-window", "0"]):
        with pytest.raises(SystemExit):
            load_config(argv, {})
