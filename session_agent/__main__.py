"""python -m session_agent: stream one X display over WebRTC. See SPEC "Session agent"."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys

from aiohttp import web

from . import ice
from . import log as agent_log
from .config import AgentConfig, parse_args
from .display.xserver import XServerError, XSession, can_connect, set_size
from .media.encoder import probe
from .server import create_app

log = logging.getLogger("session_agent")

# After the display or the application is gone, /health reports why for this long, then exit.
EXIT_GRACE_S = 5.0
EXIT_DISPLAY_LOST = 3
EXIT_APP_EXITED = 4


class Fatal(Exception):
    """Startup failed; the message is the one line the user sees."""


async def serve(config: AgentConfig, xsession: XSession | None) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def finish(code: int) -> None:
        if not done.done():
            done.set_result(code)

    def app_problem() -> str | None:
        code = xsession.app_exit_code() if xsession else None
        return None if code is None else f"the application exited with code {code}"

    def display_lost(reason: str) -> None:
        loop.call_later(EXIT_GRACE_S, finish, EXIT_DISPLAY_LOST)

    try:
        encoder = await loop.run_in_executor(None, probe, config.encoder)
    except RuntimeError as exc:
        raise Fatal(str(exc)) from None
    app = create_app(config, encoder, problem=app_problem, on_display_lost=display_lost)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
    except Exception as exc:
        raise Fatal(f"cannot capture display {config.display}: {exc}") from None
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise Fatal(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish, 0)

    async def watch_app() -> None:
        pid = xsession.app_pid() if xsession else None
        if pid is None:
            return
        await _exited(pid)
        while app_problem() is None:  # readable pidfd: exited; poll() reaps it at once
            await asyncio.sleep(0.05)
        log.error(app_problem(), extra={"action": "app_exited"})
        loop.call_later(EXIT_GRACE_S, finish, EXIT_APP_EXITED)

    watcher = asyncio.ensure_future(watch_app())
    log.info("listening", extra={"action": "agent_started", "display": config.display, "encoder": encoder.name})
    code = await done
    watcher.cancel()
    log.info("stopping", extra={"action": "agent_stopping"})
    await runner.cleanup()
    return code


async def _exited(pid: int) -> None:
    """Until process `pid` exits: its pidfd becomes readable (no polling: an idle session
    does not wake for this); a sleep loop where pidfds are missing (Linux < 5.3)."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while _alive(pid):
            await asyncio.sleep(0.5)
        return
    gone = loop.create_future()
    loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _announce_ready(path: str, size: tuple[int, int]) -> None:
    """The display is ready for applications: at its size, with its window manager. Written
    whole under another name and renamed, so that a waiter never sees half a file."""
    partial = f"{path}.partial"
    try:
        with open(partial, "w") as f:
            f.write(f"{size[0]}x{size[1]}\n")
        os.replace(partial, path)
    except OSError as exc:
        raise Fatal(f"cannot write the ready file {path}: {exc.strerror or exc}") from None


M_ARENA_MAX = -8  # glibc mallopt()


def _one_malloc_arena() -> None:
    """Every thread allocates from the main heap. glibc gives each thread (encoder, refiner,
    watcher, FFmpeg's) an arena of its own, and malloc_trim() does not give back what those
    hold once nobody watches: 15 MB per idle agent, measured (docs/ARCHITECTURE.md, "Memory").
    Before any thread exists; the GIL serializes most allocations anyway."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # not glibc
        pass


def main(argv: list[str] | None = None) -> int:
    _one_malloc_arena()
    config = parse_args(argv)
    agent_log.setup("session-agent", session_id=os.environ.get("SESSION_ID"))
    ice.install(config)
    xsession: XSession | None = None
    announced: str | None = None  # the ready file, once written
    if config.xauthority:
        # Every connection of this process (python-xlib, mss) and of its children finds the cookie.
        os.environ["XAUTHORITY"] = config.xauthority
    try:
        size, max_size = (config.width, config.height), (config.max_width, config.max_height)
        if config.xvfb:
            xsession = XSession(config.display, config.xauthority)
            xsession.start_xvfb(size, max_size, glx=config.glx)
        elif not can_connect(config.display):
            raise Fatal(f"cannot open display {config.display}")
        elif config.set_size:
            # An X server started elsewhere (the pod's session container) is as large as its
            # framebuffer (--max-size) until set: the session's size is what must stream.
            size = set_size(config.display, size, max_size)
        if config.window_manager:
            xsession = xsession or XSession(config.display)
            xsession.start_window_manager()
        if config.ready_file:
            _announce_ready(config.ready_file, size)
            announced = config.ready_file
        if config.launch:
            xsession = xsession or XSession(config.display)
            xsession.launch(config.launch)
        return asyncio.run(serve(config, xsession))
    except (Fatal, XServerError) as exc:
        print(f"session_agent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if announced:  # the display goes with us: nobody may start on it now
            with contextlib.suppress(OSError):
                os.remove(announced)
        if xsession is not None:
            xsession.stop()


if __name__ == "__main__":
    sys.exit(main())
