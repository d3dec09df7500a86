"""The session API: /api/sessions (SPEC "Gateway") and its SSE progress stream."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import shlex
import time
from typing import Any

from aiohttp import web

import aiohttp

from gateway import openapi, shares
from gateway import resources as resource_limits
from gateway.http import CLIENT, CONFIG, REGISTRY, json_error, user_of, viewer_session
from gateway.logs import log_event
from gateway.sessions import LimitError
from gateway.spawners.base import APPLICATIONS, Phase, Session, SpawnerError, SubscriberDropped

KEEPALIVE_S = 15.0
WRITE_TIMEOUT_S = 10.0  # a stream that cannot take a few bytes for this long is not read

AGENT_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2)

log = logging.getLogger("gateway.shares")
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
    """The owner's, or (the viewer page asks) a guest's of this very session."""
    session = viewer_session(request)
    if session is None:
        return json_error(404, "no such session")
    return web.json_response(session.public())


async def _json_body(request: web.Request) -> object:
    charset = request.charset
    if charset is not None and charset.lower().replace("-", "").replace("_", "") != "utf8":
        raise shares.ShareError(f"unsupported charset {charset[:40]!r}: send UTF-8 JSON")
    raw = await request.read()
    try:
        return json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise shares.ShareError("body is not valid JSON") from None


@routes.post("/api/sessions/{id}/shares")
async def create_share(request: web.Request) -> web.Response:
    session = _mine(request)
    try:
        role, expires_in = shares.parse_create(await _json_body(request))
    except shares.ShareError as exc:
        return json_error(400, str(exc))
    if not session.active:
        return json_error(409, f"the session is {session.phase.value}: there is nothing to share")
    now = time.time()
    share, token = shares.new_share(role, expires_in, now)

    def add(current: tuple[shares.Share, ...]) -> tuple[shares.Share, ...]:
        live = shares.pruned(current, now)
        if len(live) >= shares.MAX_SHARES:
            raise shares.ShareError(f"at most {shares.MAX_SHARES} links per session: revoke one")
        return (*live, share)

    try:
        await request.app[REGISTRY].spawner.update_shares(session.id, add)
    except shares.ShareError as exc:
        return json_error(409, str(exc))
    except KeyError:
        return json_error(404, "no such session")
    except SpawnerError as exc:
        return json_error(503, f"the link cannot be stored right now: {exc}")
    log_event(log, "share_created", session_id=session.id, user_id=session.user, share=share.id,
              role=role, expires_at=share.expires_at)
    return web.json_response({"id": share.id, "role": role, "url": shares.link(session.id, token),
                              "expires_at": share.expires_at}, status=201)


@routes.get("/api/sessions/{id}/shares")
async def list_shares(request: web.Request) -> web.Response:
    session = _mine(request)
    now = time.time()
    return web.json_response({"shares": [s.public() for s in shares.pruned(session.shares, now)]})


@routes.delete("/api/sessions/{id}/shares/{share}")
async def revoke_share(request: web.Request) -> web.Response:
    """Forget the share (no request with its grant passes any more, on any replica), then
    tell the agent to disconnect its viewers now (media does not pass the gateway)."""
    session = _mine(request)
    share_id = request.match_info["share"]
    if not any(s.id == share_id for s in session.shares):
        return json_error(404, "no such share")
    try:
        updated = await request.app[REGISTRY].spawner.update_shares(
            session.id, lambda current: tuple(s for s in current if s.id != share_id))
    except KeyError:
        return json_error(404, "no such session")
    except SpawnerError as exc:
        return json_error(503, f"the link cannot be revoked right now: {exc}")
    disconnected = await _disconnect(request, updated, share_id)
    log_event(log, "share_revoked", session_id=session.id, user_id=session.user, share=share_id,
              disconnected=disconnected)
    return web.Response(status=204)


async def _agent(request: web.Request, session: Session, method: str, path: str,
                 body: object = None) -> tuple[int, object]:
    """(status, JSON) from the session's agent; (502, None) when it cannot be asked."""
    route = request.app[REGISTRY].route(session)
    if route is None:
        return 409, None
    try:
        async with request.app[CLIENT].request(
                method, route.url + path, json=body, timeout=AGENT_TIMEOUT,
                headers={"Authorization": f"Bearer {route.token}"}) as r:
            return r.status, await r.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        log_event(log, "agent_unreachable", level=logging.WARNING, session_id=session.id,
                  error=repr(exc))
        return 502, None


async def _disconnect(request: web.Request, session: Session, share_id: str) -> int | None:
    status, body = await _agent(request, session, "POST", "/viewers/disconnect", {"share": share_id})
    if status == 200 and isinstance(body, dict) and isinstance(body.get("disconnected"), int):
        return body["disconnected"]
    return None  # not running (nobody to disconnect), or unreachable: its grant is dead anyway


@routes.get("/api/sessions/{id}/viewers")
async def list_viewers(request: web.Request) -> web.Response:
    session = _mine(request)
    if request.app[REGISTRY].route(session) is None:
        return web.json_response({"viewers": []})
    status, body = await _agent(request, session, "GET", "/viewers")
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("viewers"), list):
        return json_error(502, "the session's agent did not answer")
    keys = ("peer", "role", "transport", "since", "label", "share", "expires_at")
    viewers = [{k: v[k] for k in keys if k in v} for v in body["viewers"] if isinstance(v, dict)]
    return web.json_response({"viewers": viewers})


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
