"""The X side of a session: an owned Xvfb, the window manager, the application.

Xvfb gets the largest allowed size (--max-size) as its framebuffer so that RandR can later
resize the screen anywhere up to it; the current size is then set with RandR. Xvfb cannot
grow past its framebuffer, and it touches all of it at start (4 bytes a pixel: 8 MB at
1920x1080, 33 MB at 3840x2160, measured 24 MB more PSS per session), so the default maximum is
the session's own size and a larger one is configured for HiDPI clients.
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
# Xvfb keeps the buffers of its clients' large requests (images GIMP puts on the screen) on
# its heap for good: glibc's adaptive thresholds stop returning freed blocks to the system.
# Fixed thresholds make blocks from 128 KiB up mapped and unmapped, and trim the heap's top.
XVFB_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


class XServerError(Exception):
    pass


def can_connect(display: str) -> bool:
    try:
        xdisplay.Display(display).close()
        return True
    except Exception:
        return False


def set_size(display: str, size: tuple[int, int], max_size: tuple[int, int]) -> tuple[int, int]:
    """The screen set to `size` by RandR (clamped to the framebuffer and `max_size`). An X server
    the agent did not start (a pod's) has its framebuffer as its size until somebody does this."""
    try:
        return set_screen_size(display, *size, limit=max_size)
    except Exception as exc:  # python-xlib raises its own error classes, and OSError
        raise XServerError(f"cannot set the screen of {display} to {size[0]}x{size[1]}: {exc}") from None


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

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None,
               **kwargs) -> subprocess.Popen:
        # The application runs the user's plug-ins and scripts: it must not learn the bearer
        # token that guards this session's stream (nor where the pod keeps it).
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env["DISPLAY"] = self.display
        env.update(extra_env or {})
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_child_setup,
                                start_new_session=True, **kwargs)
        self.procs.append((name, proc))
        return proc

    def start_xvfb(self, size: tuple[int, int], max_size: tuple[int, int], timeout: float = 15.0,
                   glx: bool = False) -> None:
        """Xvfb with the largest size as its framebuffer, then the screen set to `size` by RandR.
        Without `glx` the GLX extension is off: it loads Mesa into the server (10 MB of private
        memory per session, measured), and only OpenGL applications (Blender) use it."""
        self._start_xvfb(*max_size, timeout=timeout, glx=glx)
        set_size(self.display, size, max_size)

    def _start_xvfb(self, width: int, height: int, timeout: float, glx: bool = False) -> None:
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
                                        "+extension", "RANDR", "+extension", "XFIXES",
                                        "+extension" if glx else "-extension", "GLX", *auth],
                               extra_env=XVFB_MALLOC_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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

    def start_window_manager(self) -> None:
        """A window manager that keeps every application window maximized and undecorated."""
        try:
            self._spawn("wm", ["openbox", "--config-file", _openbox_config()],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait_for_window_manager()
        except FileNotFoundError:
            log.warning("openbox not found: the application window will not be maximized",
                        extra={"action": "launch"})

    def launch(self, command: str) -> None:
        """The application (after start_window_manager, so that its window is maximized)."""
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

    def app_pid(self) -> int | None:
        return next((proc.pid for name, proc in self.procs if name == "app"), None)

    def app_exit_code(self) -> int | None:
        for name, proc in self.procs:
            if name == "app":
                return proc.poll()
        return None

    def stop(self, grace: float = 3.0) -> None:
        # The application first (it may want the X server to save), the X server last.
        # A sandboxed application (bubblewrap) must be signalled itself: bwrap forwards no
        # signal, and when bwrap goes its --die-with-parent SIGKILLs the application, which
        # would lose the chance to exit cleanly.
        sandboxed = [p for name, p in self.procs
                     if name == "app" and p.poll() is None and os.path.basename(p.args[0]) == "bwrap"]
        # Not bwrap's own child: PID 1 of the sandbox, whose end SIGKILLs everything in it.
        inner = [pid for p in sandboxed for init in _descendants(p.pid, depth=1)
                 for pid in _descendants(init)]
        for pid in inner:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while inner and time.monotonic() < deadline and any(_alive(pid) for pid in inner):
            time.sleep(0.05)
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


def _descendants(pid: int, depth: int | None = None) -> list[int]:
    """The processes below `pid` (down to `depth` generations), from the kernel's children lists."""
    found: list[int] = []
    todo = [(pid, 0)]
    while todo:
        parent, level = todo.pop()
        if depth is not None and level >= depth:
            continue
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            found += children
            todo += [(c, level + 1) for c in children]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
