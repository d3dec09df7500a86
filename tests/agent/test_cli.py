"""The agent's command line: clear one-line errors, and what happens when the display dies."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from Xlib import display as xdisplay

from session_agent.display.windows import has_window_manager
from tests.agent_process import free_port, start_agent
from tests.xserver import start_xvfb


def run_agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "session_agent", *args], capture_output=True, text=True,
                          timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("{")]


@pytest.mark.parametrize("args, fragment", [
    (["--size", "big"], "invalid size"),
    (["--port", "70000"], "invalid port"),
    (["--encoder", "h265"], "invalid choice"),
    (["--display", "nonsense"], "invalid display"),
    (["--size", "4000x4000", "--max-size", "1920x1080"], "exceeds --max-size"),
    (["--token", " "], "must not be empty"),
    (["--bogus"], "unrecognized arguments"),
])
def test_invalid_flag_is_one_line_exit_2(args, fragment):
    result = run_agent(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_display_that_cannot_be_opened():
    result = run_agent("--display", ":4999", "--port", str(free_port()), "--host", "127.0.0.1")
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert lines == ["session_agent: error: cannot open display :4999"]


def test_port_in_use(xvfb):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_agent("--display", xvfb.display, "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"session_agent: error: cannot listen on 127.0.0.1:{port}")


def test_owned_xvfb_on_a_display_in_use_is_refused(xvfb):
    result = run_agent("--xvfb", "--display", xvfb.display, "--host", "127.0.0.1", "--port", str(free_port()))
    assert result.returncode == 1
    assert error_lines(result.stderr) == [f"session_agent: error: display {xvfb.display} is already in use"]


def test_when_xvfb_dies_health_says_why_then_the_agent_exits():
    x = start_xvfb()
    agent = start_agent(x.display)
    try:
        x.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body = agent.health()
            if status == 503:
                break
            time.sleep(0.1)
        assert status == 503 and "gone" in body["reason"] and body["status"] == "error"
        assert agent.proc.wait(30) == 3
    finally:
        agent.stop()


def test_owned_xvfb_and_application_stop_with_the_agent():
    display = ":" + str(4000 + free_port() % 900)
    agent = start_agent(display, "--xvfb", "--size", "800x600", "--launch", "sleep 600")
    try:
        status, body = agent.health()
        assert status == 200 and body["width"] == 800
        children = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 2  # Xvfb, window manager, application
    finally:
        assert agent.stop() == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            subprocess.run(["kill", "-0", pid], capture_output=True).returncode == 0 for pid in children):
        time.sleep(0.1)
    assert all(subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0 for pid in children)


def test_application_that_exits_makes_health_fail_with_the_reason(tmp_path):
    display = ":" + str(4000 + free_port() % 900)
    go = tmp_path / "exit-now"
    agent = start_agent(display, "--xvfb", "--size", "640x480",
                        "--launch", f"sh -c 'while [ ! -e {go} ]; do sleep 0.1; done; exit 7'")
    try:
        go.touch()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and agent.health()[0] == 200:
            time.sleep(0.1)
        status, body = agent.health()
        assert status == 503 and "exited with code 7" in body["reason"]
        assert agent.proc.wait(30) == 4
    finally:
        agent.stop()


def test_attached_to_an_x_server_it_did_not_start_the_agent_sets_it_to_size():
    """A pod's Xvfb starts at its framebuffer (--max-size): --size is what must stream."""
    x = start_xvfb("1280x720")
    try:
        agent = start_agent(x.display, "--size", "640x480", "--max-size", "1280x720")
        try:
            assert agent.health()[1]["width"] == 640 and agent.health()[1]["height"] == 480
        finally:
            agent.stop()
        agent = start_agent(x.display)  # no --size: an attached display keeps its size
        try:
            assert (agent.health()[1]["width"], agent.health()[1]["height"]) == (640, 480)
        finally:
            agent.stop()
    finally:
        x.stop()


def test_window_manager_without_an_application():
    """--window-manager: openbox keeps windows maximized for an application started elsewhere
    (the pod's app container); the agent neither launches nor waits for one."""
    x = start_xvfb("800x600")
    try:
        agent = start_agent(x.display, "--window-manager")
        try:
            conn = xdisplay.Display(x.display)
            try:
                assert has_window_manager(conn)
            finally:
                conn.close()
            time.sleep(1.5)
            assert agent.health()[0] == 200  # no application to exit, nothing to report
        finally:
            assert agent.stop() == 0
    finally:
        x.stop()
