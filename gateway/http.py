"""What every handler module shares: the app's keys and the error body of the SPEC."""
from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.auth import Authenticator, Guest, User
from gateway.config import Config
from gateway.metrics import Metrics
from gateway.sessions import SessionRegistry
from gateway.spawners.base import Session

CONFIG = web.AppKey("config", Config)
AUTH = web.AppKey("auth", Authenticator)
REGISTRY = web.AppKey("registry", SessionRegistry)
METRICS = web.AppKey("metrics", Metrics)
CLIENT = web.AppKey("client", aiohttp.ClientSession)  # for the agents (WHEP proxy)
USER = web.RequestKey("user", User)  # the authenticated User
GUEST = web.RequestKey("guest", Guest)  # or: who came in with a share link (no USER then)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def user_of(request: web.Request) -> User:
    user: User = request[USER]
    return user


def guest_of(request: web.Request) -> Guest | None:
    return request.get(GUEST)


def viewer_session(request: web.Request) -> Session | None:
    """The session `{id}` for its owner, or for a guest whose share it is; None for anybody
    else. The one check the viewer's routes make (a guest reaches no other route: app.py)."""
    session_id = request.match_info["id"]
    guest = guest_of(request)
    if guest is not None:
        session = request.app[REGISTRY].spawner.get(session_id)
        return session if session is not None and guest.session == session_id else None
    return request.app[REGISTRY].get(user_of(request), session_id)


def viewer_name(request: web.Request) -> str:
    """Who is watching, for TURN usernames and logs: the user id, or the share for a guest."""
    guest = guest_of(request)
    return f"share:{guest.share}" if guest is not None else user_of(request).id
