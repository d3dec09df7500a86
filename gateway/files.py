"""`/api/sessions/{id}/files/{path}`: the files in a session's home, through to its agent.

Owner only: `_owned` is the one place that decides who may use a session's files, and it admits
the owner alone (shares, when they come, must not get here). The agent's token is added, as for
WHEP. Bodies stream both ways and are never held whole: the request's body goes to the agent as
it arrives, the agent's answer goes to the browser as it arrives. The path is passed on exactly
as the browser encoded it (the agent parses and confines it); dot segments are refused here
too, because an HTTP client normalizes them away and would otherwise send `files/../metrics` to
the agent's `/metrics`.
"""
from __future__ import annotations

import asyncio
import http.client
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web
from yarl import URL

from gateway import splice
from gateway.agentproxy import agent_route, chunks, relay, returned_headers
from gateway.http import REGISTRY, json_error, user_of
from gateway.logs import log_event
from gateway.spawners.base import Session

log = logging.getLogger("gateway.files-proxy")

HOME = "/api/sessions/{id}/files/"
PATH = "/api/sessions/{id}/files/{path:.+}"
PIECE = 1 << 20
# Uploads may take minutes: no total limit, but an agent silent this long is gone.
AGENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5, sock_read=120)
_FORWARDED = ("Content-Type", "Content-Length", "Range", "If-Range", "If-Match", "If-None-Match")
_RETURNED = frozenset(h.lower() for h in (
    "Content-Type", "ETag", "Last-Modified", "Content-Range", "Content-Disposition", "Accept-Ranges",
    "Cache-Control"))

FILES_CLIENT = web.AppKey("files_client", aiohttp.ClientSession)
# Bodies of at least this size on plain TCP move in the kernel (gateway/splice.py), one thread
# each, at most RELAY_THREADS at once (more go the streaming way).
SPLICE_MIN = 1 << 20
RELAY_THREADS = 32
SPLICE_TIMEOUT_S = 120.0
_ASCII = "".join(map(chr, range(0x21, 0x7F)))


class _Relays:
    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(RELAY_THREADS, thread_name_prefix="files-relay")
        self.active = 0

    async def run(self, fn, *args):  # type: ignore[no-untyped-def]
        self.active += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.active -= 1


RELAYS = web.AppKey("files_relays", _Relays)


def setup(app: web.Application) -> None:
    """The routes, and a client for the agents of its own: bodies move in large reads."""
    for path in (HOME, PATH):
        app.router.add_get(path, proxy)  # and HEAD
        app.router.add_put(path, proxy)
        app.router.add_delete(path, proxy)
    app.cleanup_ctx.append(_client)


async def _client(app: web.Application) -> AsyncIterator[None]:
    app[FILES_CLIENT] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, read_bufsize=PIECE)
    app[RELAYS] = _Relays()
    yield
    await app[FILES_CLIENT].close()
    app[RELAYS].pool.shutdown(wait=False, cancel_futures=True)


def _owned(request: web.Request) -> Session | None:
    """The session if the caller owns it; anybody else (another user, a share) gets None: 404."""
    return request.app[REGISTRY].get(user_of(request), request.match_info["id"])


def _raw_path(request: web.Request) -> str:
    """What follows `/files/` in the URL, still percent-encoded."""
    return request.raw_path.split("?", 1)[0].split("#", 1)[0].split("/", 5)[5]


async def proxy(request: web.Request) -> web.StreamResponse:
    session = _owned(request)
    if session is None:
        return json_error(404, "no such session")
    raw = _raw_path(request)
    if any(unquote(segment) in (".", "..") for segment in raw.split("/")):
        return json_error(400, "'.' and '..' are not allowed in the path")
    route = agent_route(request, session)
    if isinstance(route, web.Response):
        return route
    query = "?download=1" if request.query.get("download") == "1" else ""
    url = URL(f"{route.url}/files/{raw}{query}", encoded=True)  # exactly as the browser sent it
    headers = {"Authorization": f"Bearer {route.token}",
               **{h: request.headers[h] for h in _FORWARDED if h in request.headers}}
    browser = _plain_socket(request)
    if browser is not None and url.scheme == "http" and request.app[RELAYS].active < RELAY_THREADS:
        agent = (url.host or "", url.port or 80, quote(f"/files/{raw}", safe=_ASCII) + query)
        if request.method == "PUT" and (request.content_length or 0) >= SPLICE_MIN:
            return await _spliced_upload(request, session, agent, headers, browser)
        if request.method == "GET":
            return await _spliced_download(request, session, agent, headers, browser)
    body = chunks(request.content) if request.method == "PUT" else None
    try:
        async with request.app[FILES_CLIENT].request(
                request.method, url, data=body, headers=headers, timeout=AGENT_TIMEOUT,
                allow_redirects=False) as upstream:
            if upstream.status == 401:  # the gateway's own credentials were refused
                log_event(log, "agent_refused_token", level=logging.ERROR, session_id=session.id)
                return json_error(502, "the session's agent refused the gateway")
            return await relay(request, upstream, _RETURNED)
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionResetError) as exc:
        transport = request.transport
        if transport is None or transport.is_closing():  # the browser went away (a cut upload)
            return _client_gone(session, request.method)
        log_event(log, "agent_unreachable", level=logging.WARNING, session_id=session.id,
                  user_id=session.user, error=repr(exc))
        return json_error(502, "the session's agent did not answer")


# -- large bodies in the kernel (gateway/splice.py) ------------------------------------------

def _plain_socket(request: web.Request) -> int | None:
    """The browser connection's socket descriptor when it is plain TCP (not TLS), else None."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    return sock.fileno() if sock is not None and sock.fileno() >= 0 else None


def _client_gone(session: Session, method: str) -> web.Response:
    """The browser went away mid-upload; the agent saw the cut too and kept nothing."""
    log_event(log, "files_client_gone", session_id=session.id, user_id=session.user, method=method)
    return json_error(400, "the upload was cut off: nothing was kept")


def _agent_failed(session: Session, exc: BaseException) -> web.Response:
    log_event(log, "agent_unreachable", level=logging.WARNING, session_id=session.id,
              user_id=session.user, error=repr(exc))
    return json_error(502, "the session's agent did not answer")


async def _spliced_upload(request: web.Request, session: Session, agent: tuple[str, int, str],
                          headers: dict[str, str], browser: int) -> web.StreamResponse:
    """The body goes from the browser's socket to the agent's in the kernel. aiohttp stops
    reading the connection first; what it had already read goes ahead of the rest. The
    connection closes after the answer (aiohttp's parser has not seen the body)."""
    head = bytearray()
    try:
        # Draining aiohttp's buffer may make it parse bytes it held back (its read pause):
        # until nothing comes, then it stops reading, and the rest is in the socket.
        while piece := request.content.read_nowait():
            head += piece
    except (ConnectionResetError, aiohttp.ClientPayloadError):
        return _client_gone(session, "PUT")
    request.protocol.pause_reading()
    remaining = (request.content_length or 0) - request.content.total_bytes
    client = os.dup(browser)  # ours: the transport closing its own cannot make it another socket
    try:
        status, agent_headers, body = await request.app[RELAYS].run(
            splice.upload, *agent[:2], agent[2], headers, bytes(head), client, remaining,
            SPLICE_TIMEOUT_S)
    except splice.SenderGone:
        return _client_gone(session, "PUT")
    except (OSError, http.client.HTTPException) as exc:
        return _agent_failed(session, exc)
    finally:
        os.close(client)
        request.content.feed_eof()  # nothing more to read for aiohttp: no lingering either
    if status == 401:
        log_event(log, "agent_refused_token", level=logging.ERROR, session_id=session.id)
        return json_error(502, "the session's agent refused the gateway")
    response = web.Response(status=status, body=body, headers=returned_headers(agent_headers, _RETURNED))
    response.force_close()
    return response


async def _spliced_download(request: web.Request, session: Session, agent: tuple[str, int, str],
                            headers: dict[str, str], browser: int) -> web.StreamResponse:
    """The agent's head is read and passed on; a large body then goes from the agent's socket
    to the browser's in the kernel (a small one, a listing or an error, is simply relayed)."""
    relays = request.app[RELAYS]
    try:
        download = await relays.run(splice.Download, *agent, headers, SPLICE_TIMEOUT_S)
    except (OSError, http.client.HTTPException) as exc:
        return _agent_failed(session, exc)
    if download.status == 401:
        download.close()
        log_event(log, "agent_refused_token", level=logging.ERROR, session_id=session.id)
        return json_error(502, "the session's agent refused the gateway")
    if download.status not in (200, 206) or download.length is None or download.length < SPLICE_MIN:
        try:
            body = await relays.run(download.read)
        except (OSError, http.client.HTTPException) as exc:
            return _agent_failed(session, exc)
        return web.Response(status=download.status, body=body, headers=returned_headers(download.headers, _RETURNED))
    response = web.StreamResponse(status=download.status, headers=returned_headers(download.headers, _RETURNED))
    response.content_length = download.length
    transport = request.transport
    client = os.dup(browser)
    try:
        await response.prepare(request)
        first = await relays.run(download.buffered)
        if first:
            await response.write(first)
        while transport is not None and transport.get_write_buffer_size():
            await asyncio.sleep(0.001)  # aiohttp's bytes out first: the kernel's come after them
        await relays.run(download.rest, client, download.length - len(first))
    except (splice.ReceiverGone, ConnectionResetError):
        return response  # the browser went away
    except (OSError, http.client.HTTPException) as exc:
        log_event(log, "agent_lost_mid_download", level=logging.WARNING, error=repr(exc),
                  session_id=session.id)
        if transport is not None:
            transport.close()  # the browser must see a cut, not a short file
        return response
    finally:
        os.close(client)
        download.close()
    await response.write_eof()
    return response
