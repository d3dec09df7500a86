"""The local spawner with the real session agent (running a light application, not GIMP)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from dataclasses import replace

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.spawners.local as local
from gateway.spawners import sandbox
from gateway.config import Config
from gateway.http import REGISTRY
from tests.gateway.conftest import (LIGHT_APP, REAL_AGENT, alive, bearer, descendants, eventually,
                                   make_config)
from tests.xserver import start_xvfb

APPS = {"gimp": LIGHT_APP, "inkscape": "false", "blender": LIGHT_APP}


async def start(client, application="gimp", **body):
    r = await client.post("/api/sessions", json={"application": application, **body}, headers=bearer())
    assert r.status == 201
    return (await r.json())["id"]


async def phase(client, sid):
    r = await client.get(f"/api/sessions/{sid}", headers=bearer())
    return (await r.json())["phase"] if r.status == 200 else None


async def until_phase(client, sid, wanted):
    async def check():
        return await phase(client, sid) == wanted
    await eventually(check)
    return (await (await client.get(f"/api/sessions/{sid}", headers=bearer())).json())


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def namespace(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def argument(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


async def test_a_session_runs_in_its_own_home_with_its_own_secret(gateway, tmp_path):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    sid = await start(client)
    body = await until_phase(client, sid, "running")
    assert body["started_at"] >= body["created_at"]
    spawner = client.app[REGISTRY].spawner
    session = spawner.get(sid)
    supervisor = int(session.worker)
    tree = descendants(supervisor)
    agent = next(p for p in tree if "session_agent" in cmdline(p))
    env = environ(agent)
    home = spawner.home_of("local")
    assert home == tmp_path / "data" / "users" / local.user_dir_name("local") / "home"
    assert env["HOME"] == str(home) and home.is_dir()
    assert env["XDG_CONFIG_HOME"] == str(home / ".config")
    assert not any(k.startswith("GATEWAY_") for k in env)
    # The token: in a 0600 file of a 0700 directory, named on the command line; in no
    # environment and no command line.
    argv = cmdline(agent)
    token_file = Path(argument(argv, "--token-file"))
    assert token_file.read_text() == session.agent_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert token_file.parent == tmp_path / "data" / "run" / sid
    for pid in [supervisor, *tree]:
        assert session.agent_token not in " ".join(cmdline(pid))
        assert session.agent_token not in "\0".join(f"{k}={v}" for k, v in environ(pid).items())
    # Every directory of the data dir is 0700; the user's directory records its owner.
    for path in ("users", "sessions", "run", f"users/{home.parent.name}", f"users/{home.parent.name}/home"):
        assert stat.S_IMODE((tmp_path / "data" / path).stat().st_mode) == 0o700, path
    assert json.loads((home.parent / "owner.json").read_text()) == {"user": "local"}
    assert stat.S_IMODE((tmp_path / "data" / "sessions" / f"{sid}.log").stat().st_mode) == 0o600
    # The application got the same HOME, in a sandbox: its own mount, PID and network
    # namespaces, the session's IPC namespace (shared with its X server, no one else's).
    app = next(p for p in tree if cmdline(p)[:2] == ["sleep", "3600"])
    assert environ(app)["HOME"] == str(home)
    assert environ(app)["XAUTHORITY"] == "/tmp/.Xauthority"
    for kind in ("mnt", "pid", "net"):
        assert namespace(app, kind) != namespace(agent, kind), kind
    assert namespace(app, "ipc") == namespace(agent, "ipc") != namespace(os.getpid(), "ipc")
    if os.geteuid() == 0:  # a root gateway runs applications as the sandbox uid, not as root
        status = Path(f"/proc/{app}/status").read_text()
        assert f"Uid:\t{Config().sandbox_uid}\t" in status
        assert home.stat().st_uid == Config().sandbox_uid
    # The agent's log is kept in the data dir.
    assert (tmp_path / "data" / "sessions" / f"{sid}.log").read_text().strip()
    # Deleting the session removes its token and cookie.
    await client.delete(f"/api/sessions/{sid}", headers=bearer())
    await eventually(lambda: gone(client, sid))
    assert not token_file.parent.exists()


async def test_ending_a_session_lets_the_sandboxed_application_exit_cleanly(gateway):
    """SIGTERM reaches the application itself, not only bubblewrap (which forwards nothing and
    would SIGKILL it on its way out): what it writes on the way out is in its home."""
    app = "sh -c 'trap \"echo saved > $HOME/on-exit; exit 0\" TERM; while :; do sleep 0.1; done'"
    client = await gateway(agent_command=REAL_AGENT, app_commands={**APPS, "gimp": app})
    sid = await start(client)
    await until_phase(client, sid, "running")
    home = client.app[REGISTRY].spawner.home_of("local")
    await client.delete(f"/api/sessions/{sid}", headers=bearer())
    await eventually(lambda: gone(client, sid))
    assert (home / "on-exit").read_text() == "saved\n"


async def test_an_application_that_dies_at_start_fails_the_session_with_its_reason(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    sid = await start(client, "inkscape")
    body = await until_phase(client, sid, "failed")
    assert body["message"] == "inkscape could not start: the application exited with code 1"
    assert client.app[REGISTRY].spawner.get(sid).endpoint is None


async def test_an_agent_that_dies_fails_the_session_and_leaves_nothing(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    sid = await start(client)
    await until_phase(client, sid, "running")
    supervisor = int(client.app[REGISTRY].spawner.get(sid).worker)
    tree = descendants(supervisor)
    agent = next(p for p in tree if "session_agent" in cmdline(p))
    os.kill(agent, signal.SIGKILL)
    body = await until_phase(client, sid, "failed")
    assert body["message"].startswith("the session ended unexpectedly (exit code 137)")
    await eventually(lambda: none_alive([supervisor, *tree]))


async def test_no_viewer_for_the_timeout_ends_the_session(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS, idle_check_interval=0.3)
    sid = await start(client, timeout=1)
    await until_phase(client, sid, "running")
    supervisor = int(client.app[REGISTRY].spawner.get(sid).worker)
    tree = [supervisor, *descendants(supervisor)]
    await eventually(lambda: gone(client, sid))
    await eventually(lambda: none_alive(tree))


async def gone(client, sid):
    return await phase(client, sid) is None


async def none_alive(pids):
    return not any(alive(p) for p in pids)


async def test_a_lost_race_for_a_display_is_retried_on_another(gateway, monkeypatch, caplog):
    busy = start_xvfb()
    try:
        n = int(busy.display[1:])
        free = next(d for d in range(n + 1, n + 200) if not local._display_taken(d))
        # Pretend the busy display looked free when it was picked (another program took it
        # in between), and make it the first pick.
        monkeypatch.setattr(local, "DISPLAYS", (n, free))
        monkeypatch.setattr(local, "_display_taken", lambda d: False)
        monkeypatch.setattr(local.random, "randrange", lambda k: 0)
        client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
        sid = await start(client)
        await until_phase(client, sid, "running")
        retries = [r for r in caplog.records if getattr(r, "fields", {}).get("action") == "session_start_retry"]
        assert len(retries) == 1 and f":{n} is already in use" in retries[0].fields["reason"]
    finally:
        busy.stop()


def test_display_numbers_skip_sockets_and_locks(tmp_path, monkeypatch):
    spawner = local.LocalSpawner(make_config(tmp_path))
    taken = {500, 501}
    monkeypatch.setattr(local, "DISPLAYS", range(500, 503))
    monkeypatch.setattr(local, "_display_taken", lambda d: d in taken)
    assert spawner._reserve_display("a") == 502
    with pytest.raises(RuntimeError, match="no free X display"):
        spawner._reserve_display("b")


# Any string a JWT `sub` or a proxy header can carry, lone surrogates included.
USER_IDS = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)


def safe_name(name: str) -> bool:
    return (re.fullmatch(r"[a-z0-9_-]{1,40}-[0-9a-f]{32}", name) is not None
            and not name.startswith(("-", "_")) and len(name.encode()) < 100)


def test_user_directories_cannot_collide_or_escape():
    ids = ("alice", "Alice", "../etc", "..", ".", "a/b", "a_b", "a b", "A", "x" * 300, "", "\ud800",
           "alice-2bd806c97f0e00af1a1fc3328fa763a9")  # the last: alice's name, as an id
    names = [local.user_dir_name(u) for u in ids]
    assert len(set(names)) == len(ids)
    assert all(safe_name(n) for n in names), names
    # Plain names get the hash too: an older version's users/alice/ is nobody's now.
    assert local.user_dir_name("alice") == "alice-" + hashlib.sha256(b"alice").hexdigest()[:32]


@settings(max_examples=300, deadline=None)
@given(st.lists(USER_IDS, min_size=2, max_size=20, unique=True))
def test_no_two_user_ids_share_a_directory(ids):
    names = [local.user_dir_name(u) for u in ids]
    assert len(set(names)) == len(ids)
    assert all(safe_name(n) for n in names)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(USER_IDS, USER_IDS)
def test_a_user_directory_is_used_only_by_the_id_it_records(tmp_path_factory, first, second):
    users = tmp_path_factory.mktemp("users")
    home = local.user_home(users, first)
    assert home == users / local.user_dir_name(first) / "home" and home.is_dir()
    assert json.loads((home.parent / "owner.json").read_text(encoding="utf-8")) == {"user": first}
    assert local.user_home(users, first) == home  # the same id again: the same home
    if second != first:
        assert local.user_home(users, second) != home
    # Another id recorded in first's directory (as a collision would): refused, untouched.
    (home.parent / "owner.json").write_text(json.dumps({"user": first + "x"}))
    with pytest.raises(local.UserDirError, match="belongs to another user id"):
        local.user_home(users, first)


def test_a_directory_without_an_owner_record_is_never_taken_over(tmp_path):
    users = tmp_path / "users"
    users.mkdir()
    # What an older version left: users/<plain-name>/home, and one under a new-style name
    # that nobody recorded (made by hand, or by a version that crashed before writing it).
    (users / "alice" / "home").mkdir(parents=True)
    (users / "alice" / "home" / "old.xcf").write_text("before")
    squatted = users / local.user_dir_name("bob")
    (squatted / "home").mkdir(parents=True)
    with pytest.raises(local.UserDirError, match="has no owner.json"):
        local.user_home(users, "bob")
    assert not (squatted / "owner.json").exists()
    home = local.user_home(users, "alice")
    assert home != users / "alice" / "home" and not (home / "old.xcf").exists()
    assert (users / "alice" / "home" / "old.xcf").read_text() == "before"
    assert local.unclaimed_user_dirs(users) == sorted(["alice", squatted.name])


async def test_the_gateway_names_unclaimed_user_directories_at_start(gateway, tmp_path, caplog):
    (tmp_path / "data" / "users" / "alice" / "home").mkdir(parents=True)
    await gateway()
    warned = [r for r in caplog.records if getattr(r, "fields", {}).get("action") == "user_dirs_unclaimed"]
    assert len(warned) == 1 and warned[0].fields["directories"] == ["alice"]


def sandbox_of(**changes) -> sandbox.Sandbox:
    base = sandbox.Sandbox(home=Path("/srv/gw/data/users/alice-00/home"), display=123,
                           xauthority=Path("/srv/gw/data/run/s1/Xauthority"),
                           layout={"bin": "usr/bin", "lib": "usr/lib", "sbin": None},
                           env={"LANG": "C.UTF-8", "GATEWAY_TOKEN": "x", "AGENT_TOKEN": "y", "PATH": "/opt"})
    return replace(base, **changes)


def pairs(argv: list[str], flag: str) -> list[tuple[str, ...]]:
    """The arguments of every `flag` before the command (`--setenv` takes two, `--dir` one, ...)."""
    width = {"--setenv": 2, "--ro-bind": 2, "--bind": 2, "--symlink": 2, "--ro-bind-try": 2,
             "--dir": 1, "--tmpfs": 1, "--perms": 1, "--chdir": 1}[flag]
    options = argv[:argv.index("--")]
    return [tuple(options[i + 1:i + 1 + width]) for i, a in enumerate(options) if a == flag]


@pytest.mark.parametrize("privileged", [False, True])
def test_the_sandbox_command_line(privileged):
    box = sandbox_of(privileged=privileged, uid=4242, gid=4343)
    argv = sandbox.bwrap_argv(box, ["gimp", "--no-splash"], bwrap="/usr/bin/bwrap")
    assert argv[0] == "/usr/bin/bwrap"
    options = argv[:argv.index("--")]
    # Every namespace but IPC (the session's, shared with its X server); never the host's net.
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-uts", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in options
    assert not {"--share-net", "--unshare-ipc", "--unshare-all", "--dev-bind", "--bind-try"} & set(options)
    # The environment is built from nothing: the locale passes, secrets and PATH do not.
    env = dict(pairs(argv, "--setenv"))
    assert env == {"LANG": "C.UTF-8", "HOME": str(box.home), "PATH": sandbox.PATH, "DISPLAY": ":123",
                   "XAUTHORITY": "/tmp/.Xauthority", "XDG_CONFIG_HOME": f"{box.home}/.config",
                   "XDG_DATA_HOME": f"{box.home}/.local/share", "XDG_CACHE_HOME": f"{box.home}/.cache"}
    # Read-write: the home only. Read-only: the system, this display's socket and cookie.
    assert pairs(argv, "--bind") == [(str(box.home), str(box.home))]
    assert pairs(argv, "--ro-bind") == [("/usr", "/usr"), ("/etc", "/etc"), ("/sbin", "/sbin"),
                                        ("/tmp/.X11-unix/X123", "/tmp/.X11-unix/X123"),
                                        (str(box.xauthority), "/tmp/.Xauthority")]
    assert pairs(argv, "--symlink") == [("usr/bin", "/bin"), ("usr/lib", "/lib")]
    assert pairs(argv, "--tmpfs") == [("/dev/shm",), ("/tmp",)]
    assert pairs(argv, "--dir") == [("/tmp/.X11-unix",), ("/srv",), ("/srv/gw",), ("/srv/gw/data",),
                                    ("/srv/gw/data/users",), ("/srv/gw/data/users/alice-00",)]
    assert ("--proc", "/proc") == tuple(options[options.index("--proc"):][:2])
    command = argv[argv.index("--") + 1:]
    if privileged:
        # Root keeps only what setpriv needs to become uid 4242 with nothing left.
        assert options[1:7] == ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        assert "--unshare-user" not in options
        assert command == ["setpriv", "--reuid=4242", "--regid=4343", "--clear-groups", "--inh-caps=-all",
                           "--bounding-set=-all", "--", "env", "-C", str(box.home), "--", "gimp", "--no-splash"]
    else:
        assert "--cap-add" not in options and {"--unshare-user", "--disable-userns"} <= set(options)
        assert pairs(argv, "--chdir") == [(str(box.home),)]
        assert command == ["gimp", "--no-splash"]


async def test_an_application_the_sandbox_cannot_show_fails_with_the_reason(gateway, tmp_path):
    app = tmp_path / "opt" / "myapp"
    app.parent.mkdir()
    app.write_text("#!/bin/sh\nexec sleep 3600\n")
    app.chmod(0o755)
    client = await gateway(agent_command=REAL_AGENT, app_commands={**APPS, "gimp": str(app)})
    sid = await start(client)
    body = await until_phase(client, sid, "failed")
    assert body["message"] == (f"gimp cannot run in the sandbox: {app} is outside what the sandbox "
                               "shows (/usr, /etc)")


def test_a_non_root_gateways_sandbox_runs_as_its_uid_with_nothing_more():
    """The sandbox a gateway that is not root builds (a user namespace), run as uid 65534."""
    assert os.geteuid() == 0 and shutil.which("setpriv"), "needs root (as CI) to drop to uid 65534"
    base = Path(tempfile.mkdtemp(prefix="sandbox-test-"))  # not under pytest's 0700 root dirs
    try:
        home, x_socket, xauthority = base / "home", base / "X0", base / "Xauthority"
        home.mkdir()
        x_socket.touch()
        xauthority.write_text("cookie")
        for path in (base, home, x_socket, xauthority):
            os.chown(path, 65534, 65534)
        box = sandbox.Sandbox(home=home, display=7, xauthority=xauthority, layout=sandbox.host_layout(),
                              x_socket=x_socket)
        probe = ("id -u; grep CapEff /proc/self/status; ls -A /tmp /tmp/.X11-unix; cat $XAUTHORITY; echo;"
                 " touch $HOME/made && echo home-writable; unshare -U true 2>/dev/null || echo no-userns;"
                 " ls /proc | grep -c '^[0-9]'")
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 *sandbox.bwrap_argv(box, ["sh", "-c", probe])],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.split("\n")
        assert lines[:2] == ["65534", "CapEff:\t0000000000000000"]
        # /tmp: its socket, its cookie, and the way to its home (which lies under /tmp here)
        assert lines[2:8] == ["/tmp:", ".X11-unix", ".Xauthority", base.name, "", "/tmp/.X11-unix:"]
        assert lines[8:12] == ["X7", "cookie", "home-writable", "no-userns"]
        assert int(lines[12]) <= 4  # bwrap's init, sh, ls, grep: nothing outside the sandbox
        assert (home / "made").stat().st_uid == 65534
    finally:
        shutil.rmtree(base)


def test_what_the_sandbox_shows_of_the_system():
    assert sandbox.visible("/usr/bin/gimp") and sandbox.visible("/bin/sh")
    assert not sandbox.visible("/opt/app/bin/app") and not sandbox.visible("/root/.local/bin/x")
    layout = sandbox.host_layout()
    assert set(layout) <= set(sandbox.TOP_LEVEL) and "bin" in layout


def _gateway_cli(tmp_path: Path, path: str, *extra: str, wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}, "PATH": path,
           "GATEWAY_JWT_SECRET": "s" * 32, "GATEWAY_DATA_DIR": str(tmp_path / "data"),
           "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": "0", "GATEWAY_APP_GIMP": LIGHT_APP}
    return subprocess.run([*wrap, sys.executable, "-m", "gateway", *extra], env=env, capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parents[2], stdin=subprocess.DEVNULL)


def _path_without_bwrap(tmp_path: Path) -> str:
    """A PATH with everything but bwrap: the rest of the session's programs stay findable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for name in (os.listdir(directory) if os.path.isdir(directory) else ()):
            if name != "bwrap" and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(Path(directory) / name)
    return str(bin_dir)


@pytest.mark.parametrize("auth", ["jwt", "header"])
def test_several_users_without_bwrap_refuse_to_start_with_one_line(tmp_path, auth):
    extra = ["--trusted-proxies", "127.0.0.1"] if auth == "header" else []
    result = _gateway_cli(tmp_path, _path_without_bwrap(tmp_path), "--auth", auth, *extra)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"gateway: the local spawner cannot start: --auth {auth} needs each application sandboxed "
        "with bubblewrap, but bwrap not found on PATH (Debian package bubblewrap)"]


def test_sandbox_on_without_bwrap_refuses_to_start_and_off_is_for_one_user_only(tmp_path):
    result = _gateway_cli(tmp_path, _path_without_bwrap(tmp_path), "--sandbox", "on")
    assert result.returncode == 1 and "--sandbox on needs each application sandboxed" in result.stderr
    result = _gateway_cli(tmp_path, os.environ["PATH"], "--auth", "jwt", "--sandbox", "off")
    assert result.returncode == 2  # argparse's usage, then the error line
    assert result.stderr.strip().splitlines()[-1].startswith(
        "python -m gateway: error: --sandbox off is only allowed with --auth token")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make the user namespace")
def test_several_users_where_the_sandbox_cannot_be_made_refuse_to_start(tmp_path):
    """A real refusal: in a user namespace that maps only root, the sandbox's uid does not
    exist, so nothing can be given to it and bwrap could not switch to it."""
    result = _gateway_cli(tmp_path, os.environ["PATH"], "--auth", "jwt",
                          wrap=("unshare", "--user", "--map-root-user", "--"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gateway: the local spawner cannot start: --auth jwt needs each application sandboxed with "
        "bubblewrap, but files cannot be given to uid 65534: Invalid argument"]


async def test_token_mode_without_bwrap_runs_sessions_unsandboxed(gateway, monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)  # as on a machine without bubblewrap
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    warned = [r for r in caplog.records if getattr(r, "fields", {}).get("action") == "sandbox_unavailable"]
    assert len(warned) == 1
    sid = await start(client)
    await until_phase(client, sid, "running")
    tree = descendants(int(client.app[REGISTRY].spawner.get(sid).worker))
    app = next(p for p in tree if cmdline(p)[:2] == ["sleep", "3600"])
    agent = next(p for p in tree if "session_agent" in cmdline(p))
    assert namespace(app, "mnt") == namespace(agent, "mnt") == namespace(os.getpid(), "mnt")
    assert not any("bwrap" in cmdline(p)[0] for p in tree)


def test_last_log_reason_prefers_errors_and_plain_fatal_lines(tmp_path):
    log = tmp_path / "a.log"
    log.write_text('{"level": "info", "message": "listening"}\n'
                   '{"level": "error", "message": "the application exited with code 1"}\n'
                   '{"level": "info", "message": "stopping"}\n')
    assert local.last_log_reason(log) == "the application exited with code 1"
    log.write_text(log.read_text() + "(gimp:42): Gtk-WARNING **: Unable to locate theme engine\n")
    assert local.last_log_reason(log) == "the application exited with code 1"
    log.write_text(log.read_text() + "session_agent: error: display :5 is already in use\n")
    assert local.last_log_reason(log) == "session_agent: error: display :5 is already in use"
    log.write_text('{"level": "error", "message": "display lost", "reason": "capture failed"}\n')
    assert local.last_log_reason(log) == "display lost: capture failed"
    log.write_text("just a line\n")
    assert local.last_log_reason(log) == "just a line"
    assert local.last_log_reason(tmp_path / "missing.log") == ""


def _gateway_process(tmp_path: Path, port_file: Path) -> subprocess.Popen:
    env = {**os.environ, "GATEWAY_TOKEN": "tok", "GATEWAY_APP_GIMP": LIGHT_APP,
           "GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": "0"}
    return subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=subprocess.PIPE,
                            stderr=port_file.open("wb"), text=True, cwd=Path(__file__).parents[2])


async def test_a_killed_gateway_leaves_no_process_and_a_new_one_starts_clean(tmp_path):
    gw = _gateway_process(tmp_path, tmp_path / "gw1.log")
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, gw.stdout.readline)
        assert line.startswith("Gateway ready: open http://127.0.0.1:") and line.rstrip().endswith("/?token=tok")
        base = line.split("open ", 1)[1].split("?")[0]
        async with aiohttp.ClientSession(base, headers=bearer("tok")) as http:
            async with http.post("/api/sessions", json={"application": "gimp"}) as r:
                sid = (await r.json())["id"]

            async def running():
                async with http.get(f"/api/sessions/{sid}") as r:
                    return (await r.json())["phase"] == "running"
            await eventually(running)
        tree = descendants(gw.pid)
        assert any("session_agent" in " ".join(cmdline(p)) for p in tree)
        home = tmp_path / "data" / "users" / local.user_dir_name("local") / "home"
        (home / "drawing.xcf").write_text("kept")
        gw.kill()
        gw.wait()
        await eventually(lambda: none_alive(tree))
    finally:
        if gw.poll() is None:
            gw.kill()
            gw.wait()
    gw2 = _gateway_process(tmp_path, tmp_path / "gw2.log")
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, gw2.stdout.readline)
        base = line.split("open ", 1)[1].split("?")[0]
        async with aiohttp.ClientSession(base, headers=bearer("tok")) as http:
            async with http.get("/api/sessions") as r:
                assert (await r.json()) == {"sessions": []}
        assert (home / "drawing.xcf").read_text() == "kept"
    finally:
        gw2.send_signal(signal.SIGTERM)
        assert gw2.wait(30) == 0


async def test_a_user_directory_that_cannot_be_used_fails_the_session_with_a_reason(gateway, tmp_path):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    # A file is in the way of the user's folder.
    name = local.user_dir_name("local")
    (tmp_path / "data" / "users" / name).write_text("not a directory")
    sid = await start(client)
    body = await until_phase(client, sid, "failed")
    assert body["message"] == f"cannot use the user's directory: users/{name} is not a directory"


async def test_an_unexpected_error_fails_the_session_with_a_reason(gateway, tmp_path):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    # The folder of all users cannot be written to: a file is in its way.
    users = tmp_path / "data" / "users"
    users.rmdir()
    users.write_text("not a directory")
    sid = await start(client)
    body = await until_phase(client, sid, "failed")
    assert body["message"] == "internal error: NotADirectoryError(20, 'Not a directory')"


async def test_the_framebuffer_is_the_session_size_unless_configured_and_glx_is_blenders(gateway):
    """Each session's Xvfb holds --session-max-size (default: the session size) in memory, and
    GLX (Mesa in the X server) only for Blender, which draws with OpenGL."""
    def xvfb_args(sid: str) -> list[str]:
        tree = descendants(int(client.app[REGISTRY].spawner.get(sid).worker))
        return next(cmdline(p) for p in tree if cmdline(p)[0] == "Xvfb")

    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS, session_size="640x360")
    sid = await start(client)
    await until_phase(client, sid, "running")
    args = xvfb_args(sid)
    assert "640x360x24" in args and args[args.index("GLX") - 1] == "-extension"
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS, session_size="640x360",
                           session_max_size="1280x720")
    sid = await start(client, "blender")
    await until_phase(client, sid, "running")
    args = xvfb_args(sid)
    assert "1280x720x24" in args and args[args.index("GLX") - 1] == "+extension"
