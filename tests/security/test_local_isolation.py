"""Several users on one machine (local spawner, --auth jwt): what one session's application can
reach of another session (SECURITY.md §10).

The attacker is Alice's application, and it is arbitrary code, as a GIMP plug-in is: the real
`python -m gateway` starts `tests/security/local_plugin.py` as the application of every
session, through exactly the path GIMP takes (the agent, its sandbox). Bob's session runs the
same program, which keeps secrets the way an application does: a file in its home, a SysV shared
memory segment; Bob's screen is painted a colour of its own and a viewer watches it, so the
agent's capture memory holds it. The test then tells Alice's plug-in everything about Bob's
session (paths, pids, display, ports, segment ids) and the needles that prove a read got there;
the plug-in tries every attack and reports. Each attack must fail, and the plug-in's controls
(its own home, display, segment) must work, so that a failure is the sandbox and not a broken
plug-in.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import JWT_SECRET, descendants, make_jwt
from tests.security.test_agent import listening_addresses
from tests.whep_client import Viewer
from tests.xserver import fill_root

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = (Path(__file__).with_name("local_plugin.py")).read_text()
BOB_COLOUR = (0x12, 0x9A, 0x56)  # Bob's screen: the needle for his captured frames


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def fork_servers(gateway_pid: int) -> list[int]:
    """The local spawner's fork server (gateway/spawners/forkserver.py), whose forks the agents are."""
    return [p for p in descendants(gateway_pid) if "gateway.spawners.forkserver" in cmdline(p)[:3]]


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def sysv_segments(pid: int) -> set[int]:
    """SysV segments a process has attached: /SYSV<key> mappings, whose inode is the shmid."""
    ids = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith("/SYSV"):
            ids.add(int(fields[4]))
    return ids


class Session:
    """One running session's processes and files, found from the outside (as root)."""

    def __init__(self, gateway_pid: int, session_id: str) -> None:
        # The topmost process of the session (its supervisor: the gateway's child, or the fork
        # server's).
        supervisor = next(p for p in descendants(gateway_pid) if environ(p).get("SESSION_ID") == session_id
                          and environ(ppid(p)).get("SESSION_ID") != session_id)
        self.id = session_id
        deadline = time.monotonic() + 30
        while True:  # the application may still be on its way (a python3 wrapper script)
            self.pids = [supervisor, *descendants(supervisor)]
            apps = [p for p in self.pids if cmdline(p)[1:3] == ["-c", PLUGIN]]
            if apps or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.app = apps[0]
        self.agent = next(p for p in self.pids if cmdline(p)[1:3] == ["-m", "session_agent"])
        self.xvfb = next(p for p in self.pids if cmdline(p)[:1] == ["Xvfb"])
        argv = cmdline(self.agent)
        self.display = int(flag(argv, "--display").lstrip(":"))
        self.port = int(flag(argv, "--port"))
        self.xauthority = flag(argv, "--xauthority")
        self.token_file = flag(argv, "--token-file")
        self.token = (Path(self.token_file).read_text() if self.token_file
                      else environ(self.agent)["AGENT_TOKEN"])
        self.home = Path(environ(self.app)["HOME"])


def x_env(session: Session) -> dict[str, str]:
    return {"XAUTHORITY": session.xauthority} if session.xauthority else {}


def wait_for_file(path: Path, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)
    return json.loads(path.read_text())


class Gateway:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(GATEWAY_AUTH="jwt", GATEWAY_JWT_SECRET=JWT_SECRET, GATEWAY_HOST="127.0.0.1",
                   GATEWAY_PORT="0", GATEWAY_DATA_DIR=str(data_dir), GATEWAY_SESSION_SIZE="640x480",
                   GATEWAY_APP_GIMP=shlex.join(["python3", "-c", PLUGIN]), GATEWAY_START_TIMEOUT="90")
        self.log = (data_dir.parent / "gateway.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        assert line.startswith("Gateway ready: open "), line
        self.base = line.split("open ", 1)[1].strip().rstrip("/")
        self.port = int(self.base.rsplit(":", 1)[1])

    def start_session(self, user: str) -> str:
        import urllib.request
        token = make_jwt(user, ttl=3600)

        def call(method: str, path: str, body: dict | None = None) -> dict:
            request = urllib.request.Request(
                self.base + path, method=method, data=json.dumps(body).encode() if body else None,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as r:
                return json.loads(r.read())
        session = call("POST", "/api/sessions", {"application": "gimp"})
        deadline = time.monotonic() + 120
        while session["phase"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            session = call("GET", f"/api/sessions/{session['id']}")
        assert session["phase"] == "running", session
        return session["id"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def watch_then(gateway: Gateway, bob: Session, attack: Any) -> Any:
    """A viewer on Bob's session while `attack` runs: the agent's capture memory holds his screen."""
    viewer = Viewer(gateway.base, token=make_jwt("bob"))
    try:
        await viewer.connect(f"/streaming/{bob.id}/whep")
        await viewer.wait_for_colour(BOB_COLOUR, timeout=60)
        return await asyncio.to_thread(attack)
    finally:
        await viewer.close()


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Alice's plug-in's report on Bob's session, and both sessions as seen from outside."""
    base = tmp_path_factory.mktemp("isolation")
    gateway = Gateway(base / "data")
    try:
        bob = Session(gateway.proc.pid, gateway.start_session("bob"))
        alice = Session(gateway.proc.pid, gateway.start_session("alice"))
        bob_secret, alice_secret = f"bob-{secrets.token_hex(8)}", f"alice-{secrets.token_hex(8)}"
        for session, secret in ((bob, bob_secret), (alice, alice_secret)):
            (session.home / "secret.txt").write_text(secret)
            os.chmod(session.home / "secret.txt", 0o644)
        bob_shm = wait_for_file(bob.home / "shm.json")["id"]
        wait_for_file(alice.home / "shm.json")
        saved = dict(os.environ)
        os.environ.update(x_env(bob))
        try:
            fill_root(f":{bob.display}", BOB_COLOUR)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        data = gateway.data_dir
        targets = {
            "home": str(bob.home), "data_dir": str(data),
            "data_files": [str(p) for p in (data / "sessions" / f"{bob.id}.log", data / "users",
                                            data / "sessions", data / "run", bob.home.parent)]
                          + ([bob.token_file] if bob.token_file else []),
            "pids": [bob.agent, bob.app, bob.xvfb, bob.pids[0], gateway.proc.pid,
                     *fork_servers(gateway.proc.pid)],
            "display": bob.display, "ports": [bob.port, gateway.port],
            "needles": {"bob_home_secret": bob_secret, "bob_shm_secret": f"SHM:{bob_secret}",
                        "bob_agent_token": bob.token, "gateway_jwt_secret": JWT_SECRET,
                        # BGRX, as the capture holds pixels
                        "colour:bob_screen": bytes(reversed(BOB_COLOUR)).hex()},
        }

        def run_attack() -> dict[str, Any]:
            targets["shm_ids"] = sorted({bob_shm} | sysv_segments(bob.app) | sysv_segments(bob.xvfb)
                                        | sysv_segments(bob.agent))
            (alice.home / "targets.json").write_text(json.dumps(targets))
            return wait_for_file(alice.home / "results.json")

        results = asyncio.run(watch_then(gateway, bob, run_attack))
        assert "error" not in results, results
        yield {"results": results, "alice": alice, "bob": bob, "targets": targets}
    finally:
        gateway.stop()


def failed(results: dict[str, Any], name: str) -> None:
    outcome = results[name]
    assert not outcome["reached"] and not outcome["found"], f"{name}: {outcome}"


def worked(results: dict[str, Any], name: str) -> None:
    outcome = results[name]
    assert outcome["reached"], f"control {name}: {outcome}"


def test_another_users_home_is_out_of_reach(attack):
    failed(attack["results"], "home")
    assert attack["results"]["own_home"]["found"] == ["own"], attack["results"]["own_home"]


def test_the_gateways_data_is_out_of_reach(attack):
    """Other homes, session logs, tokens: the gateway's data directory is not there at all."""
    failed(attack["results"], "data_dir")


def test_another_sessions_agent_token_is_out_of_reach(attack):
    """Not in any environment or command line the application can see (nor the gateway's
    secret), not in /proc of the other session, not in a file it can open."""
    results = attack["results"]
    failed(results, "proc")
    failed(results, "proc_of_target")
    failed(results, "data_dir")
    bob: Session = attack["bob"]
    assert bob.token_file, "the agent got its token in its environment"
    for pid in bob.pids:  # from outside too: no environment, no command line holds it
        assert bob.token not in " ".join(cmdline(pid))
        assert bob.token not in json.dumps(environ(pid))


def test_another_sessions_processes_cannot_be_signalled_or_traced(attack):
    failed(attack["results"], "signals")
    failed(attack["results"], "open_files")  # nor their open files: the agent's capture memfd


def test_another_sessions_display_is_out_of_reach(attack):
    """Not through its socket file, its abstract socket or TCP; the application's own display
    needs its cookie."""
    results = attack["results"]
    failed(results, "display")
    worked(results, "own_display")
    assert results["own_display"]["detail"] == "without the cookie: refused", results["own_display"]


def test_another_sessions_shared_memory_is_out_of_reach(attack):
    """Bob's SysV segment (readable by anyone, 0666) and every segment id Bob's processes hold
    are not Bob's from Alice's IPC namespace; her own segment is there."""
    results = attack["results"]
    failed(results, "shm")
    worked(results, "own_shm")
    assert results["own_shm"]["found"] == ["own"]


def test_the_network_is_out_of_reach(attack):
    """No network at all: not the other agent's port, not the gateway."""
    failed(attack["results"], "network")


def _x_setup(path: str, cookie: bytes = b"") -> bool:
    """From the host: connect to an X socket and say whether the server accepts us."""
    import socket
    import struct
    name = b"MIT-MAGIC-COOKIE-1" if cookie else b""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(struct.pack("<BxHHHHxx", ord("l"), 11, 0, len(name), len(cookie))
                     + name + b"\0" * (-len(name) % 4) + cookie + b"\0" * (-len(cookie) % 4))
        return sock.recv(1) == b"\x01"


def test_every_display_needs_its_own_cookie_and_has_no_other_door(attack):
    """Outside any sandbox too: no cookie, or another session's cookie, is refused; no TCP
    listener and no abstract socket exist for the session's display."""
    from session_agent.display.xauth import parse
    bob, alice = attack["bob"], attack["alice"]
    cookie = {s: parse(Path(s.xauthority).read_bytes())[0][4] for s in (bob, alice)}
    socket_file = f"/tmp/.X11-unix/X{bob.display}"
    assert not _x_setup(socket_file)
    assert not _x_setup(socket_file, cookie[alice])
    assert _x_setup(socket_file, cookie[bob])
    unix = Path("/proc/net/unix").read_text()
    assert re.search(rf"@/tmp/\.X11-unix/X{bob.display}$", unix, re.M) is None
    assert re.search(rf" /tmp/\.X11-unix/X{bob.display}$", unix, re.M)
    assert listening_addresses(6000 + bob.display) == set()
    assert oct(Path(bob.xauthority).stat().st_mode & 0o777) == "0o600"


# -- the agent's side: its token from a file, its display behind a cookie -----------------------

def _free_display() -> str:
    from tests.security.test_agent import free_display
    return free_display()


def _run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "session_agent", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_the_agent_reads_its_token_from_a_file(tmp_path):
    from tests.agent_process import start_agent
    from tests.security.test_agent import status
    token_file = tmp_path / "token"
    token_file.write_text("file-token-7c1e\n")
    display = _free_display()
    agent = start_agent(display, "--xvfb", "--size", "320x240", "--max-size", "320x240",
                        "--token-file", str(token_file), token=None)
    try:
        assert status(agent.url + "/metrics") == 401
        assert status(agent.url + "/metrics", token="file-token-7c1e") == 200
        assert b"file-token-7c1e" not in Path(f"/proc/{agent.proc.pid}/environ").read_bytes()
    finally:
        agent.stop()


@pytest.mark.parametrize("content, error", [
    (None, "cannot read --token-file {path}: No such file or directory"),
    ("\n", "--token-file {path} is empty"),
])
def test_a_token_file_that_cannot_be_used_is_one_line_exit_2(tmp_path, content, error):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = _run_agent("--token-file", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"session_agent: error: {error.format(path=path)}"]


def test_token_wins_over_token_file_as_in_the_pod():
    """The pod's entrypoint exports AGENT_TOKEN and leaves AGENT_TOKEN_FILE set: both agree."""
    from session_agent.config import parse_args
    env = {**os.environ, "AGENT_TOKEN": "from-env", "AGENT_TOKEN_FILE": "/nonexistent/token"}
    script = "from session_agent.config import parse_args; print(parse_args([]).token)"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "from-env", out.stderr
    assert parse_args(["--token", "x"]).token == "x"


def test_an_owned_xvfb_admits_only_clients_with_the_cookie(tmp_path):
    from Xlib import display as xdisplay
    from Xlib.error import DisplayConnectionError
    from session_agent.display import xauth
    from tests.agent_process import start_agent
    path = tmp_path / "Xauthority"
    path.touch(mode=0o640)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)  # made by the spawner for the sandbox uid: kept
    display = _free_display()
    agent = start_agent(display, "--xvfb", "--size", "320x240", "--max-size", "320x240",
                        "--xauthority", str(path), "--launch", "sleep 600")
    try:
        assert agent.health()[0] == 200  # the agent itself (python-xlib, mss) uses the cookie
        info = path.stat()
        assert (info.st_mode & 0o777, info.st_uid) == (0o640, 65534 if os.geteuid() == 0 else os.getuid())
        [local_entry, wild_entry] = xauth.parse(path.read_bytes())
        assert local_entry[0] == xauth.FAMILY_LOCAL and wild_entry[0] == xauth.FAMILY_WILD
        assert local_entry[2] == display[1:].encode() and len(local_entry[4]) == 16
        saved = os.environ.pop("XAUTHORITY", None)
        try:
            with pytest.raises(DisplayConnectionError, match="Authorization required"):
                xdisplay.Display(display)
            os.environ["XAUTHORITY"] = str(path)
            xdisplay.Display(display).close()
        finally:
            os.environ.pop("XAUTHORITY", None)
            if saved is not None:
                os.environ["XAUTHORITY"] = saved
        # No abstract socket, no TCP: the socket file is the only door.
        unix = Path("/proc/net/unix").read_text()
        assert f"@/tmp/.X11-unix/X{display[1:]}\n" not in unix
        assert f" /tmp/.X11-unix/X{display[1:]}\n" in unix
        # The application finds the cookie too.
        app = next(p for p in descendants(agent.proc.pid) if cmdline(p)[:2] == ["sleep", "600"])
        assert environ(app)["XAUTHORITY"] == str(path)
    finally:
        agent.stop()


def test_a_cookie_is_never_written_through_a_symlink(tmp_path):
    from session_agent.display import xauth
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "Xauthority").symlink_to(target)
    with pytest.raises(OSError):
        xauth.write_cookie(str(tmp_path / "Xauthority"), ":5")
    assert target.read_text() == "keep"
    fresh = tmp_path / "fresh"
    cookie = xauth.write_cookie(str(fresh), ":5")
    assert oct(fresh.stat().st_mode & 0o777) == "0o600"
    assert {e[4] for e in xauth.parse(fresh.read_bytes())} == {cookie}
