"""The gateway's AppRunner: requests aiohttp refuses before the application sees them (a
header over 8 KiB, a path that is not ASCII, a broken chunk size) are answered with the same
JSON `{"error": …}` body as everything else, not aiohttp's plain-text page."""
from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest


class _JsonErrorHandler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if a response started
        if status >= 500:
            reason = "internal error"
        else:
            first = (message or "").strip().splitlines()
            reason = (first[0].rstrip(":") if first else HTTPStatus(status).phrase).lower()[:200]
        response = web.json_response({"error": reason}, status=status)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        # What web.Server.__call__ does, with our handler class (aiohttp 3.9-3.14).
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same object and state; only __call__ differs
        return server
