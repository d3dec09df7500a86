"""The controller never stops because of what a session pod says or what a Session holds.

- Property: any `/health` answer (served by a real server the test controls: JSON of any
  shape, garbage, 50 MB, a redirect, slow, hanging, cut off, not even HTTP) gives a viewer
  count (a whole `peers` of a small JSON object, else 0) within the timeout.
- Property: any Session (status and spec of any shape) goes through the gateway's snapshot,
  the idle monitor and the reconciler without an exception escaping (API refusals aside,
  which the worker retries).
- The loops keep running around them: with hanging, huge and malformed pods and Sessions
  next to them, other sessions are still culled, refreshed and reconciled; a loop that fails
  is logged and restarted while the others go on.
"""
from __future__ import annotations

import asyncio
import functools
import gzip
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.controller.activity import HEALTH_LIMIT, ActivityMonitor, idle_deadline
from gateway.controller.events import Recorder
from gateway.controller.reconciler import Reconciler
from gateway.controller.service import Controller
from gateway.kube import fields, objects
from gateway.kube.cache import Informer
from gateway.kube.client import PODS, SESSIONS, Kube, KubeError, connect
from gateway.logs import JsonFormatter
from gateway.spawners.kubernetes import to_session
from tests.agent_process import free_port
from tests.kube.conftest import FAST, NAMESPACE, eventually
from tests.kube.fakeapi import FakeKube
from tests.kube.kubelet import FakeKubelet

PROPS = settings(max_examples=int(os.environ.get("PROPS_EXAMPLES", 60)), deadline=None,
                 derandomize="PROPS_EXAMPLES" not in os.environ, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])
TIMEOUT = 0.3  # the monitor's per-pod timeout in these tests
LONG_AGO = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63) |
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


# ---- /health answers ------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    body: bytes
    mode: str  # how it is served (see PodServer.handle)


MODES = ("whole", "chunked", "slow", "hang", "huge", "cut", "length-lie", "redirect", "gzip",
         "raw")
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"status": st.just("ok")}, optional={"peers": json_values}).map(
        lambda v: json.dumps(v).encode()),
    st.builds(lambda n, pad: json.dumps({"peers": n, "pad": "x" * pad}).encode(),
              st.integers(0, 50), st.sampled_from([0, 100, HEALTH_LIMIT])),  # at/over the limit
    st.binary(max_size=300),
    st.sampled_from([b"[" * 3000 + b"]" * 3000, b'{"peers": 1e999}', b'{"peers": true}',
                     b'{"peers": 3, "peers": -1}', b"\xff\xfe{}", b""]),
)
answers = st.builds(Answer, status=st.sampled_from([200, 200, 200, 204, 302, 404, 500, 503]),
                    body=bodies, mode=st.sampled_from(MODES))


def expected(answer: Answer) -> int:
    """The oracle: a viewer count only for a complete 200 JSON object within the limit."""
    if answer.mode not in ("whole", "chunked", "slow") or answer.status != 200 or \
            len(answer.body) > HEALTH_LIMIT:
        return 0
    try:
        data = json.loads(answer.body)
    except (ValueError, RecursionError):
        return 0
    peers = data.get("peers") if isinstance(data, dict) else None
    return peers if type(peers) is int and peers >= 0 else 0


@functools.cache
def bomb() -> bytes:
    """{"peers": 7, ...50 MB...} gzipped into 50 kB."""
    return gzip.compress(b'{"peers": 7, "x": "' + b"0" * 50_000_000 + b'"}')


class PodServer:
    """What a session pod might answer on /health: `answer` decides, per request."""

    def __init__(self) -> None:
        self.answer = Answer(200, b'{"status": "ok", "peers": 0}', "whole")
        self.elsewhere = 0  # hits on the redirect's target: must stay 0
        self.port = self.raw_port = 0
        self._runner: web.AppRunner | None = None
        self._raw: asyncio.Server | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self.handle)
        app.router.add_get("/elsewhere", self.redirected)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._raw = await asyncio.start_server(self.raw, "127.0.0.1", 0)
        self.raw_port = self._raw.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._raw is not None:
            self._raw.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def endpoint(self) -> str:
        port = self.raw_port if self.answer.mode == "raw" else self.port
        return f"http://127.0.0.1:{port}"

    async def redirected(self, request: web.Request) -> web.Response:
        self.elsewhere += 1
        return web.json_response({"peers": 99})

    async def raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Not HTTP at all, or HTTP with a 100 kB header line."""
        await reader.read(1024)
        writer.write(self.answer.body or b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000)
        await writer.drain()
        writer.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        a = self.answer
        if a.mode == "hang":  # accepts, never answers
            await asyncio.sleep(3600)
        if a.mode == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/elsewhere")
        if a.mode in ("whole", "gzip"):
            body = bomb() if a.mode == "gzip" else a.body
            headers = {"Content-Encoding": "gzip"} if a.mode == "gzip" else {}
            return web.Response(status=a.status, body=body, headers=headers,
                                content_type="application/json")
        response = web.StreamResponse(status=a.status, headers={
            "Content-Type": "application/json"})
        if a.mode == "length-lie":
            response.content_length = len(a.body) + 100
        await response.prepare(request)
        try:
            if a.mode == "huge":  # 50 MB, if anyone read that much
                for _ in range(800):
                    await response.write(b" " * 65536)
            elif a.mode == "slow":  # trickles
                for i in range(len(a.body)):
                    await response.write(a.body[i:i + 1])
                    await asyncio.sleep(0.02)
            else:
                await response.write(a.body[:len(a.body) // 2])
                if a.mode in ("cut", "length-lie"):
                    request.transport.abort()
                    return response
                await response.write(a.body[len(a.body) // 2:])
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the monitor stopped reading, as it should
        return response


@pytest.fixture
async def pod() -> AsyncIterator[PodServer]:
    server = PodServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def monitor(kube: Kube) -> AsyncIterator[ActivityMonitor]:
    sessions = Informer(kube, SESSIONS)
    yield ActivityMonitor(kube, sessions, Recorder(kube), interval=0.2, timeout=TIMEOUT)


@PROPS
@given(answer=answers)
async def test_any_health_answer_gives_a_count_in_time(pod: PodServer, monitor: ActivityMonitor,
                                                       answer: Answer) -> None:
    pod.answer = answer
    async with monitor.client() as http:
        async with asyncio.timeout(TIMEOUT + 2):  # bounded, whatever the pod does
            viewers, _ = await monitor._activity(http, pod.endpoint())
    want = expected(answer)
    assert viewers == want or (answer.mode == "slow" and viewers == 0), (viewers, want)
    assert pod.elsewhere == 0  # a redirect is never followed


# ---- Session objects ------------------------------------------------------------------------
def status_fields(endpoint: str) -> dict[str, Any]:
    times = st.one_of(st.just(LONG_AGO), st.just("2026-13-45T99:99:99Z"),
                      st.just("2026-01-01T00:00:00"), json_values)
    return {
        "phase": st.one_of(st.sampled_from(fields.PHASES), json_values),
        "endpoint": st.one_of(st.just(endpoint), st.just("http://[::1]:0"),
                              st.just("http://metadata.google.internal:80"),
                              st.just("file:///etc/passwd"), json_values),
        "podName": json_values, "startTime": times, "lastActivity": times,
        "message": json_values, "tokenUID": json_values,
        "conditions": st.one_of(json_values, st.lists(st.fixed_dictionaries(
            {"type": st.just("Ready")}, optional={"status": json_values, "reason": json_values,
                                                  "lastTransitionTime": times}), max_size=2)),
    }


def sessions(endpoint: str) -> st.SearchStrategy[dict[str, Any]]:
    spec = st.fixed_dictionaries({}, optional={
        "userId": st.one_of(st.text(min_size=1, max_size=20), json_values),
        "application": st.one_of(st.sampled_from(objects.APPLICATIONS), json_values),
        "timeout": st.one_of(st.integers(-5, 10 ** 15), json_values),
        "resources": st.one_of(st.fixed_dictionaries({}, optional={
            "cpu": st.sampled_from(["1", "500m", "lots"]), "gpu": st.sampled_from(["0", "1", "x"]),
            "memory": st.sampled_from(["2Gi", "-1"])}), json_values),
        "storage": json_values, "ephemeral": st.one_of(st.booleans(), json_values)})
    status = st.one_of(json_values, st.fixed_dictionaries({}, optional=status_fields(endpoint)))
    return st.fixed_dictionaries({"spec": spec}, optional={
        "status": status, "deleting": st.booleans()})


class Names:
    count = 0

    @classmethod
    def next(cls) -> str:
        cls.count += 1
        return f"odd-{cls.count}"


def materialize(api: FakeKube, drawn: dict[str, Any]) -> dict[str, Any]:
    """The drawn Session, stored as it is (unvalidated) in the fake API server."""
    name = Names.next()
    meta: dict[str, Any] = {"name": name, "labels": {"app": objects.SESSION_APP_LABEL},
                            "finalizers": [objects.FINALIZER]}
    if drawn.get("deleting"):
        meta["deletionTimestamp"] = LONG_AGO
    obj = {"apiVersion": objects.API_VERSION, "kind": objects.KIND, "metadata": meta,
           "spec": drawn["spec"]}
    if "status" in drawn:
        obj["status"] = drawn["status"]
    return api.inject("sessions", NAMESPACE, obj)


@pytest.fixture
async def reconciler(kube: Kube) -> AsyncIterator[Reconciler]:
    sessions, pods = Informer(kube, SESSIONS), Informer(kube, PODS)
    recorder = Recorder(kube)
    yield Reconciler(kube, sessions, pods, FAST, recorder)
    await recorder.flush()


@PROPS
@given(data=st.data())
async def test_any_session_is_handled(api: FakeKube, pod: PodServer, monitor: ActivityMonitor,
                                      reconciler: Reconciler, data: st.DataObject) -> None:
    session = materialize(api, data.draw(sessions(pod.endpoint())))
    name = session["metadata"]["name"]
    snapshot = to_session(session)  # the gateway's view: never raises
    assert snapshot.id == name and snapshot.phase.value in fields.PHASES
    assert snapshot.endpoint in (None, fields.endpoint(session))
    idle_deadline(session)
    async with monitor.client() as http:
        async with asyncio.timeout(TIMEOUT + 5):
            await monitor.check(http, session)  # swallows and logs whatever goes wrong
    reconciler.sessions.store[name] = session
    try:
        await reconciler.reconcile(name)  # only the API may refuse (the worker retries those)
    except KubeError as exc:
        assert exc.status in (404, 409, 422), exc
    assert reconciler.queue is not None  # and the reconciler is still usable: the next one


# ---- the loops keep running -----------------------------------------------------------------
async def health_server(behaviour: str, port: int) -> web.AppRunner:
    async def answer(request: web.Request) -> web.StreamResponse:
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "huge":
            response = web.StreamResponse()
            await response.prepare(request)
            try:
                for _ in range(800):
                    await response.write(b"[" * 65536)
            except (ConnectionResetError, RuntimeError):
                pass
            return response
        bodies = {"list": b"[1, 2, 3]", "garbage": b"\x00garbage", "idle": b'{"peers": 0}',
                  "watched": b'{"peers": 2}', "float": b'{"peers": 1.5}'}
        return web.Response(body=bodies[behaviour], content_type="application/json")

    app = web.Application()
    app.router.add_get("/health", answer)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def running(name: str, port: int | None, timeout: Any = 1, **status: Any) -> dict[str, Any]:
    base = {"phase": "running", "startTime": LONG_AGO}
    if port is not None:
        base["endpoint"] = f"http://127.0.0.1:{port}"
    return {"apiVersion": objects.API_VERSION, "kind": objects.KIND,
            "metadata": {"name": name, "labels": {"app": objects.SESSION_APP_LABEL}},
            "spec": {"userId": name, "application": "gimp", "timeout": timeout},
            "status": {**base, **status}}


async def test_odd_pods_and_sessions_do_not_stop_the_idle_monitor(
        api: FakeKube, kube: Kube, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.session-controller")
    behaviours = ["hang"] * 40 + ["huge", "list", "garbage", "float"]  # 40 > the 32 slots
    ports = {b: free_port() for b in {*behaviours, "idle", "watched"}}
    runners = [await health_server(b, p) for b, p in ports.items()]
    for i, behaviour in enumerate(behaviours):  # odd pods (a day to go before their timeout)
        api.inject("sessions", NAMESPACE, running(f"odd-{i}", ports[behaviour], timeout=86400))
    for i, (timeout, status) in enumerate([  # odd Sessions
            (1, {}), ("abc", {}), (True, {}), (10 ** 15, {}), (1, {"startTime": "yesterday"}),
            (1, {"lastActivity": 5}), (1, {"endpoint": ["x"]})]):
        api.inject("sessions", NAMESPACE, running(f"shape-{i}", None if i == 0 else
                                                  ports["idle"], timeout=timeout, **status))
    api.inject("sessions", NAMESPACE, {**running("listed", ports["idle"]), "status": [1]})
    api.inject("sessions", NAMESPACE, running("idle", ports["idle"]))
    api.inject("sessions", NAMESPACE, running("watched", ports["watched"]))
    sessions = Informer(kube, SESSIONS)
    sessions.start()
    monitor = ActivityMonitor(kube, sessions, Recorder(kube), interval=0.2, timeout=TIMEOUT)
    task = asyncio.create_task(monitor.run())
    try:
        await sessions.wait_synced()
        await eventually(lambda: api.get("sessions", NAMESPACE, "idle") is None, timeout=30)
        await eventually(lambda: api.get("sessions", NAMESPACE, "shape-5") is None, timeout=30)
        await eventually(lambda: fields.status(api.get("sessions", NAMESPACE, "watched")).get(
            "lastActivity") not in (None, LONG_AGO), timeout=30)
        await asyncio.sleep(1)  # a few more rounds over the same odd objects
        assert not task.done()
        survivors = {s["metadata"]["name"] for s in api.objects("sessions", NAMESPACE)}
        assert {f"odd-{i}" for i in range(len(behaviours))} <= survivors
        # No endpoint, no usable timeout or start time, no status object: nothing is done.
        assert {"shape-0", "shape-1", "shape-2", "shape-3", "shape-4", "shape-6",
                "listed"} <= survivors
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sessions.stop()
        for runner in runners:
            await runner.cleanup()


class FlakyController(Controller):
    """The real controller plus one loop that always fails, as a bug would."""

    runs = 0

    def loops(self) -> dict[str, Any]:
        async def flaky() -> None:
            FlakyController.runs += 1
            await asyncio.sleep(0.05)
            raise RuntimeError("a bug in one loop")
        return {**super().loops(), "flaky": flaky}


async def test_a_failing_loop_is_restarted_and_the_others_go_on(
        api: FakeKube, kubelet: FakeKubelet, kube: Kube, kubeconfig: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.session-controller")
    client = Kube(await connect(), NAMESPACE)
    controller = FlakyController(client, replace(FAST, identity="flaky"))
    await controller.start()
    try:
        await controller.leading.wait()
        # Odd Sessions for the reconciler, next to good ones.
        for i, spec in enumerate([{"userId": 7, "application": "gimp"}, {"userId": "x"},
                                  {"userId": "y", "application": "gimp", "resources": [1]}]):
            api.inject("sessions", NAMESPACE, {
                "apiVersion": objects.API_VERSION, "kind": objects.KIND,
                "metadata": {"name": f"bad-{i}", "labels": {"app": objects.SESSION_APP_LABEL}},
                "spec": spec})
        for i in range(3):
            await kube.create(SESSIONS, objects.session_manifest(f"good-{i}", f"g{i}", "gimp"))
        await eventually(lambda: all(fields.status(api.get("sessions", NAMESPACE, f"good-{i}"))
                                     .get("phase") == "running" for i in range(3)))
        await eventually(lambda: all(fields.status(api.get("sessions", NAMESPACE, f"bad-{i}"))
                                     .get("phase") == "failed" for i in range(3)))
        await eventually(lambda: controller.restarts.get("flaky", 0) >= 3)
        assert controller.leading.is_set()
        assert set(controller.restarts) == {"flaky"}  # the real loops never failed
        messages = [fields.status(api.get("sessions", NAMESPACE, f"bad-{i}"))["message"]
                    for i in range(3)]
        assert all(m.startswith("spec.") for m in messages), messages
    finally:
        await controller.stop()
        await client.close()
    failed = [json.loads(JsonFormatter().format(r)) for r in caplog.records
              if getattr(r, "fields", {}).get("action") == "controller_loop_failed"]
    assert failed and all(f["loop"] == "flaky" and "a bug in one loop" in f["error"]
                          for f in failed)
