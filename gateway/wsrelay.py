"""`GET /streaming/{id}/ws`: the WebSocket transport relayed to the session's agent (SPEC
"WebSocket transport"). The browser's own credentials, as for the viewer page; the gateway adds
the agent token, which the browser never sees.

A relay must not become the buffer that a slow link fills: it reads the agent's frames as they
come and writes one to the browser only while the browser's socket has under about two frames
unsent. Past that it drops deltas for this browser and, once its socket has drained, asks the
agent for a keyframe (`{"type":"keyframe"}` upstream), the rule the agent applies to its own
sockets (streamwire/backpressure.py, shared with it). While it skips frames it also tells the agent
what the browser's link did carry (`{"type":"congestion","kbps":N}`, at most once a second), so
that the one encoder can come down to it as it does for its own sockets; a browser's own
message of that type is not passed on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref

import aiohttp
from aiohttp import WSMsgType, web

from gateway.http import CLIENT, json_error, user_of
from gateway.logs import log_event
from gateway.spawners.base import Route
from gateway.streaming import _route, agent_headers
from streamwire.backpressure import SendGate
from streamwire.frame import is_keyframe
from streamwire.sockets import limit_unsent

log = logging.getLogger("gateway.ws-relay")

routes = web.RouteTableDef()
RELAYS = web.AppKey("ws_relays", weakref.WeakSet)

HEARTBEAT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
MAX_MESSAGE_BYTES = 64 * 1024   # from the browser: input messages
DRAIN_POLL_S = 0.01
RATE_WINDOW_S = 1.0
# Closing codes for the browser when the agent cannot be reached or refuses: 4000 + the HTTP
# status, with the reason as text (a browser sees no HTTP body of a failed upgrade).
_CLOSE_BASE = 4000


async def _refuse(request: web.Request, status: int, message: str) -> web.WebSocketResponse:
    """Complete the upgrade only to say why, then close (the browser reads the close reason)."""
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    await ws.send_json({"type": "error", "status": status, "message": message})
    await ws.close(code=_CLOSE_BASE + status, message=message.encode()[:120])
    return ws


@routes.get("/streaming/{id}/ws")
async def ws_relay(request: web.Request) -> web.StreamResponse:
    route = _route(request)
    if isinstance(route, web.Response):
        return route  # 404 (not this user's), 503 starting, 409 ended: plain HTTP, before any upgrade
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return json_error(426, "this is a WebSocket: send Upgrade: websocket", {"Upgrade": "websocket"})
    session_id = request.match_info["id"]
    try:
        upstream = await asyncio.wait_for(request.app[CLIENT].ws_connect(
            route.url + "/ws", headers=agent_headers(request, route), compress=0, max_msg_size=0,
            timeout=WS_TIMEOUT, autoping=True), CONNECT_TIMEOUT_S)
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status == 401:
            log_event(log, "agent_refused_token", level=logging.ERROR, session_id=session_id)
            return await _refuse(request, 502, "the session's agent refused the gateway")
        if exc.status == 503 and exc.headers and "Retry-After" in exc.headers:
            return await _refuse(request, 503, "the session has as many viewers as it allows")
        return await _refuse(request, 502 if exc.status >= 500 and exc.status != 503 else exc.status,
                             "the session's agent cannot stream now" if exc.status == 503
                             else f"the session's agent answered {exc.status}")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        log_event(log, "agent_unreachable", level=logging.WARNING, session_id=session_id,
                  user_id=user_of(request).id, error=repr(exc))
        return await _refuse(request, 502, "the session's agent did not answer")
    try:
        browser = web.WebSocketResponse(compress=False, heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
        await browser.prepare(request)
        limit_unsent(request.transport)
        request.app[RELAYS].add(browser)
        await _relay(request, browser, upstream, route)
    finally:
        await upstream.close()
    return browser


async def _relay(request: web.Request, browser: web.WebSocketResponse,
                 upstream: aiohttp.ClientWebSocketResponse, route: Route) -> None:
    transport = request.transport
    gate = SendGate()  # the agent's rule, per hop
    wake = asyncio.Event()

    written = 0
    mark = (time.monotonic(), 0)  # (when, bytes drained then): the drain rate's window

    def backlog() -> int:
        return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

    async def down() -> None:  # agent → browser
        nonlocal written, mark
        async for message in upstream:
            if message.type == WSMsgType.BINARY:
                data = message.data
                admitted = gate.admit(len(data), is_keyframe(data), backlog())
                now = time.monotonic()
                if now - mark[0] >= RATE_WINDOW_S:
                    drained = written - backlog()
                    if not admitted:
                        kbps = int(8 * (drained - mark[1]) / (now - mark[0]) / 1000)
                        await upstream.send_str(f'{{"type":"congestion","kbps":{kbps}}}')
                    mark = (now, drained)
                if admitted:
                    await browser.send_bytes(data)
                    written += len(data)
                else:
                    wake.set()
            elif message.type == WSMsgType.TEXT:
                await browser.send_str(message.data)
            else:
                break

    async def up() -> None:  # browser → agent
        async for message in browser:
            if message.type == WSMsgType.TEXT:
                if '"congestion"' in message.data and _is_congestion(message.data):
                    continue  # the relay's word to the agent, not the browser's
                await upstream.send_str(message.data)

    async def keyframes() -> None:  # once the browser has drained, one keyframe resumes it
        while True:
            if gate.need_keyframe:
                if gate.want_keyframe(backlog(), time.monotonic()):
                    await upstream.send_str('{"type":"keyframe"}')
                await asyncio.sleep(DRAIN_POLL_S)
            else:
                wake.clear()
                await wake.wait()

    tasks = [asyncio.ensure_future(t()) for t in (down, up, keyframes)]
    try:
        await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if upstream.closed and not browser.closed:
        # The agent ended the stream (the session ended, or it went away).
        await browser.close(code=1001 if upstream.close_code in (1000, 1001) else 1011,
                            message=b"the session's agent closed the stream")
    log_event(log, "ws_relay_closed", session_id=request.match_info["id"], dropped=gate.dropped,
              agent_close=upstream.close_code, browser_close=browser.close_code)


def _is_congestion(text: str) -> bool:
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("type") == "congestion"


async def _close_all(app: web.Application) -> None:
    await asyncio.gather(*(ws.close(code=1001, message=b"the gateway is stopping")
                           for ws in list(app[RELAYS])), return_exceptions=True)


def setup(app: web.Application) -> None:
    app[RELAYS] = weakref.WeakSet()
    app.router.add_routes(routes)
    app.on_shutdown.append(_close_all)
