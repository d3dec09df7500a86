"""Benchmark: the gateway's API with 5,000 sessions in its table, at a fixed 500 requests/s.

    python -m bench.gateway_api [--sessions 5000] [--users 1000] [--rps 500] [--seconds 20]

BENCHMARK-ONLY SPAWNER: the gateway runs with `TableOnlySpawner` below, which records sessions
in memory and starts no processes (5,000 real sessions would need 5,000 X servers). Everything
else is the production gateway (create_app, JWT auth, registry, metrics, logs at warning), in
its own process so that the load generator does not share its event loop.

The load is open-loop (requests start on schedule whether or not earlier ones finished), a mix of
GET /api/sessions (the caller's list), GET /api/sessions/{id} and POST /api/sessions for an
application the caller already runs (answered with the existing session). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import socket
import statistics
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from gateway.app import create_app
from gateway.config import Config
from gateway.logs import setup_logging
from gateway.spawners.base import (Phase, Session, SessionRequest, SessionTable, Spawner,
                                   new_agent_token, new_session_id, utcnow)

SECRET = "bench-secret-long-enough-for-hs256-0123456789abcdef0123456789abcd"
APPS = ("gimp", "inkscape", "blender")


class TableOnlySpawner(Spawner):
    """BENCHMARK ONLY: sessions are rows in memory, marked running at once; no process starts."""

    name = "benchmark-table-only"

    def __init__(self) -> None:
        self._table = SessionTable()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def create(self, request: SessionRequest) -> Session:
        session = Session(id=new_session_id(), user=request.user, application=request.application,
                          phase=Phase.RUNNING, created_at=utcnow(), started_at=utcnow(),
                          agent_token=new_agent_token(), endpoint="http://127.0.0.1:9",
                          resources=request.resources, timeout=request.timeout, tier=request.tier)
        self._table.put(session)
        return session

    async def delete(self, session_id: str) -> None:
        session = self._table.get(session_id)
        if session is not None:
            self._table.put(replace(session, phase=Phase.TERMINATING))
            self._table.remove(session_id)

    def get(self, session_id: str) -> Session | None:
        return self._table.get(session_id)

    async def update_shares(self, session_id: str, change: Any) -> Session:
        session = self._table.get(session_id)
        if session is None:
            raise KeyError(session_id)
        session = replace(session, shares=change(session.shares))
        self._table.put(session)
        return session

    def list(self, user: str | None = None) -> list[Session]:
        return self._table.list(user)

    def subscribe(self, session_id: str | None = None) -> AbstractAsyncContextManager[Any]:
        return self._table.subscribe(session_id)


def serve(port: int, sessions: int, users: int, ready: Any) -> None:
    setup_logging("warning")
    config = Config(host="127.0.0.1", port=port, auth="jwt", jwt_secret=SECRET,
                    max_sessions_per_user=len(APPS), max_sessions_total=sessions)
    spawner = TableOnlySpawner()

    async def fill(app: web.Application) -> None:
        for i in range(sessions):
            await spawner.create(SessionRequest(user=f"user{i % users}", application=APPS[(i // users) % len(APPS)]))

    app = create_app(config, spawner)
    app.on_startup.append(fill)
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: ready.set(), access_log=None,
                handle_signals=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(base: str, users: int, rps: int, seconds: float) -> dict[str, Any]:
    tokens = [jwt.encode({"sub": f"user{u}", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
              for u in range(users)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    rng = random.Random(1)
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as http:
        ids: dict[int, list[str]] = {}
        for u in range(users):  # each user's session ids, outside the measurement
            async with http.get("/api/sessions", headers={"Authorization": f"Bearer {tokens[u]}"}) as r:
                ids[u] = [s["id"] for s in (await r.json())["sessions"]]
        total = sum(len(v) for v in ids.values())

        async def one(u: int, kind: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[u]}"}
            start = time.perf_counter()
            if kind == 0:
                r = await http.get("/api/sessions", headers=headers)
            elif kind == 1:
                r = await http.get(f"/api/sessions/{rng.choice(ids[u])}", headers=headers)
            else:
                r = await http.post("/api/sessions", json={"application": "gimp"}, headers=headers)
            await r.read()
            latencies.append(time.perf_counter() - start)
            statuses[r.status] = statuses.get(r.status, 0) + 1

        tasks = []
        t0 = time.perf_counter()
        n = int(rps * seconds)
        for i in range(n):
            delay = t0 + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(rng.randrange(users), i % 3)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    latencies.sort()
    q = lambda p: round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)  # noqa: E731
    return {"sessions_in_table": total, "requests": n, "achieved_rps": round(n / elapsed, 1),
            "latency_ms": {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(latencies[-1] * 1000, 2),
                           "mean": round(statistics.mean(latencies) * 1000, 2)},
            "statuses": statuses}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--rps", type=int, default=500)
    p.add_argument("--seconds", type=float, default=20)
    args = p.parse_args()
    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, args.sessions, args.users, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the gateway did not start")
        result = asyncio.run(load(f"http://127.0.0.1:{port}", args.users, args.rps, args.seconds))
    finally:
        server.terminate()
        server.join(10)
    print(json.dumps({"benchmark": "gateway_api", "spawner": "benchmark-only TableOnlySpawner (starts no processes)",
                      "auth": "jwt", "mix": "1/3 list, 1/3 get, 1/3 create-existing", **result}))


if __name__ == "__main__":
    main()
