"""`GET`/`PUT /clipboard` (SPEC "Clipboard beyond text"), with the agent token.

GET answers what X's CLIPBOARD holds: `image/png` for an image, else `text/plain;
charset=utf-8`; 204 when it holds nothing that can be handed over. PUT takes `image/png` (at
most 32 MiB) or UTF-8 text (at most 1 MiB, as on the data channel) and makes it what X
applications paste; a declared Content-Length over the limit is refused before any body is read.
Clients are not told of what they set (only an application's copy is announced).
"""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
# aiohttp's own answer to `Expect: 100-continue`, used once our checks have passed
from aiohttp.web_urldispatcher import _default_expect_handler
from Xlib.error import ConnectionClosedError, XError

from .clipboard import MAX_IMAGE_BYTES, MAX_TEXT_BYTES, PNG, PNG_SIGNATURE, TEXT, Content
from .session import ClipboardBusy, InputSession

Guard = Callable[[web.Request], "web.Response | None"]
_LIMITS = {PNG: MAX_IMAGE_BYTES, TEXT: MAX_TEXT_BYTES}
_NO_STORE = {"Cache-Control": "no-store"}  # what somebody copied is nobody's cache entry


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _refuse_unread(status: int, message: str) -> web.Response:
    """An answer before the body was read: the connection closes rather than reading it."""
    response = _error(status, message)
    response.force_close()
    return response


def media_type(request: web.BaseRequest) -> str | None:
    """`image/png` or `text/plain` (UTF-8 or no charset) for what may be PUT; None otherwise."""
    if request.content_type == PNG:
        return PNG
    charset = (request.charset or "utf-8").lower().replace("_", "-")
    if request.content_type == TEXT and charset in ("utf-8", "utf8"):
        return TEXT
    return None


def add_routes(app: web.Application, session: InputSession, guard: Guard) -> None:
    """The routes on `app`; `guard` answers a request that may not use them (no token)."""

    async def get(request: web.Request) -> web.StreamResponse:
        refused = guard(request)
        if refused is not None:
            return refused
        try:
            content = await session.clipboard()
        except ClipboardBusy:
            return _error(503, "the application holding the clipboard has not handed it over",
                          **{"Retry-After": "1"})
        if content is None:
            return web.Response(status=204, headers=_NO_STORE)
        if content.mime == PNG:
            return web.Response(body=content.data, content_type=PNG, headers=_NO_STORE)
        return web.Response(body=content.data, content_type=TEXT, charset="utf-8", headers=_NO_STORE)

    async def put(request: web.Request) -> web.StreamResponse:
        refused = guard(request)
        if refused is not None:
            refused.force_close()
            return refused
        mime = media_type(request)
        if mime is None:
            return _refuse_unread(415, "Content-Type must be image/png or text/plain (UTF-8)")
        limit = _LIMITS[mime]
        too_large = f"the clipboard takes at most {limit} bytes of {mime}"
        if request.content_length is not None and request.content_length > limit:
            return _refuse_unread(413, too_large)
        body = bytearray()
        while chunk := await request.content.read(1 << 20):
            body += chunk
            if len(body) > limit:
                return _refuse_unread(413, too_large)
        data = bytes(body)
        if mime == PNG and not data.startswith(PNG_SIGNATURE):
            return _error(400, "the body is not a PNG image")
        if mime == TEXT:
            try:
                data.decode()
            except UnicodeDecodeError:
                return _error(400, "the body is not UTF-8 text")
        try:
            session.set_clipboard_content(Content(mime, data))
        except (XError, ConnectionClosedError):
            return _error(503, "the display refused the clipboard")
        return web.json_response({"mime": mime, "size": len(data)}, headers=_NO_STORE)

    async def expect(request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: refuse before the client sends a body it would waste."""
        refused = guard(request)
        if refused is None:
            mime = media_type(request)
            if mime is None:
                refused = _error(415, "Content-Type must be image/png or text/plain (UTF-8)")
            elif request.content_length is not None and request.content_length > _LIMITS[mime]:
                refused = _error(413, f"the clipboard takes at most {_LIMITS[mime]} bytes of {mime}")
        if refused is not None:
            refused.force_close()
            return refused
        return await _default_expect_handler(request)

    app.router.add_get("/clipboard", get)
    app.router.add_route("PUT", "/clipboard", put, expect_handler=expect)

