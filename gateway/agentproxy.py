"""What every proxy to a session's agent shares (streaming.py, files.py, clipboard.py): the
agent to talk to or the error the browser gets, and an agent's answer streamed back."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.http import REGISTRY, json_error
from gateway.logs import log_event
from gateway.spawners.base import Phase, Route, Session

log = logging.getLogger("gateway.agent-proxy")


def agent_route(request: web.Request, session: Session) -> Route | web.Response:
    """The session's agent, or why there is none to talk to: 503 while it starts, 409 after."""
    route = request.app[REGISTRY].route(session)
    if route is not None:
        return route
    if session.phase is Phase.PENDING:
        return json_error(503, "the session is still starting", {"Retry-After": "1"})
    return json_error(409, f"the session is {session.phase.value}"
                           + (f": {session.message}" if session.message else ""))


def returned_headers(headers: Iterable[tuple[str, str]], names: Collection[str]) -> CIMultiDict[str]:
    """The agent's headers that mean something to the browser; `names` in lower case."""
    return CIMultiDict((k, v) for k, v in headers if k.lower() in names)


async def chunks(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """A body as the socket delivered it: each chunk as it is, never joined (no copy)."""
    while not stream.at_eof():  # an empty body's reader answers "end of chunk" for ever
        chunk, end_of_http_chunk = await stream.readchunk()
        if chunk:
            yield chunk
        elif not end_of_http_chunk:
            return


async def relay(request: web.Request, upstream: aiohttp.ClientResponse,
                names: Collection[str]) -> web.StreamResponse:
    """Stream the agent's answer to the browser, never holding it whole. If the agent goes away
    mid-answer the browser's connection is cut: it must see a cut, not a short body."""
    response = web.StreamResponse(status=upstream.status,
                                  headers=returned_headers(upstream.headers.items(), names))
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    if request.method != "HEAD":
        try:
            async for chunk in chunks(upstream.content):
                await response.write(chunk)
        except ConnectionResetError:  # the browser went away mid-answer
            return response
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log_event(log, "agent_lost_mid_answer", level=logging.WARNING, error=repr(exc),
                      session_id=request.match_info["id"], path=request.path)
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response
