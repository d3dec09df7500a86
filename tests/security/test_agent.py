"""The session agent: where it listens, what it refuses without its token, and what the
application it launches may see (SECURITY.md §6, §7)."""
from __future__ import annotations

import os
import random
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.http import REGISTRY
from tests.agent_process import free_port, start_agent
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, bearer, descendants
from tests.security.conftest import Gateway, running_session
from tests.xserver import Xvfb

AGENT_SECRET = "agent-secret-4f1c9d"


def status(url: str, method: str = "GET", token: str | None = None, body: bytes | None = None) -> int:
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def free_display() -> str:
    """A display number with no X server (the agent refuses one that is in use)."""
    while True:
        n = random.randrange(600, 5000)
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return f":{n}"


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    found.add(address)
    return found


def test_agent_refuses_whep_and_metrics_without_its_token(xvfb: Xvfb) -> None:
    agent = start_agent(xvfb.display, token=AGENT_SECRET)
    try:
        offer = b"v=0\r\n"
        for token in (None, "", "wrong", AGENT_SECRET + "x", AGENT_SECRET[:-1]):
            assert status(agent.url + "/whep", "POST", token, offer) == 401
            assert status(agent.url + "/whep/some-peer", "DELETE", token) == 401
            assert status(agent.url + "/whep/some-peer", "PATCH", token, offer) == 401
            assert status(agent.url + "/metrics", "GET", token) == 401
        # Basic, or the token without the scheme, is not the bearer token.
        req = urllib.request.Request(agent.url + "/metrics", headers={"Authorization": AGENT_SECRET})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=10)
        assert status(agent.url + "/metrics", "GET", AGENT_SECRET) == 200
        # /health stays open: the kubelet's probes carry no token. It says nothing secret.
        code, health = agent.health()
        assert code == 200 and AGENT_SECRET not in repr(health)
    finally:
        agent.stop()


async def test_local_spawner_binds_agents_to_loopback(gateway: Gateway) -> None:
    client = await gateway(agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP})
    session_id = await running_session(client)
    spawner = client.app[REGISTRY].spawner
    session = spawner.get(session_id)
    assert session is not None
    endpoint = urlsplit(session.endpoint)
    assert endpoint.hostname == "127.0.0.1"
    # The kernel's view, not the argv's: the only listener on that port is 127.0.0.1.
    assert listening_addresses(endpoint.port) == {"0100007F"}
    # The token reaches the agent through its environment, never its argv (world-readable).
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert session.agent_token.encode() not in cmdline
    await client.delete(f"/api/sessions/{session_id}", headers=bearer())


def test_launched_application_does_not_inherit_the_token(tmp_path: Path) -> None:
    """The agent owns Xvfb, the window manager and the application: none of them gets
    AGENT_TOKEN (or AGENT_TOKEN_FILE), which the agent itself received from its environment."""
    marker = tmp_path / "env.txt"
    port = free_port()
    display = free_display()
    env = {**os.environ, "AGENT_TOKEN": AGENT_SECRET, "AGENT_TOKEN_FILE": "/nonexistent/token"}
    launch = f"sh -c 'env > {marker}.tmp && mv {marker}.tmp {marker}; exec sleep 600'"
    proc = subprocess.Popen([*REAL_AGENT, "--xvfb", "--display", display, "--size", "320x240",
                             "--max-size", "320x240", "--host", "127.0.0.1", "--port", str(port),
                             "--launch", launch],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the agent exited"
            assert time.monotonic() < deadline, "the application did not start"
            time.sleep(0.1)
        app_env = dict(line.split("=", 1) for line in marker.read_text().splitlines() if "=" in line)
        assert "AGENT_TOKEN" not in app_env and "AGENT_TOKEN_FILE" not in app_env
        assert app_env["DISPLAY"] == display
        # Every process the agent started, read from the kernel.
        children = descendants(proc.pid)
        assert children
        for pid in children:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue  # already gone
            assert AGENT_SECRET.encode() not in environ, pid
        assert AGENT_SECRET.encode() in Path(f"/proc/{proc.pid}/environ").read_bytes()  # the check sees env
        # The application starts before the agent listens: wait for it, then it refuses.
        while True:
            try:
                if status(f"http://127.0.0.1:{port}/health") == 200:
                    break
            except OSError:  # not listening yet (URLError is an OSError)
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the agent did not serve"
            time.sleep(0.1)
        assert status(f"http://127.0.0.1:{port}/metrics", token=None) == 401
        assert status(f"http://127.0.0.1:{port}/metrics", token=AGENT_SECRET) == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_agent_default_and_pod_bind_addresses() -> None:
    """Standalone, the agent binds 0.0.0.0 (a pod's IP must be reachable); the pod relies on
    the NetworkPolicy checked in test_kubernetes.py; the local spawner overrides it (above)."""
    from session_agent.config import parse_args
    assert parse_args([]).host == "0.0.0.0"
    entrypoint = (Path(__file__).parents[2] / "deploy" / "session-entrypoint.sh").read_text()
    assert '--host "${AGENT_HOST:-0.0.0.0}"' in entrypoint
