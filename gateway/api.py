"""The session API: /api/sessions (SPEC "Gateway") and its SSE progress stream."""
from __future__ import annotations

import asyncio
import json
import shutil
import shlex
from typing import Any

from aiohttp import web

from gateway import openapi
from gateway import resources as resource_limits
from gateway.http import CONFIG, REGISTRY, json_error, user_of
from gateway.sessions import LimitError
from gateway.spawners.base import APPLICATIONS, Phase, Session, SpawnerError, SubscriberDropped

KEEPALIVE_S = 15.0
WRITE_TIMEOUT_S = 10.0  # a stream that cannot take a few bytes for this long is not read

routes = web.RouteTableDef()


class BadRequest(ValueError):
    pass


def parse_create(body: Any, max_timeout: int) -> tuple[str, dict[str, str], int | None]:
    """(application, resources, timeout) from a create body, or BadRequest saying what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(body) - {"application", "resources", "timeout"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    application = body.get("application")
    if application not in APPLICATIONS:
        raise BadRequest(f"application must be one of: {', '.join(APPLICATIONS)}")
    resources: dict[str, str] = {}
    raw = body.get("resources", {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadRequest("resources must be an object")
    for key, value in raw.items():
        if key not in resource_limits.KEYS:
            raise BadRequest(f"resources may only name: {', '.join(resource_limits.KEYS)}")
        text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(text, str) or len(text) > 16 or not resource_limits.is_quantity(text):
            raise BadRequest(f"resources.{key} must be a quantity such as \"2\", \"500m\" or \"2Gi\"")
        if key == "gpu" and not text.isdigit():
            # Kubernetes extended resources are whole devices (sharing is time-slicing's job).
            raise BadRequest("resources.gpu must be a whole number of GPUs such as \"1\"")
        resources[key] = text
    timeout = body.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                or not 0 < timeout <= max_timeout):
        raise BadRequest(f"timeout must be a whole number of seconds from 1 to {max_timeout}")
    return application, resources, timeout


@routes.get("/api/applications")
async def applications(request: web.Request) -> web.Response:
    """What the launcher offers, and whether each is installed where sessions run."""
    config = request.app[CONFIG]
    local = config.spawner == "local"

    def available(command: str) -> bool:
        words = shlex.split(command)
        return bool(words) and (not local or shutil.which(words[0]) is not None)

    return web.json_response({"applications": [
        {"name": app, "available": available(config.app_commands.get(app, ""))} for app in APPLICATIONS]})


@routes.get("/api/openapi.json")
async def openapi_description(request: web.Request) -> web.Response:
    """This API's OpenAPI description; public, as it says nothing the source does not."""
    return web.json_response(openapi.spec(request.app[CONFIG]))


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    charset = request.charset
    if charset is not None and charset.lower().replace("-", "").replace("_", "") != "utf8":
        # JSON is UTF-8 (RFC 8259); decoding by a declared charset would also let an unknown
        # name raise deep inside aiohttp.
        return json_error(400, f"unsupported charset {charset[:40]!r}: send UTF-8 JSON")
    try:
        body = json.loads(await request.read())
        application, resources, timeout = parse_create(body, config.max_timeout)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # BadRequest, JSONDecodeError, nesting
        return json_error(400, str(exc) if isinstance(exc, BadRequest) else "body is not valid JSON")
    try:
        resource_limits.check(resources, user_of(request).tier, config.resource_limits)
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        session, created = await request.app[REGISTRY].create(
            user_of(request), application, resources, timeout)
    except LimitError as exc:
        headers = ({"Retry-After": str(exc.retry_after or 30)}
                   if exc.status == 429 or exc.retry_after is not None else None)
        return json_error(exc.status, str(exc), headers)
    except SpawnerError as exc:
        return json_error(503, f"sessions cannot be started right now: {exc}")
    except ValueError as exc:  # the spawner refused input it cannot turn into a session
        return json_error(400, str(exc))
    return web.json_response(session.public(), status=201 if created else 200)


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    sessions = request.app[REGISTRY].list(user_of(request))
    return web.json_response({"sessions": [s.public() for s in sessions]})


def _mine(request: web.Request) -> Session:
    session = request.app[REGISTRY].get(user_of(request), request.match_info["id"])
    if session is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such session"}),
                               content_type="application/json")
    return session


@routes.get("/api/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    return web.json_response(_mine(request).public())


@routes.delete("/api/sessions/{id}")
async def delete_session(request: web.Request) -> web.Response:
    session = _mine(request)
    registry = request.app[REGISTRY]
    try:
        await registry.delete(session)
    except SpawnerError as exc:
        return json_error(503, f"the session cannot be ended right now: {exc}")
    current = registry.current(session)
    body = (current.public() if current is not None
            else {**session.public(), "phase": Phase.TERMINATING.value})
    return web.json_response(body, status=202)


def _event(session: Session, kind: str = "session") -> bytes:
    data = {**session.public(), "progress": round(session.progress, 3)}
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@routes.get("/api/sessions/{id}/events")
async def session_events(request: web.Request) -> web.StreamResponse:
    """Progress events until the session is running, failed or gone (then the stream ends).

    The stream subscribes to this session's changes only, with a bounded backlog, and every
    write has a deadline: a browser that stops reading is dropped instead of holding events
    (or the gateway's memory) for everybody else."""
    session = _mine(request)
    registry = request.app[REGISTRY]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})  # proxies must not hold events back
    await response.prepare(request)

    async def write(data: bytes) -> None:
        await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)

    try:
        async with registry.subscribe(session.id) as events:
            # Read the state after subscribing so that no change falls in between.
            current = registry.current(session)
            if current is None:
                await write(_event(session, "deleted"))
                return response
            await write(_event(current))
            while current.phase in (Phase.PENDING, Phase.TERMINATING):
                try:
                    event = await asyncio.wait_for(anext(events), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await write(b": keep-alive\n\n")
                    continue
                if event.type == "deleted":
                    await write(_event(event.session, "deleted"))
                    break
                current = event.session
                await write(_event(current))
    except (ConnectionResetError, asyncio.TimeoutError, SubscriberDropped):
        pass  # the browser went away, or stopped reading
    return response
