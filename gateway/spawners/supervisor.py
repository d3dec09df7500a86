"""Runs one session's agent and guarantees that nothing of it outlives the session.

    python -m gateway.spawners.supervisor --parent PID --grace S [--ipc-namespace] -- AGENT_COMMAND...

The local spawner starts this (in a new process group) instead of the agent itself, because the
agent's own children (Xvfb, the window manager, the application and its plug-ins) would
otherwise be orphaned whenever the agent is killed, and PR_SET_PDEATHSIG only reaches a direct
child. This process:

- asks the kernel for SIGTERM when the gateway dies (PR_SET_PDEATHSIG), also when it is
  SIGKILLed, and becomes a child subreaper so every orphaned descendant is re-parented here;
- on SIGTERM/SIGINT/SIGHUP sends SIGTERM to the agent, waits `--grace` seconds, then
  SIGKILLs every descendant; when the agent exits by itself, it ends the leftovers the same way;
- exits with the agent's status (128+N when a signal N ended it);
- with --ipc-namespace, first moves into a new IPC namespace, so that the session's SysV shared
  memory (the agent's MIT-SHM capture of the screen, the application's own segments) is out of
  every other session's reach; Xvfb, the agent and the application share it. As root this is
  unshare(CLONE_NEWIPC); as anyone else it takes a user namespace too (uid and gid map to
  themselves), because a new IPC namespace needs CAP_SYS_ADMIN.

Standard library only, imports nothing of the gateway: it starts in a few tens of ms.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
_WAKE = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_STOP = _WAKE - {signal.SIGCHLD}


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def new_ipc_namespace() -> None:
    """Move this (single-threaded) process into a new IPC namespace; its children inherit it."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWIPC if uid == 0 else CLONE_NEWUSER | CLONE_NEWIPC
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot make an IPC namespace: {os.strerror(errno)}")
    if flags & CLONE_NEWUSER:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def _descendants() -> list[int]:
    """Every living process below this one (after re-parenting, orphans are direct children)."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [me]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _reap() -> dict[int, int]:
    """Collect every exited child without blocking: {pid: wait status}."""
    exited: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited[pid] = status


def _signal_all(sig: int) -> list[int]:
    pids = _descendants()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def _wait_until(deadline: float, done: Callable[[], bool]) -> None:
    while not done() and time.monotonic() < deadline:
        signal.sigtimedwait(_WAKE, max(0.01, min(0.5, deadline - time.monotonic())))
        _reap()


def _log(message: str, **fields: object) -> None:
    print(json.dumps({"component": "supervisor", "message": message, **fields}),
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.spawners.supervisor")
    p.add_argument("--parent", type=int, required=True, help="the gateway's pid")
    p.add_argument("--grace", type=float, default=5.0)
    p.add_argument("--ipc-namespace", action="store_true",
                   help="run the session in an IPC namespace of its own")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command")
    return supervise(lambda: os.posix_spawnp(command[0], command, os.environ, setsigmask=()),
                     args.parent, args.grace, args.ipc_namespace)


def supervise(start_agent: Callable[[], int], parent: int, grace: float, ipc_namespace: bool) -> int:
    """Starts the agent (`start_agent` returns its pid, a child of this process, with no signal
    blocked) and supervises it as described above; the exit status to end with. Also used by
    the fork server (forkserver.py), whose agents are forks rather than new programs."""
    # Signals are taken synchronously with sigtimedwait: no handler can interrupt the
    # bookkeeping below. They are blocked before prctl so that none is lost in between.
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAKE)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        return 1
    if ipc_namespace:
        try:
            new_ipc_namespace()
        except OSError as exc:
            _log("cannot isolate the session", level="error", reason=str(exc))
            return 1
    agent = start_agent()
    status: int | None = None
    stopping_since: float | None = None
    while status is None:
        exited = _reap()
        if agent in exited:
            status = exited[agent]
            break
        if stopping_since is None:
            # Idle: asleep until a child exits or a stop signal comes (blocked signals stay
            # pending, so none is lost between the reap above and this wait).
            info = signal.sigwaitinfo(_WAKE)
        else:
            info = signal.sigtimedwait(_WAKE, max(0.01, stopping_since + grace - time.monotonic()))
        if info is not None and info.si_signo in _STOP and stopping_since is None:
            stopping_since = time.monotonic()
            os.kill(agent, signal.SIGTERM)
        if stopping_since is not None and time.monotonic() - stopping_since > grace:
            _log("agent did not stop in time: killing it", grace_s=grace)
            break
    # Whatever is left (the agent after the grace period, or what it left behind) gets
    # SIGTERM and a short grace, then SIGKILL.
    if _signal_all(signal.SIGTERM if status is not None else signal.SIGKILL):
        _wait_until(time.monotonic() + min(grace, 2.0), lambda: not _descendants())
        _signal_all(signal.SIGKILL)
        _wait_until(time.monotonic() + 5.0, lambda: not _descendants())
    if status is None:
        return 128 + signal.SIGKILL
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
