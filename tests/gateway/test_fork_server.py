"""The local spawner's fork server (gateway/spawners/forkserver.py) with the real agent: agents
are forks that share the server's imported memory, yet look to `ps` and /proc exactly like the
commands they stand for; a fork server that dies takes its sessions with it and is replaced;
`--agent-fork-server off` runs each agent as its own command."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.http import REGISTRY
from gateway.spawners import supervisor as supervisor_module
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, bearer, descendants, eventually
from tests.gateway.test_local_spawner import cmdline, environ, none_alive, start, until_phase

APPS = {"gimp": LIGHT_APP, "inkscape": LIGHT_APP, "blender": LIGHT_APP}


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def arguments(pid: int) -> list[str]:
    """The command line's arguments, without the empty ones NUL padding makes at its end."""
    args = cmdline(pid)
    while args and not args[-1]:
        args.pop()
    return args


def rollup(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields


def servers() -> list[int]:
    return [p for p in descendants(os.getpid()) if "gateway.spawners.forkserver" in cmdline(p)[:3]]


def session_processes(client, sid: str) -> tuple[int, int]:
    supervisor = int(client.app[REGISTRY].spawner.get(sid).worker)
    agent = next(p for p in descendants(supervisor) if cmdline(p)[1:3] == ["-m", "session_agent"])
    return supervisor, agent


async def test_agents_are_forks_that_share_the_servers_memory_and_look_like_their_commands(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    sids = [await start(client), await start(client, "inkscape")]
    for sid in sids:
        await until_phase(client, sid, "running")
    [server] = servers()
    for sid in sids:
        supervisor, agent = session_processes(client, sid)
        assert parent(supervisor) == server and parent(agent) == supervisor
        # The command lines are those the spawner would have run: the supervisor's, and after
        # its "--" the agent's, which is `<python> -m session_agent …` (followed by NULs where
        # the area cannot be trimmed: without CAP_SYS_RESOURCE).
        shown = arguments(supervisor)
        assert shown[:3] == [sys.executable, "-S", supervisor_module.__file__]
        assert arguments(agent) == shown[shown.index("--") + 1:]
        assert arguments(agent)[:3] == [sys.executable, "-m", "session_agent"]
        # Its environment is the session's, in /proc too: its own HOME and SESSION_ID, none of
        # the gateway's settings, none of the server's room.
        env = environ(agent)
        assert env["SESSION_ID"] == sid
        assert env["HOME"] == str(client.app[REGISTRY].spawner.home_of("local"))
        assert not any(k.startswith(("GATEWAY_", "FORKSERVER_")) for k in env)
        # The imported modules' pages are shared with the server: the agent's share of its
        # anonymous memory is well under the memory itself.
        memory = rollup(agent)
        assert memory["Pss_Anon"] < 0.8 * memory["Anonymous"], memory
    # A session's process tree still ends with it.
    supervisor, agent = session_processes(client, sids[0])
    tree = [supervisor, *descendants(supervisor)]
    await client.delete(f"/api/sessions/{sids[0]}", headers=bearer())
    await eventually(lambda: none_alive(tree))
    assert servers() == [server]


async def test_a_fork_server_that_dies_takes_its_sessions_and_the_next_gets_a_new_one(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS)
    sid = await start(client)
    await until_phase(client, sid, "running")
    [server] = servers()
    supervisor, agent = session_processes(client, sid)
    tree = [supervisor, *descendants(supervisor)]
    os.kill(server, signal.SIGKILL)
    body = await until_phase(client, sid, "failed")
    assert body["message"].startswith("the session ended unexpectedly")
    await eventually(lambda: none_alive(tree))
    again = await start(client)
    await until_phase(client, again, "running")
    [replacement] = servers()
    assert replacement != server
    assert parent(session_processes(client, again)[0]) == replacement


async def test_off_runs_each_agent_as_its_own_command(gateway):
    client = await gateway(agent_command=REAL_AGENT, app_commands=APPS, agent_fork_server="off")
    sid = await start(client)
    await until_phase(client, sid, "running")
    supervisor, agent = session_processes(client, sid)
    assert parent(supervisor) == os.getpid() and parent(agent) == supervisor
    assert servers() == []


def test_a_wrong_setting_from_the_environment_is_a_one_line_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        load_config([], {"GATEWAY_AGENT_FORK_SERVER": "yes"})
    assert exit_.value.code == 2
    assert "invalid --agent-fork-server 'yes' (from the environment): auto or off" in capsys.readouterr().err
