"""Process-tree helpers for the fault tests: everything read from /proc, nothing mocked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return [p for p in found if alive(p)]


def with_args(*words: str) -> list[int]:
    """Living processes whose argv holds `words` as consecutive arguments (e.g. "--display", ":123")."""
    n = len(words)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            argv = cmdline(int(entry))
            if any(tuple(argv[i:i + n]) == words for i in range(len(argv) - n + 1)) and alive(int(entry)):
                found.append(int(entry))
    return found


def display_users(display: str) -> list[int]:
    """Every living process started for X display `display` (":123"): Xvfb itself, the agent
    (--display), and whatever runs with DISPLAY set to it (window manager, application)."""
    found = set(with_args(display)) | set(with_args("--display", display))
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if f"DISPLAY={display}".encode() in env and alive(int(entry)):
                found.add(int(entry))
    return sorted(found)


def kill9(pid: int) -> None:
    assert pid > 0, pid  # os.kill(0, ...) would signal our own process group
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until(check, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll `check()` until truthy (a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last: {result!r})")
        time.sleep(interval)


class ViewerProcess:
    """tests/faults/viewer_proc.py in a subprocess; its stdout lines are collected."""

    def __init__(self, base_url: str, path: str, token: str, *, hold: bool = False) -> None:
        root = Path(__file__).resolve().parents[2]
        argv = [sys.executable, "-m", "tests.faults.viewer_proc", base_url, path, token]
        if hold:
            argv.append("--hold")
        self.lines: list[str] = []
        self.proc = subprocess.Popen(argv, cwd=root, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(root)})
        self.errors: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(line.strip() for line in self.proc.stdout),
                         daemon=True).start()
        threading.Thread(target=lambda: self.errors.extend(self.proc.stderr), daemon=True).start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until(lambda: "ready" in self.lines or self.proc.poll() is not None, timeout,
                   what="viewer ready")
        assert "ready" in self.lines, "".join(self.errors)[-3000:]

    def colours(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in line.split()[1:]) for line in list(self.lines)
                if line.startswith("colour")]

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()
