"""`/streaming/{id}/clipboard`: a session's X clipboard (text or a PNG image), through to its
agent's `/clipboard` (SPEC "Clipboard beyond text").

`allowed` is the one place that decides who may use a session's clipboard: the viewer's own
credentials, checked as for WHEP (the owner, or a `control` share's guest). The agent's
token is added; bodies stream both ways and are never held whole. A body over 32 MiB is refused
here: before it is read when Content-Length says so, else as soon as that much has come.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.agentproxy import agent_route, relay
from gateway.http import CLIENT, json_error, viewer_session
from gateway.logs import log_event
from gateway.spawners.base import Session

log = logging.getLogger("gateway.clipboard-proxy")

PATH = "/streaming/{id}/clipboard"
MAX_BODY = 32 * 1024 * 1024  # the agent's limit for images (text has a smaller one there)
AGENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5, sock_read=60)
_RETURNED = frozenset(("content-type", "cache-control", "retry-after"))


class _TooLarge(Exception):
    pass


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, proxy)  # and HEAD
    app.router.add_put(PATH, proxy)


def allowed(request: web.Request) -> Session | None:
    """The session if the caller may use its clipboard, else None (a 404): its owner, or a
    guest of one of its shares (gateway/app.py lets only `control` guests come this far)."""
    return viewer_session(request)


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
    route = agent_route(request, session)
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
            return await relay(request, upstream, _RETURNED)
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
