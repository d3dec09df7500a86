"""`create_app(config)`: the gateway's aiohttp application, as production and the tests build it."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import api, clipboard, files, shares, streaming, wsrelay
from gateway.auth import COOKIE, SHARE_COOKIE, Authenticator, Guest
from gateway.config import Config
from gateway.proxies import networks, trusted_peer
from gateway.http import AUTH, CLIENT, CONFIG, GUEST, METRICS, REGISTRY, USER, json_error
from gateway.logs import log_event
from gateway.metrics import Metrics
from gateway.sessions import SessionRegistry
from gateway.spawners.base import Spawner
from gateway.spawners.local import LocalSpawner

WEB = Path(__file__).parent / "web"
_PAGE = re.compile(r"^/(streaming/[^/]+/)?$")  # the launcher and the viewer pages
_VIEWER = re.compile(r"^/streaming/([^/]+)/$")
# Everything a share link opens (SPEC "Sharing a session"): (method, route) -> the roles that
# may. Any other route answers a guest 403 before its handler runs, so no handler has to think
# about shares unless it is listed here. /ws and /clipboard are the WebSocket transport's and
# the clipboard's routes (in force when they exist).
GUEST_ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/streaming/{id}/"): shares.ROLES,
    ("GET", "/streaming/{id}"): shares.ROLES,
    ("OPTIONS", "/streaming/{id}/whep"): shares.ROLES,
    ("POST", "/streaming/{id}/whep"): shares.ROLES,
    ("DELETE", "/streaming/{id}/whep/{peer}"): shares.ROLES,
    ("PATCH", "/streaming/{id}/whep/{peer}"): shares.ROLES,
    ("GET", "/streaming/{id}/refine/{n}"): shares.ROLES,
    ("GET", "/streaming/{id}/ws"): shares.ROLES,
    ("GET", "/streaming/{id}/clipboard"): ("control",),
    ("PUT", "/streaming/{id}/clipboard"): ("control",),
    ("GET", "/api/sessions/{id}"): shares.ROLES,
}
_PUBLIC = ("/health", "/metrics", "/static/", "/api/openapi.json", "/logout", "/api/logout")

http_log = logging.getLogger("gateway.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_spawner(config: Config) -> Spawner:
    if config.spawner == "kubernetes":
        from gateway.spawners.kubernetes import KubernetesSpawner  # needs a cluster: only on demand
        return KubernetesSpawner(config)
    return LocalSpawner(config)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request metrics and one JSON log line per request (the path only: a query may hold a token)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - start
        metrics = request.app[METRICS]
        route = _route_name(request)
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.request_duration.labels(request.method, route).observe(elapsed)
        user, guest = request.get(USER), request.get(GUEST)
        log_event(http_log, "http_request", method=request.method, path=request.path, status=status,
                  duration_ms=round(elapsed * 1000, 2), user_id=user.id if user else None,
                  share=guest.share if guest else None)


async def static_file(request: web.Request) -> web.FileResponse:
    """A file of the web client. aiohttp's static route answers a missing file with an empty
    404 after the middlewares ran; this keeps the SPEC's JSON errors and refuses anything
    that is not a plain file directly in the folder (no symlinks, no '..')."""
    folder = WEB.resolve()
    try:
        path = folder / request.match_info["filename"]
        if path.resolve() != path or path.parent != folder or not path.is_file():
            raise web.HTTPNotFound()
    except (ValueError, OSError):  # NUL bytes, names too long
        raise web.HTTPNotFound() from None
    return web.FileResponse(path)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as the SPEC's JSON body; an unexpected exception is a 500, never a crash."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return json_error(exc.status, exc.reason.lower(), {k: v for k, v in exc.headers.items()
                                                            if k in ("Allow", "Retry-After")})
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        http_log.exception("unexpected error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


_CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "600",
}


def _allowed_origin(request: web.BaseRequest) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin is not None and origin in request.app[CONFIG].cors_origins else None


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Preflights carry no credentials, so they are answered before `authenticate`; only for a
    configured origin (anyone else gets the normal, credential-checked response: no CORS)."""
    origin = _allowed_origin(request)
    if (origin is not None and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers):
        return web.Response(status=204, headers=_CORS_PREFLIGHT)
    return await handler(request)


async def _cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """On every response (errors and streams too): allow a configured origin, nobody else.
    No Allow-Credentials: the cookie is SameSite=Strict, cross-origin callers send a bearer token."""
    if not request.app[CONFIG].cors_origins:
        return
    response.headers.add("Vary", "Origin")
    origin = _allowed_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Location, Link, ETag, Retry-After"


def _behind_tls(request: web.Request) -> bool:
    """TLS to the browser: our own, the setting, or X-Forwarded-Proto from a trusted proxy
    (anyone else could send the header, so it is ignored from other peers)."""
    config = request.app[CONFIG]
    if request.secure or config.secure_cookies:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https" and trusted_peer(request.remote, networks(config.trusted_proxies))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/health" or request.path.startswith(_PUBLIC):
        return await handler(request)
    auth = request.app[AUTH]
    page = request.method == "GET" and _PAGE.match(request.path) is not None
    viewer = _VIEWER.match(request.path) if request.method == "GET" else None
    if viewer is not None and "share" in request.query:
        return _share_login(request, auth, viewer.group(1))
    if page and "token" in request.query and auth.uses_credentials:
        return _token_login(request, auth)
    user = auth.identify(request)
    if user is None:
        guest, ended = _guest(request, auth)
        if ended == "gone":  # the grant is genuine, the session is over: say that
            return (web.FileResponse(WEB / "notfound.html", status=404) if page
                    else json_error(404, "no such session"))
        if guest is not None:
            roles = GUEST_ROUTES.get((request.method, _route_name(request)))
            if roles is None or guest.role not in roles:
                return json_error(403, "a share link opens this session's viewer only")
            request[GUEST] = guest
            return await handler(request)
        if page:
            return _share_ended() if ended else web.FileResponse(WEB / "unauthorized.html", status=401)
        return json_error(401, "this share link was revoked or has expired" if ended
                          else "missing or invalid credentials", {"WWW-Authenticate": "Bearer"})
    request[USER] = user
    return await handler(request)


def _guest(request: web.Request, auth: Authenticator) -> tuple[Guest | None, str | None]:
    """(the guest, None) when the request carries a grant of a share that is still live; (None,
    "ended") for the grant of a share that was revoked or expired, (None, "gone") for one of a
    session that no longer exists; (None, None) when it carries no genuine grant for this id."""
    session_id = request.match_info.get("id")
    if session_id is None:
        return None, None
    grant = auth.guest(request, session_id)
    if grant is None:
        return None, None
    session = request.app[REGISTRY].spawner.get(session_id)
    if session is None:
        return None, "gone"
    live = shares.by_id(session.shares, grant.share, time.time())
    return (grant, None) if live else (None, "ended")


def _share_ended() -> web.Response:
    return web.FileResponse(WEB / "share-ended.html", status=401,
                            headers={"Cache-Control": "no-store"})


def _share_login(request: web.Request, auth: Authenticator, session_id: str) -> web.StreamResponse:
    """`/streaming/{id}/?share=TOKEN`: keep a signed grant of that share (never the token) in
    HttpOnly cookies scoped to this session's viewer and to its `GET /api/sessions/{id}`, and
    send the browser to the clean URL. A token of no live share of this session: the page
    that says the link was revoked or has expired."""
    session = request.app[REGISTRY].spawner.get(session_id)
    share = shares.find(session.shares, request.query["share"], time.time()) if session else None
    cookie = auth.share_cookie(session_id, share.id, share.role, share.expires_at) if share else None
    if cookie is None:
        return _share_ended()
    value, max_age = cookie
    rest = [(k, v) for k, v in request.query.items() if k != "share"]
    response = web.Response(status=303, headers={
        "Location": request.path + (f"?{urlencode(rest)}" if rest else ""), "Cache-Control": "no-store"})
    # Lax, not Strict: a link is opened from mail or chat, another site, and a Strict cookie
    # set on that navigation would not come with the redirected request. Lax cookies ride
    # top-level GETs only; the grant's POST (WHEP) is the viewer's own same-origin fetch.
    # One name, two paths: aiohttp's set_cookie keeps one cookie per name, so each is its own header.
    for path in (f"/streaming/{session_id}/", f"/api/sessions/{session_id}"):
        cookie: SimpleCookie = SimpleCookie()
        cookie[SHARE_COOKIE] = value
        cookie[SHARE_COOKIE].update({"path": path, "max-age": str(max_age), "httponly": True,
                                     "samesite": "Lax", "secure": _behind_tls(request)})
        response.headers.add("Set-Cookie", cookie[SHARE_COOKIE].OutputString())
    return response


def _token_login(request: web.Request, auth: Authenticator) -> web.StreamResponse:
    """`?token=…` on a page: keep a signed grant for it as an HttpOnly cookie (never the token
    itself), and send the browser to the clean URL so that the token leaves the address bar
    and the history."""
    cookie = auth.cookie_for(request.query["token"])
    if cookie is None:
        return web.FileResponse(WEB / "unauthorized.html", status=401)
    value, max_age = cookie
    rest = [(k, v) for k, v in request.query.items() if k != "token"]
    response = web.Response(status=303, headers={
        "Location": request.path + (f"?{urlencode(rest)}" if rest else ""), "Cache-Control": "no-store"})
    response.set_cookie(COOKIE, value, httponly=True, samesite="Strict", path="/",
                        secure=_behind_tls(request), max_age=max_age)
    return response


def _clear_cookie(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    response.del_cookie(COOKIE, path="/", secure=_behind_tls(request), httponly=True,
                        samesite="Strict")
    return response


async def logout_page(request: web.Request) -> web.StreamResponse:
    """`GET /logout`: forget the login cookie and go back to the launcher (which asks again)."""
    return _clear_cookie(request, web.Response(status=303, headers={
        "Location": "/", "Cache-Control": "no-store"}))


async def logout_api(request: web.Request) -> web.StreamResponse:
    """`POST /api/logout`: the same for a script or the launcher's button."""
    return _clear_cookie(request, web.json_response({"status": "logged out"},
                                                    headers={"Cache-Control": "no-store"}))


async def launcher(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})


async def health(request: web.Request) -> web.Response:
    spawner = request.app[REGISTRY].spawner
    return web.json_response({"status": "ok", "spawner": spawner.name, "sessions": len(spawner.list())})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(config: Config, spawner: Spawner | None = None) -> web.Application:
    """The gateway. `spawner` defaults to the one `config` names; the benchmarks pass their own."""
    spawner = spawner or make_spawner(config)
    app = web.Application(middlewares=[observe, errors, cors_preflight, authenticate])
    app.on_response_prepare.append(_cors_headers)
    app[CONFIG] = config
    app[AUTH] = Authenticator(config)
    app[METRICS] = Metrics(spawner, config.region)
    for collector in getattr(spawner, "collectors", list)():  # e.g. the in-process controller's
        app[METRICS].registry.register(collector)
    app[REGISTRY] = SessionRegistry(spawner, config, app[METRICS])
    app.router.add_get("/", launcher)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/static/{filename}", static_file)
    app.router.add_get("/logout", logout_page)
    app.router.add_post("/api/logout", logout_api)
    app.router.add_routes(api.routes)
    app.router.add_routes(streaming.routes)
    wsrelay.setup(app)
    files.setup(app)
    clipboard.setup(app)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    await registry.spawner.start()
    # No connection limit: each WHEP request goes to a different agent, and reusing
    # connections is what keeps the proxy's overhead small.
    app[CLIENT] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    follower = asyncio.create_task(registry.follow())
    log_event(logging.getLogger("gateway.gateway"), "gateway_started", spawner=registry.spawner.name,
              auth=app[CONFIG].auth, region=app[CONFIG].region)
    yield
    await registry.spawner.close()
    await asyncio.sleep(0)  # let the follower log the last deletions
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    await app[CLIENT].close()
