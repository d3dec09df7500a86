"""The local spawner with the real session agent (running a light application, not GIMP)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

import gateway.spawners.local as local
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


async def test_a_session_runs_in_its_own_home_with_its_own_secret(gateway, tmp_path):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    sid = await start(client)
    body = await until_phase(client, sid, "running")
    assert body["started_at"] >= body["created_at"]
    session = client.app[REGISTRY].spawner.get(sid)
    tree = descendants(int(session.worker))
    agent = next(p for p in tree if "session_agent" in cmdline(p))
    env = environ(agent)
    home = tmp_path / "data" / "users" / "local" / "home"
    assert env["HOME"] == str(home) and home.is_dir()
    assert env["XDG_CONFIG_HOME"] == str(home / ".config")
    assert env["AGENT_TOKEN"] == session.agent_token
    assert not any(k.startswith("GATEWAY_") for k in env)
    assert session.agent_token not in " ".join(cmdline(agent))
    # The application got the same HOME.
    app = next(p for p in tree if cmdline(p)[:2] == ["sleep", "3600"])
    assert environ(app)["HOME"] == str(home)
    # The agent's log is kept in the data dir.
    assert (tmp_path / "data" / "sessions" / f"{sid}.log").read_text().strip()


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


def test_user_directories_cannot_collide_or_escape():
    assert local.user_dir_name("alice") == "alice"
    names = {local.user_dir_name(u) for u in ("../etc", "..", "a/b", "a_b", "A", "a b", "x" * 300)}
    assert len(names) == 7
    assert all("/" not in n and n not in (".", "..") and not n.startswith(".") for n in names)


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
        home = tmp_path / "data" / "users" / "local" / "home"
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


async def test_an_unexpected_error_fails_the_session_with_a_reason(gateway, tmp_path):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    # The user's folder cannot be made: a file is in its way.
    (tmp_path / "data" / "users" / "local").write_text("not a directory")
    sid = await start(client)
    body = await until_phase(client, sid, "failed")
    assert body["message"] == "internal error: NotADirectoryError(20, 'Not a directory')"
