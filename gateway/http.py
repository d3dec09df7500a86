"""What every handler module shares: the app's keys and the error body of the SPEC."""
from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.auth import Authenticator, User
from gateway.config import Config
from gateway.metrics import Metrics
from gateway.sessions import SessionRegistry

CONFIG = web.AppKey("config", Config)
AUTH = web.AppKey("auth", Authenticator)
REGISTRY = web.AppKey("registry", SessionRegistry)
METRICS = web.AppKey("metrics", Metrics)
CLIENT = web.AppKey("client", aiohttp.ClientSession)  # for the agents (WHEP proxy)
USER = web.RequestKey("user", User)  # the authenticated User


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def user_of(request: web.Request) -> User:
    user: User = request[USER]
    return user
