"""`/streaming/{id}/clipboard`: a session's X clipboard (text or a PNG image), through to its
agent's `/clipboard` (SPEC "Clipboard beyond text").

`allowed` is the one place that decides who may use a session's clipboard: the viewer's own
credentials, checked as for WHEP (the owner; `control` shares are to join there). The agent's
token is added; bodies stream both ways and are never held whole. A body over 32 MiB is refused
here: before it is read when Content-Length says so, else as soon as that much has come.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.http import CLIENT, REGISTRY, json_error, user_of
from gateway.logs import log_event
from gateway.spawners.base import Phase, Route, Session

log = logging.getLogger("gateway.clipboard-proxy")

PATH = "/streaming/{id}/clipboard"
MAX_BODY = 32 * 1024 * 1024  # the agent's limit for images (text has a smaller one there)
AGENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5, sock_read=60)
_RETURNED = ("Content-Type", "Cache-Control", "Retry-After")


class _TooLarge(Exception):
    pass


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, proxy)  # and HEAD
    app.router.add_put(PATH, proxy)


def allowed(request: web.Request) -> Session | None:
    """The session if the caller may use its clipboard, else None (a 404): its owner."""
    return request.app[REGISTRY].get(user_of(request), request.match_info["id"])


def _route(request: web.Request, session: Session) -> Route | web.Response:
    route = request.app[REGISTRY].route(session)
    if route is not None:
        return route
    if session.phase is Phase.PENDING:
        return json_error(503, "the session is still starting", {"Retry-After": "1"})
    return json_error(409, f"the session is {session.phase.value}"
                           + (f": {session.message}" if session.message else ""))


def _too_large() -> web.Response:
    response = json_error(413, f"the clipboard takes at most {MAX_BODY} bytes")
    response.force_close()  # rather than read a body nobody wants
    return response


async def proxy(request: web.Request) -> web.StreamResponse:
    session = allowed(request)
    if session is None:
        return json_error(404, "no such session")
    if request.method == "PUT" and (request.content_length or 0) > MAX_BODY:
        return _too_large()
    route = _route(request, session)
    if isinstance(route, web.Response):
        return route
    headers = {"Authorization": f"Bearer {route.token}"}
    body = None
    if request.method == "PUT":
        headers.update({h: request.headers[h] for h in ("Content-Type", "Content-Length")
                        if h in request.headers})
        body = _limited(request.content)
    try:
        async with request.app[CLIENT].request(request.method, f"{route.url}/clipboard", data=body,
                                               headers=headers, timeout=AGENT_TIMEOUT,
                                               allow_redirects=False) as upstream:
            if upstream.status == 401:  # the gateway's own credentials were refused
                log_event(log, "agent_refused_token", level=logging.ERROR, session_id=session.id)
                return json_error(502, "the session's agent refused the gateway")
            return await _relay(request, upstream)
    except _TooLarge:
        return _too_large()
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionResetError) as exc:
        if isinstance(exc.__cause__, _TooLarge) or isinstance(exc.__context__, _TooLarge):
            return _too_large()
        log_event(log, "agent_unreachable", level=logging.WARNING, session_id=session.id,
                  user_id=session.user, error=repr(exc))
        return json_error(502, "the session's agent did not answer")


async def _limited(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The browser's body as it arrives, cut off past MAX_BODY (a chunked body says no size)."""
    total = 0
    while chunk := await stream.readany():
        total += len(chunk)
        if total > MAX_BODY:
            raise _TooLarge()
        yield chunk


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    out = CIMultiDict((k, v) for k, v in upstream.headers.items() if k in _RETURNED)
    response = web.StreamResponse(status=upstream.status, headers=out)
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    if request.method != "HEAD":
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # The agent went away mid-answer: the browser must see a cut, not a short image.
            log_event(log, "agent_lost_mid_answer", level=logging.WARNING, error=repr(exc),
                      session_id=request.match_info["id"])
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response
