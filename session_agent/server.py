"""The agent's HTTP side: WHEP signaling, /health, /metrics, /files, /clipboard (aiohttp
application factory)."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .config import AgentConfig
from .files import routes as files
from .input import clipboard_routes
from .input.session import InputSession
from .media.bitrate import BitrateController
from .media.encoder import EncoderKind
from .media.negotiation import OfferError
from .media.pipeline import MediaPipeline
from .media.rtphistory import install as size_rtp_history
from .metrics import AgentMetrics
from .presence import Presence
from .viewers import HeaderError, ViewerRegistry, identity_from_headers
from .whep import PeerLimit, PeerManager
from .ws import WsViewers

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Content-Type",
    "Access-Control-Max-Age": "600",
}

PIPELINE = web.AppKey("pipeline", MediaPipeline)
PEERS = web.AppKey("peers", PeerManager)
METRICS = web.AppKey("metrics", AgentMetrics)
CONFIG = web.AppKey("config", AgentConfig)
PROBLEM = web.AppKey("problem", Callable[[], "str | None"])
INPUT = web.AppKey("input", InputSession)
VIEWERS = web.AppKey("viewers", ViewerRegistry)
PRESENCE = web.AppKey("presence", Presence)
MAX_DISCONNECT_BYTES = 1024
WS = web.AppKey("ws", WsViewers)
MAX_NOTICE_BYTES = 4096
NOTICE_LEVELS = ("info", "warning")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={**CORS, **headers})


@web.middleware
async def _cors_and_errors(request: web.Request, handler):
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return _error(exc.status, exc.reason, **{k: v for k, v in exc.headers.items() if k == "Allow"})
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:  # a bug must cost one request, never the agent
        log.exception("unexpected error", extra={"action": "http_error"})
        return _error(500, "internal error")
    if request.path.startswith("/whep"):
        response.headers.update({k: v for k, v in CORS.items() if k not in response.headers})
    return response


def _authorized(request: web.Request) -> bool:
    token = request.app[CONFIG].token
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    # Header bytes that are not ASCII arrive as surrogates: no token, and not encodable.
    return (scheme.lower() == "bearer" and value.isascii()
            and hmac.compare_digest(value.strip().encode(), token.encode()))


def _unauthorized() -> web.Response:
    return _error(401, "missing or invalid bearer token", **{"WWW-Authenticate": 'Bearer realm="whep"'})


async def whep_post(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if not _authorized(request):
        metrics.whep_requests.labels("401").inc()
        return _unauthorized()
    if request.content_type != "application/sdp":
        metrics.whep_requests.labels("415").inc()
        return _error(415, "Content-Type must be application/sdp")
    problem = request.app[PROBLEM]()
    if problem is not None:
        metrics.whep_requests.labels("503").inc()
        return _error(503, problem)
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        metrics.whep_requests.labels("413").inc()
        return _error(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        body = (await request.content.read(MAX_OFFER_BYTES + 1)).decode("utf-8")
    except UnicodeDecodeError:
        metrics.whep_requests.labels("400").inc()
        return _error(400, "offer is not UTF-8 text")
    if len(body) > MAX_OFFER_BYTES:
        metrics.whep_requests.labels("413").inc()
        return _error(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        who = identity_from_headers(request.headers)
    except HeaderError as exc:
        metrics.whep_requests.labels("400").inc()
        return _error(400, str(exc))
    try:
        peer_id, answer = await request.app[PEERS].create(body, who)
    except OfferError as exc:
        metrics.whep_requests.labels("400").inc()
        return _error(400, str(exc))
    except PeerLimit as exc:
        metrics.whep_requests.labels("503").inc()
        return _error(503, str(exc), **{"Retry-After": "5"})
    metrics.whep_requests.labels("201").inc()
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": f"/whep/{peer_id}", "ETag": f'"{peer_id}"'})


def _may_end(request: web.Request, peer: str) -> bool:
    """A guest (X-Viewer-Role from the gateway) may end only a viewer of its own share; the
    owner (no header, as before shares) any."""
    if request.headers.get("X-Viewer-Role", "owner") == "owner":
        return True
    viewer = request.app[VIEWERS].get(peer)
    return viewer is not None and viewer.share is not None and viewer.share == request.headers.get("X-Viewer-Share")


async def whep_delete(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    peer = request.match_info["peer"]
    if not _may_end(request, peer) or not await request.app[PEERS].delete(peer):
        return _error(404, "unknown peer")
    return web.json_response({"status": "deleted"})


async def whep_patch(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    if request.match_info["peer"] not in request.app[PEERS].peers:
        return _error(404, "unknown peer")
    return _error(405, "trickle ICE is not supported: send every candidate in the offer",
                  Allow="DELETE, OPTIONS")


async def whep_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={**CORS, "Accept-Post": "application/sdp"})


async def ws_get(request: web.Request) -> web.StreamResponse:
    """`GET /ws` (SPEC "WebSocket transport"): the stream and input over one WebSocket."""
    if not _authorized(request):
        return _unauthorized()
    problem = request.app[PROBLEM]()
    if problem is not None:
        return _error(503, problem)
    viewers = request.app[WS]
    if viewers.full():
        return _error(503, f"at most {viewers.max_peers} viewers", **{"Retry-After": "5"})
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return _error(426, "GET /ws is a WebSocket: send Upgrade: websocket", Upgrade="websocket")
    try:
        who = identity_from_headers(request.headers)
    except HeaderError as exc:
        return _error(400, str(exc))
    peers, metrics = request.app[PEERS], request.app[METRICS]
    return await viewers.serve(request, on_count=lambda: metrics.peers.set(peers.count()), who=who)


async def health(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    pipeline = request.app[PIPELINE]
    problem = request.app[PROBLEM]()
    if problem is not None:
        return web.json_response({"status": "error", "reason": problem, "display": config.display},
                                 status=503)
    width, height = pipeline.size
    return web.json_response({"status": "ok", "display": config.display, "encoder": pipeline.h264.name,
                              "peers": request.app[PEERS].count(), "width": width, "height": height,
                              "idle_s": round(request.app[INPUT].idle_seconds(), 1)})


def parse_notice(body: object) -> dict[str, object]:
    """A notice for the viewers: {"message", "level"?, "seconds"?, "reason"?, "cancel"?} (pure)."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(body) - {"message", "level", "seconds", "reason", "cancel"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    message, level = body.get("message"), body.get("level", "info")
    if not isinstance(message, str) or not 0 < len(message) <= 500:
        raise ValueError("message must be text of 1 to 500 characters")
    if level not in NOTICE_LEVELS:
        raise ValueError(f"level must be one of: {', '.join(NOTICE_LEVELS)}")
    notice: dict[str, object] = {"message": message, "level": level}
    if "seconds" in body:
        seconds = body["seconds"]
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds <= 86400:
            raise ValueError("seconds must be a whole number from 0 to 86400")
        notice["seconds"] = seconds
    if "reason" in body:
        if not isinstance(body["reason"], str) or not 0 < len(body["reason"]) <= 40:
            raise ValueError("reason must be a short word such as \"idle\"")
        notice["reason"] = body["reason"]
    if "cancel" in body:
        if not isinstance(body["cancel"], bool):
            raise ValueError("cancel must be true or false")
        notice["cancel"] = body["cancel"]
    return notice


async def notice_post(request: web.Request) -> web.Response:
    """`POST /notice` (the gateway's token): show a notice to every viewer, such as "this
    session ends in 60 s"; the viewers get `{"type": "notice", …}` on their input channel."""
    if not _authorized(request):
        return _unauthorized()
    if request.content_length is not None and request.content_length > MAX_NOTICE_BYTES:
        return _error(413, f"notice larger than {MAX_NOTICE_BYTES} bytes")
    try:
        notice = parse_notice(json.loads(await request.content.read(MAX_NOTICE_BYTES + 1)))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return _error(400, str(exc) if not isinstance(exc, json.JSONDecodeError) else "body is not JSON")
    request.app[INPUT].notify(notice)
    return web.json_response({"status": "sent", "viewers": request.app[PEERS].count()})


async def viewers_get(request: web.Request) -> web.Response:
    """`GET /viewers` (the gateway's token): every connected viewer, on every transport."""
    if not _authorized(request):
        return _unauthorized()
    return web.json_response({"viewers": [v.public() for v in request.app[VIEWERS].list()]})


async def viewers_disconnect(request: web.Request) -> web.Response:
    """`POST /viewers/disconnect {"share": ID}` (the gateway's token): a share was revoked;
    its viewers are told so and closed now."""
    if not _authorized(request):
        return _unauthorized()
    try:
        body = json.loads(await request.content.read(MAX_DISCONNECT_BYTES + 1))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _error(400, "body is not JSON")
    share = body.get("share") if isinstance(body, dict) else None
    if not isinstance(share, str) or not 0 < len(share) <= 64 or set(body) != {"share"}:
        return _error(400, 'body must be {"share": ID}')
    count = await request.app[VIEWERS].disconnect_share(share)
    return web.json_response({"disconnected": count})


async def refine_get(request: web.Request) -> web.Response:
    """`GET /refine/{id}`: the PNG of a `refine` message (session_agent/media/refine.py); 404
    once superseded by a few newer ones: the viewer then waits for the next `full` one."""
    if not _authorized(request):
        return _unauthorized()
    refiner = request.app[PIPELINE].refiner
    text = request.match_info["id"]
    refinement = refiner.get(int(text)) if refiner is not None and text.isascii() and text.isdigit() and len(text) < 12 else None
    if refinement is None:
        return _error(404, "no such refinement (superseded, or refinement is off)")
    return web.Response(body=refinement.png, content_type="image/png",
                        headers={"Cache-Control": "no-store", "X-Refine-X": str(refinement.x),
                                 "X-Refine-Y": str(refinement.y)})


async def metrics_handler(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    await request.app[PEERS].update_stats()
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(config: AgentConfig, encoder: EncoderKind, *, channel_factory=None,
               problem: Callable[[], str | None] = lambda: None,
               on_display_lost: Callable[[str], None] = lambda reason: None) -> web.Application:
    """The agent's web application; the capture pipeline starts and stops with it.

    `problem` names anything outside the pipeline that makes the agent unhealthy (the launched
    application has exited); `on_display_lost` runs on the loop when the X server goes away.
    """
    app = web.Application(middlewares=[_cors_and_errors], client_max_size=MAX_OFFER_BYTES)
    metrics = AgentMetrics()
    app[CONFIG] = config
    app[METRICS] = metrics
    bitrate = BitrateController(config.bitrate_kbps, config.min_bitrate_kbps, config.max_bitrate_kbps)
    size_rtp_history(config.max_bitrate_kbps)

    def display_lost(reason: str) -> None:
        asyncio.ensure_future(app[PEERS].close())
        asyncio.ensure_future(app[WS].close())
        on_display_lost(reason)

    pipeline = MediaPipeline(config.display, encoder, max_fps=config.max_fps, refresh_s=config.refresh_s,
                             bitrate=bitrate, metrics=metrics, on_display_lost=display_lost,
                             refine_s=config.refine_s)
    app[PIPELINE] = pipeline
    app[PROBLEM] = lambda: pipeline.error or problem()
    # X input, clipboard, cursor and resize, shared by every peer's `input` data channel
    input_session = InputSession(config.display, max_size=(config.max_width, config.max_height))
    app[INPUT] = input_session
    # Who watches (any transport), and how several participants share the one X input.
    app[VIEWERS] = viewers = ViewerRegistry()
    app[PRESENCE] = presence = Presence(viewers, input_session)
    factory = ((lambda send, peer: channel_factory(send)) if channel_factory is not None
               else presence.channel)
    pipeline.broadcast = input_session.broadcast
    app[PEERS] = PeerManager(pipeline, metrics, max_peers=config.max_peers,
                             prefer="vp8" if config.encoder == "vp8" else "h264",
                             channel_factory=factory, viewers=viewers, on_gone=presence.closed)
    app[WS] = WsViewers(pipeline, metrics, admitted=app[PEERS].count, max_peers=config.max_peers,
                        channel_factory=factory, viewers=viewers, on_gone=presence.closed)
    app[PEERS].others = app[WS].count

    async def lifecycle(app: web.Application):
        pipeline.start(asyncio.get_running_loop())
        await input_session.start()
        yield
        await app[PEERS].close()
        await app[WS].close()
        viewers.close()
        await input_session.stop()
        await asyncio.get_running_loop().run_in_executor(None, pipeline.stop)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_post("/notice", notice_post)
    app.router.add_get("/viewers", viewers_get)
    app.router.add_post("/viewers/disconnect", viewers_disconnect)
    app.router.add_get("/refine/{id}", refine_get)
    app.router.add_get("/ws", ws_get)
    app.router.add_post("/whep", whep_post)
    app.router.add_options("/whep", whep_options)
    app.router.add_delete("/whep/{peer}", whep_delete)
    app.router.add_patch("/whep/{peer}", whep_patch)
    app.router.add_options("/whep/{peer}", whep_options)
    # The user's files (SPEC "Files in the session's home"), with the same token as WHEP.
    files.add_routes(app, config.home, config.max_upload,
                     guard=lambda request: None if _authorized(request) else _unauthorized(),
                     streaming=lambda: app[PEERS].count() > 0)
    # The clipboard as text or a PNG image (SPEC "Clipboard beyond text"), same token as WHEP.
    clipboard_routes.add_routes(app, input_session,
                                guard=lambda request: None if _authorized(request) else _unauthorized())
    return app
