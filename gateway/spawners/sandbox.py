"""The application's sandbox in local mode: bubblewrap (Debian `bubblewrap`).

The application runs the user's plug-ins and scripts, so it is treated as hostile: it sees the
system read-only, its own home read-write (at the same path as outside), a private /tmp that
holds only its own X socket and Xauthority, a minimal /dev, and a /proc of its own PID
namespace; no network (its own empty network namespace: no TCP, and no abstract Unix sockets,
which live per network namespace), no other session, no gateway data. Its environment is
built from nothing. The agent, Xvfb and the window manager run outside it (they are ours);
the supervisor puts the whole session in an IPC namespace of its own, so the application and
its X server share MIT-SHM with each other and with nobody else.

Two ways to start it, chosen by who runs the gateway:

- As root (`privileged`): bubblewrap does the mounts as root and keeps only CAP_SETUID,
  CAP_SETGID and CAP_SETPCAP, and `setpriv` drops the application to `uid`/`gid` with no
  capabilities left (bwrap sets no_new_privs). Without this the application would be root with
  every capability (bwrap keeps them for root), or, in a user namespace, still uid 0 to the
  kernel for files: /etc/shadow and host keys readable.
- As anyone else: bubblewrap creates a user namespace (and a nested one with
  --disable-userns, so the application cannot make more), as the gateway's uid.

`bwrap_argv` is pure; `host_layout` and `probe` do the I/O.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

BWRAP_PACKAGE = "bubblewrap"
SANDBOX_XAUTHORITY = "/tmp/.Xauthority"
# Top-level entries that merged-/usr systems make symlinks (Debian 12: bin, sbin, lib*).
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What the application sees of the system, read-only; "-try": bound when present.
SYSTEM = ("/usr", "/etc")
SYSTEM_TRY = ("/var/cache/fontconfig",)  # fonts' cache: without it GIMP rebuilds it at start
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Variables kept from the caller's environment: locale and time zone only.
PASSED_ENV = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")


@dataclass(frozen=True)
class Sandbox:
    """One application's sandbox. Paths are the host's; the home appears at the same path."""

    home: Path
    display: int  # X display number: its socket /tmp/.X11-unix/X<N> is the one bound in
    xauthority: Path  # the session's Xauthority file, seen inside as SANDBOX_XAUTHORITY
    privileged: bool = False  # the gateway runs as root: drop to uid/gid with setpriv
    uid: int = 65534
    gid: int = 65534
    # name -> symlink target, or None for a real directory (what host_layout() found)
    layout: Mapping[str, str | None] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # the caller's env: PASSED_ENV is kept
    x_socket: Path | None = None  # default /tmp/.X11-unix/X<display>; the probe passes a stand-in


def _ancestors(path: PurePosixPath) -> list[str]:
    """/a, /a/b for /a/b/c: made (0755) inside so that a dropped uid can reach the home."""
    return [str(p) for p in reversed(path.parents) if str(p) != "/"]


def bwrap_argv(sandbox: Sandbox, command: Sequence[str], bwrap: str = "bwrap") -> list[str]:
    """The whole command line that runs `command` in `sandbox`."""
    home = PurePosixPath(sandbox.home)
    x_socket = sandbox.x_socket or Path(f"/tmp/.X11-unix/X{sandbox.display}")
    argv = [bwrap]
    if sandbox.privileged:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_SETPCAP"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    argv += ["--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
             "--die-with-parent", "--new-session", "--clearenv"]
    env = {k: v for k, v in sandbox.env.items() if k in PASSED_ENV}
    env.update(HOME=str(home), PATH=PATH, DISPLAY=f":{sandbox.display}",
               XAUTHORITY=SANDBOX_XAUTHORITY, XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CACHE_HOME=str(home / ".cache"))
    for name, value in env.items():
        argv += ["--setenv", name, value]
    for path in SYSTEM:
        argv += ["--ro-bind", path, path]
    for name in TOP_LEVEL:
        if name not in sandbox.layout:
            continue
        target = sandbox.layout[name]
        if target is None:
            argv += ["--ro-bind", f"/{name}", f"/{name}"]
        else:
            argv += ["--symlink", target, f"/{name}"]
    for path in SYSTEM_TRY:
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm",
             "--perms", "1777", "--tmpfs", "/tmp", "--perms", "0755", "--dir", "/tmp/.X11-unix",
             "--ro-bind", str(x_socket), f"/tmp/.X11-unix/X{sandbox.display}",
             "--ro-bind", str(sandbox.xauthority), SANDBOX_XAUTHORITY]
    for parent in _ancestors(home):
        argv += ["--perms", "0755", "--dir", parent]
    argv += ["--bind", str(home), str(home)]
    if sandbox.privileged:
        # bwrap would chdir as root without CAP_DAC_OVERRIDE, which cannot enter a home
        # owned by `uid` (0700): env -C does it after the uid is dropped.
        argv += ["--", "setpriv", f"--reuid={sandbox.uid}", f"--regid={sandbox.gid}",
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
                 "--", "env", "-C", str(home), "--", *command]
    else:
        argv += ["--chdir", str(home), "--", *command]
    return argv


def host_layout(root: str = "/") -> dict[str, str | None]:
    """Which of TOP_LEVEL exist here, and which are symlinks (merged /usr)."""
    found: dict[str, str | None] = {}
    for name in TOP_LEVEL:
        path = os.path.join(root, name)
        if os.path.islink(path):
            found[name] = os.readlink(path)
        elif os.path.isdir(path):
            found[name] = None
    return found


def visible(path: str) -> bool:
    """Whether a host file is visible inside the sandbox (under the read-only system)."""
    real = os.path.realpath(path)
    roots = [*SYSTEM, *SYSTEM_TRY, *(f"/{n}" for n in TOP_LEVEL)]
    return any(real == r or real.startswith(r + "/") for r in roots)


async def probe(bwrap: str | None, privileged: bool, uid: int, gid: int,
                timeout: float = 20.0) -> str | None:
    """Run `true` in a sandbox built exactly like a session's; None when it works, else why.

    Catches a missing bwrap, a kernel or container that refuses its namespaces (no
    unprivileged user namespaces, seccomp), and a uid that cannot be switched to."""
    if bwrap is None:
        return f"bwrap not found on PATH (Debian package {BWRAP_PACKAGE})"
    with tempfile.TemporaryDirectory(prefix="gateway-sandbox-probe-") as tmp:
        base = Path(tmp)
        home = base / "home"
        home.mkdir(mode=0o700)
        x_socket, xauthority = base / "X0", base / "Xauthority"
        x_socket.touch()
        xauthority.touch(mode=0o600)
        if privileged:
            try:
                for path in (home, xauthority):
                    os.chown(path, uid, gid)
            except OSError as exc:
                return f"files cannot be given to uid {uid}: {exc.strerror or exc}"
        sandbox = Sandbox(home=home, display=0, xauthority=xauthority, privileged=privileged,
                          uid=uid, gid=gid, layout=host_layout(), x_socket=x_socket)
        argv = bwrap_argv(sandbox, ["sh", "-c", "test -w \"$HOME\" && test -r \"$XAUTHORITY\""],
                          bwrap)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return f"bwrap did not finish within {timeout:g} s"
        except OSError as exc:
            return f"bwrap cannot be run: {exc.strerror or exc}"
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        return f"bwrap cannot create its sandbox here: {why}"
    return None


def find_bwrap() -> str | None:
    return shutil.which("bwrap")
