"""A fork server for the local spawner: the session agent's modules are imported once, and
every session's supervisor and agent are forks of that process (docs/ARCHITECTURE.md, "Memory").

    python -m gateway.spawners.forkserver --parent PID --socket-fd FD --preload MODULE ...

Each agent imports aiohttp, aiortc, PyAV and numpy: about 50 MB of heap that is the same in
every one of them. Forked from a process that has imported them (and frozen them out of the
garbage collector's reach, so that collections do not write to their pages), forty agents on
a machine share one copy instead of holding forty. It also spares each start the imports.

The gateway holds the other end of a SOCK_SEQPACKET socket pair. A request names a module to
run as `python -m` would, its arguments, environment, working directory and the supervisor's
settings, and carries stdin/stdout/stderr as descriptors. The server forks a child that does
what `python -S supervisor.py … -- python -m MODULE ARGS` would do: new session (process
group), the descriptors as 0-2, the environment, supervisor.supervise(); and the supervisor's
agent is a fork of that child running the module. Each process rewrites its command line and
environment to those it stands for, so that `ps` (and whoever reads /proc/PID/cmdline or
environ) sees the same as without the server; the rest of the area the server's own took is
NULs (empty arguments at the end to a reader that splits on NUL), unless the process may
trim it (CAP_SYS_RESOURCE). The answer carries a pidfd of the child (signals cannot reach a reused
pid); its exit status follows as a message when the server has reaped it.

The server has no threads (OpenBLAS is told to start none) and no event loop: a fork of it is a
fork of a single-threaded process. It dies with the gateway (PR_SET_PDEATHSIG), and its
children with it, as the supervisor's do.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from gateway.spawners import supervisor

MAX_MESSAGE = 1 << 20
# Room for the longest command line a fork may show (an agent's --launch holds a bubblewrap
# command line): the server starts with an argument this long, which it then gives back.
TITLE_ROOM = 64 << 10
PR_SET_MM, PR_SET_MM_ARG_END, PR_SET_MM_ENV_END = 35, 9, 11
ROOM_VARIABLE = "FORKSERVER_ROOM"  # in the server's environment: room for a session's (set_environment)


# -- command lines ---------------------------------------------------------------------------

def _area(field: int) -> tuple[int, int]:
    """[start, end) of this process's command line (stat field 48) or environment (50) in its
    memory, where the kernel reads /proc/self/cmdline and /proc/self/environ (proc(5))."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[field - 3]), int(fields[field - 2])


def _rewrite(field: int, end_option: int, items: Sequence[bytes], trim: bool) -> bool:
    """The area written with NUL-terminated `items`, the rest NULs; with `trim`, the area ends
    after them where the kernel allows it (PR_SET_MM needs CAP_SYS_RESOURCE). False when they
    do not fit."""
    start, end = _area(field)
    data = b"".join(item + b"\0" for item in items)
    if len(data) > end - start:
        return False
    ctypes.memmove(start, data + b"\0" * (end - start - len(data)), end - start)
    if trim:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MM, end_option, ctypes.c_ulong(start + len(data)), 0, 0)
    return True


def set_command_line(argv: Sequence[str], trim: bool = False) -> bool:
    """/proc/self/cmdline becomes `argv`, NUL-separated as execve leaves it."""
    return _rewrite(48, PR_SET_MM_ARG_END, [os.fsencode(a) for a in argv], trim)


def set_environment(env: dict[str, str]) -> bool:
    """os.environ becomes `env`, and /proc/self/environ shows it. The original strings are
    overwritten only once the C library's environ no longer points at them (os.environ.clear()
    unsets each; the new values live in Python's memory)."""
    os.environ.clear()
    os.environ.update(env)
    return _rewrite(50, PR_SET_MM_ENV_END, [os.fsencode(f"{k}={v}") for k, v in env.items()], True)


# -- the server ------------------------------------------------------------------------------

def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_module(module: str, args: list[str]) -> int:
    """What `python -m MODULE ARGS` does, in this (forked) interpreter."""
    set_command_line([sys.executable, "-m", module, *args], trim=True)
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        return 1


def _fork_agent(module: str, args: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, ())  # the supervisor blocked its signals
            code = _run_module(module, args)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    return pid


def _child(request: dict[str, Any], stdio: list[int], server: socket.socket, server_pid: int) -> None:
    """The forked session: the supervisor, whose agent is a fork of this process. Never returns."""
    code = 1
    try:
        server.close()
        os.setsid()
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        for fd in stdio:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        set_environment(request["env"])
        module, args = request["module"], list(request["args"])
        set_command_line(request["title"], trim=True)  # the agent's line is the end of it
        code = supervisor.supervise(lambda: _fork_agent(module, args), server_pid,
                                    float(request["grace"]), bool(request["ipc_namespace"]))
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def serve(sock: socket.socket) -> None:
    """Answers requests until the gateway closes its end."""
    server_pid = os.getpid()
    children: dict[int, int] = {}  # pidfd -> pid
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    _send(sock, {"ready": True, "pid": server_pid})
    while True:
        for fd, _ in poller.poll():
            if fd == sock.fileno():
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
                if not data:
                    return  # the gateway is gone; PDEATHSIG ends the sessions
                request = json.loads(data)
                sys.stdout.flush()
                sys.stderr.flush()
                try:
                    pid = os.fork()
                except OSError as exc:  # EAGAIN, ENOMEM: this session does not start, others live on
                    _send(sock, {"id": request["id"], "error": f"fork failed: {exc}"})
                    pid = -1
                if pid == 0:
                    _child(request, fds, sock, server_pid)
                for received in fds:
                    os.close(received)
                if pid < 0:
                    continue
                pidfd = os.pidfd_open(pid)
                children[pidfd] = pid
                poller.register(pidfd, select.POLLIN)
                _send(sock, {"id": request["id"], "pid": pid}, [pidfd])
            else:
                pid = children.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                _send(sock, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.spawners.forkserver")
    p.add_argument("--parent", type=int, required=True, help="the gateway's pid")
    p.add_argument("--socket-fd", type=int, required=True)
    p.add_argument("--preload", action="append", default=[], help="a module to import before forking")
    p.add_argument("--room", default="", help=argparse.SUPPRESS)  # TITLE_ROOM, see above
    args = p.parse_args(argv)
    supervisor._prctl(supervisor.PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != args.parent:  # the gateway died before PDEATHSIG was armed
        return 1
    set_command_line([sys.executable, "-m", "gateway.spawners.forkserver", "--parent", str(args.parent)])
    os.environ.pop(ROOM_VARIABLE, None)
    sock = socket.socket(fileno=args.socket_fd)
    for module in args.preload:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()  # what was imported stays out of every collection: its pages stay shared
    serve(sock)
    return 0


# -- the gateway's side ----------------------------------------------------------------------

class ForkServerGone(ConnectionError):
    """The fork server exited (or never started); a new one is started for the next request."""


class ForkedProcess:
    """A forked session as the spawner sees it (the part of asyncio.subprocess.Process it uses)."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd: int | None = pidfd
        self._exited = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self._pidfd is None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)

    def _ended(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            if not self._exited.done():
                self._exited.set_result(returncode)


class ForkServer:
    """The gateway's handle on one fork server process."""

    def __init__(self, process: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self._process = process
        self._sock = sock
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._ready = asyncio.get_running_loop().create_future()
        self._orphans: set[asyncio.Future[None]] = set()  # children of a server that went away
        self.closed = False
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    @classmethod
    async def start(cls, preload: Sequence[str], env: dict[str, str]) -> ForkServer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # numpy's pool would be a thread to fork; the room: see set_environment()
            env = {**env, "OPENBLAS_NUM_THREADS": "1", ROOM_VARIABLE: "x" * TITLE_ROOM}
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.spawners.forkserver", "--parent", str(os.getpid()),
                "--socket-fd", str(theirs.fileno()), *(a for m in preload for a in ("--preload", m)),
                "--room", "x" * TITLE_ROOM, pass_fds=[theirs.fileno()], env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True)
        finally:
            theirs.close()
        ours.setblocking(False)
        server = cls(process, ours)
        try:
            await asyncio.wait_for(asyncio.shield(server._ready), 60)
        except BaseException:
            server.close()
            raise
        return server

    async def spawn(self, module: str, args: Sequence[str], *, title: Sequence[str],
                    env: dict[str, str], cwd: str, stdio: Sequence[int], grace: float,
                    ipc_namespace: bool) -> ForkedProcess:
        if self.closed:
            raise ForkServerGone("the fork server has exited")
        self._next_id += 1
        request = {"id": self._next_id, "module": module, "args": list(args), "title": list(title),
                   "env": env, "cwd": cwd, "grace": grace, "ipc_namespace": ipc_namespace}
        answer = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = answer
        try:
            # A few kB into a local socket with room: it does not block.
            socket.send_fds(self._sock, [json.dumps(request).encode()], list(stdio))
        except OSError as exc:
            self._pending.pop(self._next_id, None)
            self.close()
            raise ForkServerGone(f"the fork server is gone: {exc}") from None
        return await answer

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self.close()
                return
            message = json.loads(data)
            if message.get("ready"):
                if not self._ready.done():
                    self._ready.set_result(None)
            elif "exited" in message:
                child = self._children.pop(message["exited"], None)
                if child is not None:
                    child._ended(int(message["returncode"]))
            elif "error" in message:
                answer = self._pending.pop(message["id"], None)
                if answer is not None and not answer.done():
                    answer.set_exception(OSError(message["error"]))
            else:
                child = ForkedProcess(int(message["pid"]), fds[0])
                self._children[child.pid] = child
                answer = self._pending.pop(message["id"], None)
                if answer is not None and not answer.done():
                    answer.set_result(child)

    def close(self) -> None:
        """Stops listening; the server then exits, and with it (PDEATHSIG) any session left."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(ForkServerGone("the fork server has exited"))
        self._pending.clear()
        for child in self._children.values():
            self._orphans.add(task := asyncio.ensure_future(_await_pidfd_exit(child)))
            task.add_done_callback(self._orphans.discard)
        self._children.clear()
        if not self._ready.done():
            self._ready.set_exception(ForkServerGone("the fork server exited before it was ready"))

    async def wait_closed(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._process.returncode is None:
                self._process.terminate()
        await self._process.wait()


async def _await_pidfd_exit(child: ForkedProcess) -> None:
    """A child whose server went away: its status cannot be known, only that it ended."""
    if child._pidfd is None:
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(child._pidfd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(child._pidfd)
    child._ended(-signal.SIGTERM)


def module_of(command: Sequence[str]) -> str | None:
    """The module of an agent command that is `<this python> -m MODULE …`, else None (a
    command the fork server cannot stand in for)."""
    if len(command) >= 3 and command[0] == sys.executable and command[1] == "-m":
        if importlib.util.find_spec(command[2]) is not None:
            return command[2]
    return None


if __name__ == "__main__":
    sys.exit(main())
