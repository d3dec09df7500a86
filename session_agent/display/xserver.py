"""The X side of a session: an owned Xvfb, the window manager, the application.

Xvfb gets the largest allowed size as its framebuffer so that RandR can later resize the
screen anywhere up to it; the current size is then set with RandR.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time

from Xlib import display as xdisplay

from .randr import set_screen_size
from .windows import has_window_manager
from .xauth import write_cookie

log = logging.getLogger(__name__)


SECRET_ENV = ("AGENT_TOKEN", "AGENT_TOKEN_FILE")


class XServerError(Exception):
    pass


def can_connect(display: str) -> bool:
    try:
        xdisplay.Display(display).close()
        return True
    except Exception:
        return False


def _child_setup() -> None:
    # Die with the agent, whatever kills it: no orphan X server or application.
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class XSession:
    """Processes the agent owns on its display; stopped (TERM, then KILL) with the agent."""

    def __init__(self, display: str, xauthority: str | None = None) -> None:
        self.display = display
        self.xauthority = xauthority  # an owned Xvfb requires the fresh cookie written here
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def _spawn(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        # The application runs the user's plug-ins and scripts: it must not learn the bearer
        # token that guards this session's stream (nor where the pod keeps it).
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env["DISPLAY"] = self.display
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_child_setup,
                                start_new_session=True, **kwargs)
        self.procs.append((name, proc))
        return proc

    def start_xvfb(self, size: tuple[int, int], max_size: tuple[int, int], timeout: float = 15.0) -> None:
        """Xvfb with the largest size as its framebuffer, then the screen set to `size` by RandR."""
        self._start_xvfb(*max_size, timeout=timeout)
        set_screen_size(self.display, *size, limit=max_size)

    def _start_xvfb(self, width: int, height: int, timeout: float) -> None:
        number = self.display.split(":", 1)[1].split(".")[0]
        if os.path.exists(f"/tmp/.X11-unix/X{number}") and can_connect(self.display):
            raise XServerError(f"display {self.display} is already in use")
        auth: list[str] = []
        if self.xauthority:
            # A cookie, and no abstract socket (@/tmp/.X11-unix/XN is reachable from any process
            # in this network namespace, whatever the file system shows it); the socket file stays.
            try:
                write_cookie(self.xauthority, self.display)
            except OSError as exc:
                raise XServerError(f"cannot write the Xauthority file {self.xauthority}: "
                                   f"{exc.strerror or exc}") from None
            auth = ["-auth", self.xauthority, "-nolisten", "local"]
        try:
            proc = self._spawn("xvfb", ["Xvfb", self.display, "-screen", "0", f"{width}x{height}x24",
                                        "-nolisten", "tcp", "-noreset", "+extension", "DAMAGE",
                                        "+extension", "RANDR", "+extension", "XFIXES", *auth],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise XServerError("Xvfb is not installed (Debian package xvfb)") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
                raise XServerError(f"Xvfb {self.display} exited: {err[-1] if err else proc.returncode}")
            if can_connect(self.display):
                proc.stderr.close()
                return
            time.sleep(0.05)
        raise XServerError(f"Xvfb {self.display} did not start within {timeout:.0f}s")

    def launch(self, command: str) -> None:
        """A window manager that keeps the application maximized, then the application."""
        try:
            self._spawn("wm", ["openbox", "--config-file", _openbox_config()],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait_for_window_manager()
        except FileNotFoundError:
            log.warning("openbox not found: the application window will not be maximized",
                        extra={"action": "launch"})
        try:
            argv = shlex.split(command)
            self._spawn("app", argv)
        except (FileNotFoundError, ValueError) as exc:
            raise XServerError(f"cannot launch {command!r}: {exc}") from None

    def _wait_for_window_manager(self, timeout: float = 10.0) -> None:
        """A window mapped before openbox manages the screen may miss the maximize rule."""
        conn = xdisplay.Display(self.display)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not has_window_manager(conn):
                time.sleep(0.05)
        finally:
            conn.close()

    def app_exit_code(self) -> int | None:
        for name, proc in self.procs:
            if name == "app":
                return proc.poll()
        return None

    def stop(self, grace: float = 3.0) -> None:
        # The application first (it may want the X server to save), the X server last.
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.procs.clear()


_OPENBOX_RC = """<?xml version="1.0" encoding="UTF-8"?>
<openbox_config xmlns="http://openbox.org/3.4/rc">
  <applications>
    <application class="*" type="normal">
      <decor>no</decor>
      <maximized>yes</maximized>
    </application>
  </applications>
  <desktops><number>1</number></desktops>
  <margins><top>0</top><bottom>0</bottom><left>0</left><right>0</right></margins>
</openbox_config>
"""


def _openbox_config() -> str:
    """Every normal window maximized and undecorated: the stream is the application."""
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"agent-openbox-{os.getuid()}.xml")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(_OPENBOX_RC)
        os.replace(tmp, path)
    return path
