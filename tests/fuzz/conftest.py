"""A live gateway on 127.0.0.1 for the fuzzers: the production app (create_app, local spawner,
real session agents streaming a light application) served from a thread with its own event
loop, so that synchronous clients (schemathesis' requests, hypothesis) can drive it."""
from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.runner import JsonErrorRunner
from gateway.config import Config
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, bearer, make_config


@dataclass
class LiveGateway:
    url: str
    app: web.Application
    loop: asyncio.AbstractEventLoop

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={**bearer(), "Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def session_ids(self) -> list[str]:
        return [s["id"] for s in self.request("GET", "/api/sessions")[1]["sessions"]]


def serve(config: Config) -> Iterator[LiveGateway]:
    """Run create_app(config) on 127.0.0.1 until the generator is closed."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = create_app(config)
    runner = JsonErrorRunner(app, access_log=None)  # what python -m gateway runs

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}", app, loop)
    finally:
        done: Future[None] = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        done.result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def live_config(tmp: Path, **changes: Any) -> Config:
    """Sessions that really run: an agent on its own Xvfb with a light application."""
    return make_config(tmp, agent_command=REAL_AGENT, session_size="320x240",
                       app_commands={app: LIGHT_APP for app in ("gimp", "inkscape", "blender")},
                       **changes)


@pytest.fixture(scope="package")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    yield from serve(live_config(tmp_path_factory.mktemp("gateway")))

