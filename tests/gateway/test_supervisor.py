"""The per-session supervisor: nothing of a session outlives it, however the session behaves."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from gateway.spawners import supervisor
from tests.gateway.conftest import alive, descendants

# A stubborn "agent": ignores SIGTERM and leaves a child that escaped into its own session.
STUBBORN = ["sh", "-c", 'trap "" TERM; setsid sleep 301 & sleep 302 & wait']


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def start(command: list[str], processes: int) -> subprocess.Popen:
    """The supervisor running `command`, once `processes` processes run below it."""
    proc = subprocess.Popen([sys.executable, supervisor.__file__, "--parent", str(os.getpid()),
                             "--grace", "0.5", "--", *command], start_new_session=True)
    wait_for(lambda: len(descendants(proc.pid)) >= processes)
    return proc


def test_sigterm_ends_even_a_stubborn_agent_and_what_escaped_it():
    proc = start(STUBBORN, 3)
    tree = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGKILL  # it had to be killed after the grace period
    assert not [p for p in tree if alive(p)]


def test_an_agent_that_exits_takes_its_leftovers_along_and_its_status_is_kept(tmp_path):
    pid_file = tmp_path / "leftover.pid"
    proc = subprocess.Popen([sys.executable, supervisor.__file__, "--parent", str(os.getpid()), "--",
                             "sh", "-c", f"setsid sleep 303 & echo $! > {pid_file}; exit 7"],
                            start_new_session=True)
    assert proc.wait(30) == 7
    leftover = int(pid_file.read_text())
    assert not alive(leftover)


def test_the_death_of_the_gateway_ends_the_session():
    # A stand-in gateway process that starts the supervisor and is then SIGKILLed.
    gateway = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {supervisor.__file__!r}, '--parent', str(os.getpid()),"
        f" '--grace', '0.5', '--', *{STUBBORN!r}])\n"
        "time.sleep(3600)\n")])
    wait_for(lambda: len(descendants(gateway.pid)) >= 4)
    tree = descendants(gateway.pid)
    gateway.kill()
    gateway.wait()
    wait_for(lambda: not [p for p in tree if alive(p)])


def test_a_gateway_that_died_before_the_supervisor_armed_itself_is_noticed():
    proc = subprocess.Popen([sys.executable, supervisor.__file__, "--parent", "1", "--", "sleep", "304"])
    assert proc.wait(30) == 1


def _ipc_namespace_of(prefix: list[str], python: str) -> subprocess.Popen:
    """A supervisor with --ipc-namespace whose command prints its IPC namespace, then waits."""
    return subprocess.Popen([*prefix, python, supervisor.__file__, "--parent", str(os.getpid()),
                             "--grace", "0.5", "--ipc-namespace", "--",
                             "sh", "-c", "readlink /proc/self/ns/ipc; exec sleep 30"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def _namespaces(*procs: subprocess.Popen) -> list[str]:
    try:
        return [p.stdout.readline().strip() for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(30)


def test_each_session_gets_an_ipc_namespace_of_its_own():
    host = os.readlink("/proc/self/ns/ipc")
    first, second = _namespaces(_ipc_namespace_of([], sys.executable), _ipc_namespace_of([], sys.executable))
    assert first.startswith("ipc:[") and len({host, first, second}) == 3


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs a non-root supervisor")
def test_a_supervisor_that_is_not_root_gets_one_too():
    """Without CAP_SYS_ADMIN it takes a user namespace as well, mapping its uid to itself."""
    host = os.readlink("/proc/self/ns/ipc")
    [namespace] = _namespaces(_ipc_namespace_of(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "/usr/bin/python3"))
    assert namespace.startswith("ipc:[") and namespace != host
