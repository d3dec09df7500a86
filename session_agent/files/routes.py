"""`GET`/`PUT`/`DELETE /files/{path}` (SPEC "Files in the session's home"), with the agent token.

Bodies stream in both directions and never sit whole in memory: uploads are read from the
socket on the loop and written by a small pool of low-priority threads (the next piece is read
while the last one is written); downloads go out with sendfile() from a descriptor opened
beneath the home. No file operation runs on the loop, which also carries WebRTC.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
# aiohttp's own answer to `Expect: 100-continue`, used once our checks have passed
from aiohttp.web_urldispatcher import _default_expect_handler

from .headers import RangeNotSatisfiable, attachment, byte_range, content_type, etag, http_date, rfc3339
from .home import FileError, Home, Upload
from .paths import FilePath, PathError, parse

log = logging.getLogger(__name__)

PIECE = 1 << 20  # bytes handed to a writer thread at once
MAX_PIECES = 512  # and at most this many buffers (writev takes up to IOV_MAX = 1024)
WORKERS = 4
THREAD_NICE = 10  # below the encoder: a big upload must not cost the stream frames
# While somebody watches the session, uploads are paced to this (800 Mbit/s: more than most
# links to a browser carry), so that on a small machine they leave the encoder its CPU.
RATE_WHILE_STREAMING = 100 << 20  # bytes per second
T = TypeVar("T")


class Files:
    """The agent's files service: the home (or why there is none) and its worker threads."""

    def __init__(self, home: str | None, max_upload: int, resolver: str = "auto",
                 streaming: Callable[[], bool] = lambda: False) -> None:
        self.max_upload = max_upload
        self.streaming = streaming
        self.home: Home | None = None
        self.problem: str | None = None
        try:
            if not home:
                raise OSError("no home directory configured (--home or $HOME)")
            self.home = Home(home, resolver)
        except OSError as exc:
            self.problem = f"the home {home!r} cannot be opened: {exc.strerror or exc}"
            log.warning(self.problem, extra={"action": "files_unavailable"})
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="files",
                                           initializer=_background_priority)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        if self.home is not None:
            self.home.close()


def _background_priority() -> None:
    """A nice value for this worker thread only (Linux applies it per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICE)
    except OSError:
        pass


FILES = web.AppKey("files", Files)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _refuse_unread(status: int, message: str, **headers: str) -> web.Response:
    """An answer before the body was read: the connection closes rather than reading it."""
    response = _error(status, message, **headers)
    response.force_close()
    return response


def _path(request: web.Request) -> FilePath:
    raw = request.raw_path.split("?", 1)[0].split("#", 1)[0]
    return parse(raw.removeprefix("/files/"))


Guard = Callable[[web.Request], "web.Response | None"]


def add_routes(app: web.Application, home: str | None, max_upload: int, guard: Guard,
               streaming: Callable[[], bool] = lambda: False, resolver: str = "auto") -> None:
    """The routes on `app`; `guard` answers a request that may not use them (no token);
    `streaming` says whether viewers are watching (uploads are paced meanwhile)."""
    files = Files(home, max_upload, resolver, streaming)
    app[FILES] = files

    async def cleanup(app: web.Application):
        yield
        await asyncio.get_running_loop().run_in_executor(None, files.close)

    app.cleanup_ctx.append(cleanup)

    def handler(fn: Callable[[web.Request, Files, Home, FilePath], Awaitable[web.StreamResponse]]):
        async def handle(request: web.Request) -> web.StreamResponse:
            refused = guard(request)
            if refused is not None:
                return refused
            try:
                path = _path(request)
            except PathError as exc:
                return _error(400, str(exc))
            if files.home is None:
                return _error(503, files.problem or "no home")
            try:
                return await fn(request, files, files.home, path)
            except FileError as exc:
                return _error(exc.status, str(exc))
        return handle

    async def expect(request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: refuse before the client sends a body it would waste."""
        refused = guard(request)
        if refused is not None:
            refused.force_close()
            return refused
        if request.content_length is not None and request.content_length > files.max_upload:
            return _too_large(files)
        return await _default_expect_handler(request)  # "100 Continue"

    app.router.add_get("/files/{path:.*}", handler(_get))
    app.router.add_route("PUT", "/files/{path:.*}", handler(_put), expect_handler=expect)
    app.router.add_delete("/files/{path:.*}", handler(_delete))


def _too_large(files: Files) -> web.Response:
    return _refuse_unread(413, f"the upload is larger than this session's limit of {files.max_upload} bytes")


async def _get(request: web.Request, files: Files, home: Home, path: FilePath) -> web.StreamResponse:
    kind, result = await files.run(home.open_get, path)
    if kind == "dir":
        return web.json_response(result, headers={"Cache-Control": "no-store"})
    fd, st = result
    try:
        return await _send(request, fd, st, path)
    finally:
        os.close(fd)


async def _send(request: web.Request, fd: int, st: os.stat_result, path: FilePath) -> web.StreamResponse:
    tag, modified = etag(st), http_date(st.st_mtime)
    headers = {"ETag": tag, "Last-Modified": modified, "Accept-Ranges": "bytes",
               "Content-Type": content_type(path.name), "Cache-Control": "no-cache"}
    if request.query.get("download") == "1":
        headers["Content-Disposition"] = attachment(path.name)
    try:
        span = byte_range(request.headers.get("Range"), st.st_size, request.headers.get("If-Range"),
                          (tag, modified))
    except RangeNotSatisfiable:
        return _error(416, f"the range is outside the file ({st.st_size} bytes)",
                      **{"Content-Range": f"bytes */{st.st_size}"})
    offset, count = (span[0], span[1] - span[0] + 1) if span else (0, st.st_size)
    if span:
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{st.st_size}"
    response = web.StreamResponse(status=206 if span else 200, headers=headers)
    response.content_length = count
    await response.prepare(request)
    if request.method != "HEAD" and count:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client went away")
        with os.fdopen(os.dup(fd), "rb", buffering=0) as file:
            # In the kernel from the page cache to the socket; asyncio falls back to read/write
            # where sendfile cannot be used.
            await asyncio.get_running_loop().sendfile(transport, file, offset, count)
    await response.write_eof()
    return response


async def _put(request: web.Request, files: Files, home: Home, path: FilePath) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > files.max_upload:
        return _too_large(files)
    if path.directory:
        if await request.content.read(1):
            return _refuse_unread(400, "a folder is made with an empty body")
        created = await files.run(home.make_dir, path)
        return web.json_response({"path": path.text, "type": "dir"}, status=201 if created else 200)
    if_match, if_none_match = request.headers.get("If-Match"), request.headers.get("If-None-Match")
    try:
        upload = await files.run(home.begin_upload, path, if_match, if_none_match)
    except FileError as exc:
        return _refuse_unread(exc.status, str(exc))
    try:
        await _receive(request, files, upload)
        created, st = await files.run(upload.commit, if_match, if_none_match)
    except FileError as exc:
        upload.abort()
        if exc.status == 413:
            return _refuse_unread(exc.status, str(exc))
        if exc.status == 507:  # read the rest, so that the client surely gets the answer
            await _discard(request, files.max_upload - upload.size)
        return _error(exc.status, str(exc))
    except (ConnectionResetError, aiohttp.ClientPayloadError) as exc:
        upload.abort()
        log.info("upload cut off, nothing kept", extra={"action": "upload_cut", "reason": str(exc)})
        return _error(400, "the upload was cut off: nothing was kept")
    except BaseException:
        upload.abort()
        raise
    return web.json_response({"path": path.text, "type": "file", "size": st.st_size,
                              "modified": rfc3339(st.st_mtime)},
                             status=201 if created else 200, headers={"ETag": etag(st)})


async def _receive(request: web.Request, files: Files, upload: Upload) -> None:
    """Streams the body into the upload: the chunks the socket delivered go to a writer thread in
    one writev() (no copy on the way), and the next ones are read while it writes."""
    writing: asyncio.Future[None] | None = None
    pieces: list[bytes] = []
    buffered = received = 0
    pace = _Pace(files.streaming)
    try:
        while True:
            chunk, end_of_http_chunk = await request.content.readchunk()
            if chunk:
                await pace.took(len(chunk))
                received += len(chunk)
                if received > files.max_upload:
                    raise FileError(413, f"the upload is larger than this session's limit of "
                                         f"{files.max_upload} bytes")
                pieces.append(chunk)
                buffered += len(chunk)
            elif end_of_http_chunk and not request.content.at_eof():
                continue  # a chunk boundary of a chunked body, not its end
            if buffered >= PIECE or len(pieces) >= MAX_PIECES or (not chunk and buffered):
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(files.run(upload.write, pieces))
                pieces, buffered = [], 0
            if not chunk:
                break
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            # The descriptor must outlive the write in flight, whatever ends the upload.
            await asyncio.shield(asyncio.wait([writing]))
        if writing is not None and writing.done() and not writing.cancelled():
            writing.exception()  # retrieved: a second failure does not warn as unhandled


class _Pace:
    """Holds an upload to RATE_WHILE_STREAMING while `streaming()`; while it waits the socket is
    not read, so TCP slows the sender (and the gateway) down too."""

    def __init__(self, streaming: Callable[[], bool]) -> None:
        self.streaming = streaming
        self.start = 0.0
        self.bytes = 0

    async def took(self, size: int) -> None:
        now = asyncio.get_running_loop().time()
        if not self.streaming():
            self.bytes = 0
            return
        if not self.bytes:
            self.start = now
        self.bytes += size
        ahead = self.bytes / RATE_WHILE_STREAMING - (now - self.start)
        if ahead > 0.002:
            await asyncio.sleep(ahead)


async def _discard(request: web.Request, limit: int) -> None:
    try:
        while limit > 0 and (chunk := await request.content.readany()):
            limit -= len(chunk)
    except (ConnectionResetError, aiohttp.ClientPayloadError):
        pass


async def _delete(request: web.Request, files: Files, home: Home, path: FilePath) -> web.StreamResponse:
    await files.run(home.delete, path)
    return web.Response(status=204)
