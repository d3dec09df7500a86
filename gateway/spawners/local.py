"""The local spawner: each session is a session agent process group on this machine.

A session runs `python -m session_agent --xvfb --display :N --port P --launch <app>` under
`supervisor.py`, which ends every process of the session when the session is deleted or the
gateway dies (even by SIGKILL). The application runs in a bubblewrap sandbox (`sandbox.py`)
when there are several users (required then) or when bwrap works (token mode), and the
session in an IPC namespace of its own. Layout under --data-dir, every directory 0700:

    users/<name>/owner.json  the exact user id this directory belongs to (see user_dir_name)
    users/<name>/home/       the application's HOME (kept across sessions: the user's files)
    sessions/<id>.log        the agent's JSON log lines (stderr), read for failure reasons
    run/<id>/token           the agent's token (0600), read by the agent at start (--token-file)
    run/<id>/Xauthority      the display's cookie, written by the agent (--xauthority)

Sessions do not survive the gateway: a stopping gateway terminates them, a killed one has
them terminated by their supervisors, so a starting gateway has none to re-adopt. Users' homes
stay. Resources in requests are recorded (logs, metrics) but not enforced locally.
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Set
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import Config
from gateway.identity import slug, user_hash
from gateway.idle import idle_policy
from gateway.logs import log_event
from gateway.shares import Share
from gateway.spawners import forkserver, sandbox, supervisor
from gateway.spawners.base import (Phase, Session, SessionRequest, SessionTable, Spawner,
                                   SpawnerError, new_agent_token, new_session_id, utcnow)

log = logging.getLogger("gateway.local-spawner")

DISPLAYS = range(100, 1000)  # clear of the :0.. a desktop uses and of :99 in session images
START_ATTEMPTS = 3
LOG_RETENTION_S = 7 * 24 * 3600
# An agent that exits at start with one of these in its last line lost a race for a display
# number or port that was free when this spawner picked it: worth another try elsewhere.
_CONFLICT = re.compile(r"display|port|in use|address", re.IGNORECASE)
OWNER_FILE = "owner.json"
Process = asyncio.subprocess.Process | forkserver.ForkedProcess  # a session's supervisor
# Applications that draw with OpenGL: their X server needs GLX, which costs the others 10 MB.
GLX_APPLICATIONS = frozenset({"blender"})
# Never handed on to an agent: the gateway's settings and any token of another agent.
_NOT_INHERITED = ("DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY", "AGENT_TOKEN", "AGENT_TOKEN_FILE",
                  "AGENT_XAUTHORITY")
# Plain lines that are errors: the agent's fatal line, the exception line of a traceback.
_PLAIN_ERROR = re.compile(r"^(session_agent: error:|[A-Za-z_.]*(Error|Exception)\b)")


class _Start(enum.Enum):
    READY = "ready"
    UNHEALTHY = "unhealthy"  # the agent runs but says why it cannot serve (its application died)
    EXITED = "exited"
    TIMEOUT = "timeout"


class UserDirError(Exception):
    """A user's directory cannot be used: recorded for another id, not recorded, not a directory."""


def user_dir_name(user: str) -> str:
    """The name of a user's directory under users/: a readable slug of the id, then the first
    128 bits of the SHA-256 of the exact id, always (also for plain names), so that two ids
    share a name only if SHA-256 collides. The slug has no '.' or '/': no name escapes users/,
    is hidden, or is an older version's plain name."""
    return f"{slug(user, 'a-z0-9_-', 40, fill='_')}-{user_hash(user)}"


def user_home(users_dir: Path, user: str, owner: tuple[int, int] | None = None) -> Path:
    """users/<name>/home of `user`, made (0700) on first use with the exact id recorded in
    users/<name>/owner.json, next to the home where the application cannot reach it.

    A directory recorded for another id, or with no record at all (one that an older version
    made, or that somebody put there), is refused, never taken over. `owner`: the (uid, gid)
    the home must belong to (a root gateway's sandbox uid)."""
    path = users_dir / user_dir_name(user)
    if not os.path.lexists(path):
        # Made complete under a temporary name, then renamed: the name never exists without
        # its record, even if the gateway dies half-way.
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=users_dir))
        try:
            fd = os.open(staging / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"user": user}, f)
            (staging / "home").mkdir(mode=0o700)
            os.rename(staging, path)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not os.path.lexists(path):
                raise  # else another gateway on this data dir made it meanwhile: check theirs
    name = f"users/{path.name}"
    if path.is_symlink() or not path.is_dir():
        raise UserDirError(f"{name} is not a directory")
    try:
        recorded = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))["user"]
    except FileNotFoundError:
        raise UserDirError(f"{name} has no {OWNER_FILE}: it was not made for this user id "
                           "by this gateway, so it is not used") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserDirError(f"{name}/{OWNER_FILE} cannot be read: {exc}") from None
    if recorded != user:
        raise UserDirError(f"{name} belongs to another user id")
    home = path / "home"
    if home.is_symlink() or not home.is_dir():
        raise UserDirError(f"{name}/home is not a directory")
    os.chmod(path, 0o700)
    if owner is not None and (home.stat().st_uid, home.stat().st_gid) != owner:
        os.chown(home, *owner)  # the directory itself: what the application makes is its own
    os.chmod(home, 0o700)
    return home


def unclaimed_user_dirs(users_dir: Path) -> list[str]:
    """Directories in users/ with no owner record: an older version's users/<plain-name>/."""
    try:
        entries = sorted(os.listdir(users_dir))
    except OSError:
        return []
    return [e for e in entries if not e.startswith(".") and not (users_dir / e / OWNER_FILE).exists()]


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """A 0600 file (replacing any), optionally given to `owner`."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if owner is not None:
        os.chown(path, *owner)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _display_taken(n: int) -> bool:
    return os.path.exists(f"/tmp/.X11-unix/X{n}") or os.path.exists(f"/tmp/.X{n}-lock")


def last_log_reason(path: Path) -> str:
    """The most telling line at the end of a session log: the last error, else the last line.

    The log holds the agent's JSON lines and, unparsed, whatever the application writes to
    stderr (GIMP is chatty), so among plain lines only the agent's one-line fatal error and a
    traceback's exception line count as errors."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors: list[str] = []
    last = ""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            text = next((str(entry[k]) for k in ("message", "msg", "error") if entry.get(k)), line)
            if entry.get("reason"):
                text = f"{text}: {entry['reason']}"
            if str(entry.get("level", "")).lower() in ("error", "critical", "fatal"):
                errors.append(text)
            last = text
        elif _PLAIN_ERROR.match(line):
            errors.append(line)
            last = line
    return (errors[-1] if errors else last or (lines[-1] if lines else ""))[:300]


class LocalSpawner(Spawner):
    name = "local"
    worker_field = "process"

    def __init__(self, config: Config) -> None:
        self._config = config
        self._users_dir = config.data_dir / "users"
        self._logs_dir = config.data_dir / "sessions"
        self._run_dir = config.data_dir / "run"
        self._bwrap: str | None = None  # set by start() when applications are sandboxed
        self._layout: dict[str, str | None] = {}
        self._privileged = os.geteuid() == 0
        self._table = SessionTable()
        self._procs: dict[str, Process] = {}
        self._fork_module = (forkserver.module_of(config.agent_command)
                             if config.agent_fork_server == "auto" else None)
        self._forks: forkserver.ForkServer | None = None
        self._forks_starting: asyncio.Future[forkserver.ForkServer] | None = None
        self._retired: set[asyncio.Future[None]] = set()
        self._displays: dict[str, int] = {}  # session id -> reserved display number
        self._lifecycles: dict[str, asyncio.Task[None]] = {}
        self._terminations: dict[str, asyncio.Task[None]] = {}
        self._http: aiohttp.ClientSession | None = None

    # -- Spawner interface ---------------------------------------------------------------

    async def start(self) -> None:
        await self._choose_sandbox()
        for path in (self._users_dir, self._logs_dir, self._run_dir):
            _private_dir(path)
        cutoff = time.time() - LOG_RETENTION_S
        for old in self._logs_dir.glob("*.log"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        # Tokens and cookies of sessions that died with an earlier gateway; half-made user dirs.
        for stale in [*self._run_dir.iterdir(), *self._users_dir.glob(".new-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        unclaimed = unclaimed_user_dirs(self._users_dir)
        if unclaimed:
            log_event(log, "user_dirs_unclaimed", level=logging.WARNING, count=len(unclaimed),
                      directories=unclaimed[:20], hint="see docs/GATEWAY.md, 'User directories'")
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        if self._fork_module is not None:  # its imports take seconds: not on the first session's time
            self._forks_starting = self._start_fork_server()

    async def _choose_sandbox(self) -> None:
        """Sandbox applications when asked or when several users share the machine (then bwrap
        must work, or the gateway does not start), or when it simply works (token mode)."""
        config = self._config
        if config.sandbox == "off":
            return
        bwrap = sandbox.find_bwrap()
        why = await sandbox.probe(bwrap, self._privileged, config.sandbox_uid, config.sandbox_uid)
        if why is None:
            self._bwrap, self._layout = bwrap, sandbox.host_layout()
        elif config.sandbox == "on" or config.multi_user:
            needs = "--sandbox on" if config.sandbox == "on" else f"--auth {config.auth}"
            raise SpawnerError(f"{needs} needs each application sandboxed with bubblewrap, but {why}")
        else:
            log_event(log, "sandbox_unavailable", level=logging.WARNING, reason=why,
                      effect="applications run without a sandbox (token mode: one user)")

    async def close(self) -> None:
        for session in self._table.list():
            await self.delete(session.id)
        await asyncio.gather(*self._terminations.values(), return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._forks_starting is not None:
            with contextlib.suppress(Exception):
                self._forks = await self._forks_starting
        if self._forks is not None:
            self._forks.close()
            await self._forks.wait_closed()

    async def create(self, request: SessionRequest) -> Session:
        session = Session(
            id=new_session_id(), user=request.user, application=request.application,
            phase=Phase.PENDING, created_at=utcnow(), message="waiting to start",
            agent_token=new_agent_token(), resources=dict(request.resources),
            timeout=request.timeout, tier=request.tier, node_type="local")
        self._table.put(session)
        self._lifecycles[session.id] = asyncio.create_task(self._guarded_lifecycle(session.id))
        return session

    async def delete(self, session_id: str) -> None:
        session = self._table.get(session_id)
        if session is None or session.phase is Phase.TERMINATING:
            return
        self._update(session_id, phase=Phase.TERMINATING, message="stopping")
        self._terminations[session_id] = asyncio.create_task(self._terminate(session_id))

    def get(self, session_id: str) -> Session | None:
        return self._table.get(session_id)

    async def update_shares(self, session_id: str,
                            change: Callable[[tuple[Share, ...]], tuple[Share, ...]]) -> Session:
        # One process, one loop: reading and writing the table without an await is atomic.
        session = self._table.get(session_id)
        if session is None:
            raise KeyError(session_id)
        updated = self._update(session_id, shares=change(session.shares))
        assert updated is not None
        return updated

    def list(self, user: str | None = None) -> list[Session]:
        return self._table.list(user)

    def subscribe(self, session_id: str | None = None) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._table.subscribe(session_id)

    # -- one session's life --------------------------------------------------------------

    @property
    def _app_owner(self) -> tuple[int, int] | None:
        """A root gateway's sandboxed applications run as the sandbox uid: it owns their homes
        and cookie files."""
        uid = self._config.sandbox_uid
        return (uid, uid) if self._privileged and self._bwrap else None

    def home_of(self, user: str) -> Path:
        return self._users_dir / user_dir_name(user) / "home"

    def _update(self, session_id: str, **changes: Any) -> Session | None:
        session = self._table.get(session_id)
        if session is None:
            return None
        session = replace(session, **changes)
        self._table.put(session)
        return session

    async def _guarded_lifecycle(self, session_id: str) -> None:
        """A bug here must fail its session with a reason, not leave it pending forever."""
        try:
            await self._lifecycle(session_id)
        except Exception as exc:
            log_event(log, "session_error", level=logging.ERROR, exc_info=True, session_id=session_id)
            await self._fail(session_id, f"internal error: {exc!r}"[:300])

    async def _lifecycle(self, session_id: str) -> None:
        """Start the session, then watch it until it exits, idles out, or is cancelled."""
        session = self._table.get(session_id)
        assert session is not None
        command = self._config.app_commands.get(session.application, "")
        words = shlex.split(command)
        if not words or shutil.which(words[0]) is None:
            name = words[0] if words else "(none configured)"
            await self._fail(session_id, f"{session.application} is not installed here "
                                         f"(command {name!r} not found)")
            return
        program = shutil.which(words[0], path=sandbox.PATH)
        if self._bwrap and (program is None or not sandbox.visible(program)):
            where = (f"{program} is outside what the sandbox shows (/usr, /etc)" if program
                     else f"{shutil.which(words[0])} is not on the sandbox's PATH ({sandbox.PATH})")
            await self._fail(session_id, f"{session.application} cannot run in the sandbox: {where}")
            return
        try:
            home = await asyncio.to_thread(user_home, self._users_dir, session.user, self._app_owner)
        except UserDirError as exc:
            await self._fail(session_id, f"cannot use the user's directory: {exc}")
            return
        log_path = self._logs_dir / f"{session_id}.log"
        deadline = asyncio.get_running_loop().time() + self._config.start_timeout
        tried: set[int] = set()  # displays that failed here: another program holds them
        for attempt in range(1, START_ATTEMPTS + 1):
            proc, url = await self._spawn(session, command, home, log_path, avoid=tried)
            tried.add(self._displays[session_id])
            outcome, reason = await self._wait_ready(proc, url, deadline)
            if outcome is _Start.READY:
                break
            reason = reason or last_log_reason(log_path)
            if outcome is _Start.TIMEOUT:
                await self._fail(session_id, f"{session.application} did not start within "
                                             f"{self._config.start_timeout:g} s"
                                             + (f": {reason}" if reason else ""))
                return
            await self._stop_process(session_id)
            if attempt == START_ATTEMPTS or not _CONFLICT.search(reason):
                await self._fail(session_id, f"{session.application} could not start: "
                                             f"{reason or f'the agent exited with code {proc.returncode}'}")
                return
            log_event(log, "session_start_retry", level=logging.WARNING, session_id=session_id,
                      user_id=session.user, attempt=attempt, reason=reason)
        started = self._update(session_id, phase=Phase.RUNNING, started_at=utcnow(),
                               message=None, progress=1.0)
        assert started is not None
        await self._watch(started, proc, url, log_path)

    async def _spawn(self, session: Session, command: str, home: Path, log_path: Path,
                     avoid: Set[int]) -> tuple[Process, str]:
        display = self._reserve_display(session.id, avoid)
        port = free_port()
        # The token goes in a file only the gateway side sees (never an environment or a
        # command line, which other processes of this uid can read); the cookie file is made
        # here for the uid the application runs as, and filled by the agent.
        run = self._run_dir / session.id
        _private_dir(run)
        token_file, xauthority = run / "token", run / "Xauthority"
        _write_private(token_file, session.agent_token.encode())
        _write_private(xauthority, b"", self._app_owner)
        launch = command
        if self._bwrap:
            box = sandbox.Sandbox(home=home, display=display, xauthority=xauthority,
                                  privileged=self._privileged, uid=self._config.sandbox_uid,
                                  gid=self._config.sandbox_uid, layout=self._layout, env=os.environ)
            launch = shlex.join(sandbox.bwrap_argv(box, shlex.split(command), self._bwrap))
        agent = [*self._config.agent_command, "--xvfb", "--display", f":{display}",
                 "--host", "127.0.0.1", "--port", str(port), "--token-file", str(token_file),
                 "--xauthority", str(xauthority), "--launch", launch]
        if self._config.session_size:
            agent += ["--size", self._config.session_size]
        if self._config.session_max_size:
            agent += ["--max-size", self._config.session_max_size]
        if session.application in GLX_APPLICATIONS:
            agent.append("--glx")
        # -S: the supervisor is standard library only; without `site` it holds 1 MB less.
        argv = [sys.executable, "-S", supervisor.__file__, "--parent", str(os.getpid()),
                "--grace", str(self._config.stop_grace),
                *(["--ipc-namespace"] if self._bwrap else []), "--", *agent]
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log_file:
            # Shielded: if the session is deleted while the process is being created, the
            # process must still be recorded so that it is stopped.
            spawning = asyncio.ensure_future(self._start_process(
                session, agent[3:], argv, log_file.fileno(), home))  # after `python -m MODULE`
            try:
                proc = await asyncio.shield(spawning)
            except asyncio.CancelledError:
                self._procs[session.id] = await spawning
                raise
        self._procs[session.id] = proc
        url = f"http://127.0.0.1:{port}"
        self._update(session.id, endpoint=url, worker=str(proc.pid), progress=0.2,
                     message=f"starting {session.application}")
        log_event(log, "session_process_started", session_id=session.id, user_id=session.user,
                  process=proc.pid, display=f":{display}", port=port, log=str(log_path),
                  sandbox=bool(self._bwrap))
        return proc, url

    async def _fork_server(self) -> forkserver.ForkServer | None:
        """The fork server (started on first use, again after it exited); None when agents are
        run as commands (not `python -m`, --agent-fork-server off, or the server cannot start)."""
        if self._fork_module is None:
            return None
        if self._forks is not None and not self._forks.closed:
            return self._forks
        if self._forks is not None:  # it exited: reap it, start another
            retired, self._forks = self._forks, None
            self._retired.add(task := asyncio.ensure_future(retired.wait_closed()))
            task.add_done_callback(self._retired.discard)
        if self._forks_starting is None:
            self._forks_starting = self._start_fork_server()
        starting = self._forks_starting
        try:
            self._forks = await asyncio.shield(starting)
        except (OSError, forkserver.ForkServerGone, asyncio.TimeoutError) as exc:
            log_event(log, "fork_server_unavailable", level=logging.WARNING, error=repr(exc),
                      effect="each agent runs as its own command")
            self._fork_module = None
            return None
        finally:
            if self._forks_starting is starting:
                self._forks_starting = None
        log_event(log, "fork_server_started", module=self._fork_module)
        return self._forks

    def _start_fork_server(self) -> asyncio.Future[forkserver.ForkServer]:
        return asyncio.ensure_future(forkserver.ForkServer.start(
            [f"{self._fork_module}.__main__"], self._common_env()))

    async def _start_process(self, session: Session, args: list[str], argv: list[str], log_fd: int,
                             home: Path) -> Process:
        """The supervisor and agent: forks of the fork server standing for `argv` (`args` are the
        agent's own), a server that died meanwhile replaced once; or `argv` run as a command."""
        for _ in range(2):
            forks = await self._fork_server()
            if forks is None:
                break
            with open(os.devnull, "rb") as null:
                try:
                    return await forks.spawn(
                        self._fork_module or "", args, title=argv, env=self._agent_env(session, home),
                        cwd=str(home), stdio=[null.fileno(), log_fd, log_fd], grace=self._config.stop_grace,
                        ipc_namespace=bool(self._bwrap))  # as argv's --ipc-namespace
                except forkserver.ForkServerGone as exc:
                    log_event(log, "fork_server_gone", level=logging.WARNING, error=str(exc))
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, cwd=home,
            env=self._agent_env(session, home), start_new_session=True)

    @staticmethod
    def _common_env() -> dict[str, str]:
        """What every agent's environment holds (the fork server's too)."""
        # None of the gateway's secrets; the agent's token comes through --token-file.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GATEWAY_") and k not in _NOT_INHERITED}
        # The agent may run from a source tree rather than an installed package.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        return env

    def _agent_env(self, session: Session, home: Path) -> dict[str, str]:
        env = self._common_env()
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CACHE_HOME=str(home / ".cache"),
                   SESSION_ID=session.id)
        return env

    def _reserve_display(self, session_id: str, avoid: Set[int] = frozenset()) -> int:
        taken = set(self._displays.values()) | avoid
        # A random starting point keeps two gateways on one machine from racing for the
        # same numbers; a lost race is caught by the agent and retried.
        start = random.randrange(len(DISPLAYS))
        for i in range(len(DISPLAYS)):
            n = DISPLAYS[(start + i) % len(DISPLAYS)]
            if n not in taken and not _display_taken(n):
                self._displays[session_id] = n
                return n
        raise RuntimeError("no free X display number")

    async def _wait_ready(self, proc: Process, url: str,
                          deadline: float) -> tuple[_Start, str]:
        """Poll the agent's /health until it is 200 (ready), answers 503 (it started but its
        application did not: the reason), exits, or the start deadline passes."""
        assert self._http is not None
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with self._http.get(f"{url}/health",
                                          timeout=aiohttp.ClientTimeout(total=min(2.0, remaining))) as r:
                    if r.status == 200:
                        return _Start.READY, ""
                    body = await r.json(content_type=None)
                    if isinstance(body, dict) and body.get("reason"):
                        return _Start.UNHEALTHY, str(body["reason"])[:300]
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                pass  # not listening yet
            try:
                await asyncio.wait_for(proc.wait(), 0.1)
                return _Start.EXITED, ""
            except asyncio.TimeoutError:
                pass
        return _Start.TIMEOUT, ""

    async def _watch(self, session: Session, proc: Process, url: str,
                     log_path: Path) -> None:
        """Until the agent exits (failed) or nobody has used it for `timeout` s (terminated).
        Viewers still connected are warned first (idle_policy), and any input postpones it."""
        warned = False
        while True:
            try:
                await asyncio.wait_for(proc.wait(), self._config.idle_check_interval)
            except asyncio.TimeoutError:
                pass
            else:
                reason = last_log_reason(log_path)
                await self._fail(session.id, f"the session ended unexpectedly (exit code "
                                             f"{proc.returncode})" + (f": {reason}" if reason else ""))
                return
            peers, idle = await self._activity(url)
            step = idle_policy(idle, peers, session.timeout, self._config.idle_warning, warned)
            if step.notice is not None:
                await self._notify(url, session.agent_token, step.notice)
                warned = not step.notice.get("cancel", False)
            if step.end:
                log_event(log, "session_idle_timeout", session_id=session.id, user_id=session.user,
                          timeout_s=session.timeout)
                await self.delete(session.id)
                return

    async def _activity(self, url: str) -> tuple[int, float]:
        """(viewers, seconds since anybody used the session) from the agent's /health; an agent
        that does not answer counts as in use, so that a busy agent is not taken for an idle one."""
        assert self._http is not None
        try:
            async with self._http.get(f"{url}/health") as r:
                body = await r.json(content_type=None)
                if r.status == 200 and isinstance(body, dict):
                    return int(body.get("peers", 0)), float(body.get("idle_s", 0.0))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, TypeError):
            pass
        return 1, 0.0

    async def _notify(self, url: str, token: str, notice: dict[str, Any]) -> None:
        assert self._http is not None
        try:
            async with self._http.post(f"{url}/notice", json=notice,
                                       headers={"Authorization": f"Bearer {token}"}) as r:
                await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # the warning is a courtesy; the cull does not depend on it

    async def _fail(self, session_id: str, message: str) -> None:
        await self._stop_process(session_id)
        self._update(session_id, phase=Phase.FAILED, message=message, endpoint=None)

    async def _terminate(self, session_id: str) -> None:
        lifecycle = self._lifecycles.pop(session_id, None)
        if lifecycle is not None:
            lifecycle.cancel()
            await asyncio.gather(lifecycle, return_exceptions=True)
        await self._stop_process(session_id)
        self._table.remove(session_id)
        self._terminations.pop(session_id, None)

    async def _stop_process(self, session_id: str) -> None:
        """SIGTERM to the supervisor (which gives the agent `stop_grace`, then SIGKILLs every
        process of the session); SIGKILL to the whole group if even that does not end it."""
        proc = self._procs.pop(session_id, None)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self._config.stop_grace + 10)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        self._displays.pop(session_id, None)
        shutil.rmtree(self._run_dir / session_id, ignore_errors=True)
