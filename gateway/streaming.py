"""`/streaming/{id}/…`: the viewer page and the WHEP proxy to that session's agent.

The proxy adds the session's agent token (browsers never see it), rewrites the agent's
`Location` into the gateway's URL space and adds the gateway's ICE servers (TURN REST
credentials) as `Link` headers.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway import shares
from gateway.agentproxy import agent_route
from gateway.http import CLIENT, CONFIG, guest_of, json_error, viewer_name, viewer_session
from gateway.logs import log_event
from gateway.spawners.base import Route, Session
from gateway.turn import ice_server_links

log = logging.getLogger("gateway.whep-proxy")

WEB = Path(__file__).parent / "web"
_PEER = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
AGENT_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)
# Response headers of the agent that mean something to a WHEP client.
_PASSED = ("Content-Type", "ETag", "Link", "Accept-Patch", "Allow")

routes = web.RouteTableDef()


def _session(request: web.Request) -> Session | None:
    return viewer_session(request)


def _links(request: web.Request) -> list[str]:
    c = request.app[CONFIG]
    return ice_server_links(c.turn_urls, c.turn_secret, viewer_name(request), c.turn_ttl)


def viewer_headers(request: web.Request, session: Session) -> dict[str, str]:
    """Who this viewer is, for the agent (session_agent/viewers.py): believed there because
    the request carries the agent token. Built here from the gateway's own knowledge, never
    copied from the browser's request."""
    guest = guest_of(request)
    if guest is None:
        return {"X-Viewer-Role": "owner", "X-Viewer-Label": quote(session.user, safe="")}
    share = shares.by_id(session.shares, guest.share, time.time())
    label = shares.label(share) if share is not None else "guest"
    return {"X-Viewer-Role": guest.role, "X-Viewer-Share": guest.share,
            "X-Viewer-Label": quote(label, safe=""), "X-Viewer-Expires": str(guest.expires_at)}


@routes.get("/streaming/{id}")
async def viewer_redirect(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(f"/streaming/{quote(request.match_info['id'])}/")


@routes.get("/streaming/{id}/")
async def viewer(request: web.Request) -> web.StreamResponse:
    if _session(request) is None:
        return web.Response(status=404, content_type="text/html",
                            text=(WEB / "notfound.html").read_text())
    return web.FileResponse(WEB / "viewer.html", headers={"Cache-Control": "no-cache"})


def _route(request: web.Request) -> Route | web.Response:
    """The agent to talk to, or the error response for the browser."""
    session = _session(request)
    if session is None:
        return json_error(404, "no such session")
    return agent_route(request, session)


def agent_headers(request: web.Request, route: Route) -> dict[str, str]:
    """The headers of every request the gateway makes to a session's agent for this browser
    request (WHEP, the refine overlay and the WebSocket relay alike): the agent token and who
    the viewer is (viewer_headers, from the gateway's own knowledge)."""
    session = _session(request)
    headers = viewer_headers(request, session) if session is not None else {}
    headers["Authorization"] = f"Bearer {route.token}"
    return headers


async def _forward(request: web.Request, route: Route, method: str, path: str,
                   body: bytes | None = None) -> web.Response:
    headers = agent_headers(request, route)
    if body is not None:
        headers["Content-Type"] = request.headers.get("Content-Type", "")
    session_id = request.match_info["id"]
    try:
        async with request.app[CLIENT].request(method, route.url + path, data=body, headers=headers,
                                               timeout=AGENT_TIMEOUT) as upstream:
            payload = await upstream.read()
            status = upstream.status
            out = CIMultiDict((k, v) for k, v in upstream.headers.items() if k in _PASSED)
            location = upstream.headers.get("Location")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log_event(log, "agent_unreachable", level=logging.WARNING, session_id=session_id,
                  user_id=viewer_name(request), error=repr(exc))
        return json_error(502, "the session's agent did not answer")
    if status == 401:  # the gateway's own credentials were refused: not the browser's fault
        log_event(log, "agent_refused_token", level=logging.ERROR, session_id=session_id)
        return json_error(502, "the session's agent refused the gateway")
    if location:
        peer = urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
        out["Location"] = f"/streaming/{quote(session_id)}/whep/{quote(peer)}"
    return web.Response(status=status, body=payload, headers=out)


@routes.options("/streaming/{id}/whep")
async def whep_options(request: web.Request) -> web.Response:
    """ICE servers before the offer is made (the WHEP client needs TURN to gather relays)."""
    if _session(request) is None:
        return json_error(404, "no such session")
    headers = CIMultiDict([("Allow", "OPTIONS, POST")])
    for link in _links(request):
        headers.add("Link", link)
    return web.Response(status=204, headers=headers)


@routes.post("/streaming/{id}/whep")
async def whep_offer(request: web.Request) -> web.Response:
    route = _route(request)
    if isinstance(route, web.Response):
        return route
    response = await _forward(request, route, "POST", "/whep", await request.read())
    for link in _links(request):
        response.headers.add("Link", link)
    return response


@routes.route("DELETE", "/streaming/{id}/whep/{peer}")
@routes.route("PATCH", "/streaming/{id}/whep/{peer}")
async def whep_peer(request: web.Request) -> web.Response:
    peer = request.match_info["peer"]
    if not _PEER.match(peer):
        return json_error(404, "no such peer")
    route = _route(request)
    if isinstance(route, web.Response):
        return route
    body = await request.read() if request.method == "PATCH" else None
    # Who asks (agent_headers): the agent lets a guest end only its own share's viewers.
    return await _forward(request, route, request.method, f"/whep/{peer}", body)


@routes.get("/streaming/{id}/refine/{n}")
async def refine(request: web.Request) -> web.Response:
    """The lossless overlay of a still screen (`refine` messages; docs/PROTOCOL.md)."""
    n = request.match_info["n"]
    if not (n.isascii() and n.isdigit() and len(n) < 12):
        return json_error(404, "no such refinement")
    route = _route(request)
    if isinstance(route, web.Response):
        return route
    response = await _forward(request, route, "GET", f"/refine/{n}")
    response.headers["Cache-Control"] = "no-store"
    return response
