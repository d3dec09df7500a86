"""Progress streams (SSE) that nobody reads cost neither memory nor other users' events."""
from __future__ import annotations

import asyncio
import socket
import tracemalloc
from datetime import datetime, timezone

import pytest

from gateway.http import REGISTRY
from gateway.spawners.base import Phase, Session, SessionTable, SubscriberDropped
from tests.gateway.conftest import eventually, make_jwt, user


def snapshot(sid: str, n: int = 0) -> Session:
    return Session(id=sid, user="u", application="gimp", phase=Phase.PENDING,
                   created_at=datetime.now(timezone.utc), progress=n / 1e6)


async def test_a_stream_gets_its_own_session_only_and_one_that_stops_reading_is_dropped() -> None:
    table = SessionTable()
    async with table.subscribe("s1") as mine, table.subscribe("s2") as stalled, \
            table.subscribe() as everything:
        for n in range(100_000):  # another session changing, a lot
            table.put(snapshot("s3", n))
        table.put(snapshot("s1"))
        event = await asyncio.wait_for(anext(mine), 1)
        assert event.session.id == "s1"  # nothing of s3 was queued for it
        for n in range(SessionTable.SESSION_BACKLOG + 1):  # s2 changes; nobody reads s2's stream
            table.put(snapshot("s2", n))
        with pytest.raises(SubscriberDropped):
            await anext(stalled)
        # the internal follower (no session) sees everything and is never dropped
        assert sum(1 for _ in range(100_001 + SessionTable.SESSION_BACKLOG + 1)
                   if everything._queue.get_nowait()) > 0
    assert table.subscribers() == 0


async def test_a_thousand_stalled_streams_leave_memory_flat_and_others_on_time(gateway) -> None:
    client = await gateway(auth="jwt", create_limit=0, max_sessions_total=100)
    registry = client.app[REGISTRY]
    mallory = user("mallory")
    sid = (await (await client.post("/api/sessions", json={"application": "gimp"},
                                    headers=mallory)).json())["id"]
    request = (f"GET /api/sessions/{sid}/events HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {make_jwt('mallory')}\r\n\r\n").encode()
    sockets = []
    try:
        for _ in range(1000):  # connect, ask, never read a byte
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            s.setblocking(False)
            await asyncio.get_running_loop().sock_connect(s, (client.host, client.port))
            await asyncio.get_running_loop().sock_sendall(s, request)
            sockets.append(s)
        table = registry.spawner._table
        await eventually(lambda: asyncio.sleep(0, table.subscribers() >= 1001), timeout=60)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        alice = user("alice")
        for _ in range(20):  # alice's sessions come and go while mallory's streams stall
            created = await client.post("/api/sessions", json={"application": "gimp"}, headers=alice)
            aid = (await created.json())["id"]
            async with client.get(f"/api/sessions/{aid}/events", headers=alice) as stream:
                assert (await asyncio.wait_for(stream.content.readline(), 10)).startswith(b"event: session")
                await client.delete(f"/api/sessions/{aid}", headers=alice)
                while (line := await asyncio.wait_for(stream.content.readline(), 10)) != b"":
                    if line.startswith(b"event: deleted"):
                        break
                assert line.startswith(b"event: deleted")
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        # Mallory's thousand streams queued nothing of alice's: their backlogs are empty.
        backlog = sum(sub._queue.qsize() for sub in table._by_session.get(sid, ()))
        assert backlog == 0
        assert grown < 5_000_000, f"{grown} bytes more after 20 sessions of another user"
    finally:
        for s in sockets:
            s.close()
