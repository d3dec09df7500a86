"""A hostile application for the local isolation tests: arbitrary code in a session, the way a
GIMP plug-in runs. The gateway starts it as the session's application (`python3 -c <this>`),
so it runs exactly where GIMP would: in the sandbox, if there is one. Standard library only
(it runs on the system's python3, which is all a sandbox shows).

As every session's application it first keeps a secret where an application keeps its data:
in its home (`secret.txt`, written by the test) and in a SysV shared memory segment of its own
(like GIMP's tiles and MIT-SHM images), whose id it writes to $HOME/shm.json.

Then it waits for $HOME/targets.json, which the test writes into the attacker's home only:
what another session has (paths, pids, display, ports, segment ids) and the needles that prove
a read reached it (its secrets, tokens, screen colour). It tries every attack and writes
$HOME/results.json: {attack: {"reached": bool, "found": [needle names], "detail": str}} —
"reached": the attack got through to the target at all; "found": which needles it read there.
Controls (its own home, display and segment) are reported the same way: they must work.
"""
import ctypes
import json
import os
import re
import socket
import stat
import struct
import sys
import time

HOME = os.environ.get("HOME", "/nonexistent")
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
IPC_PRIVATE, IPC_CREAT, SHM_RDONLY = 0, 0o1000, 0o10000
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
WALL = 0x40000000  # waitpid: any child, also a traced one
SHM_SIZE = 1 << 16


def keep_a_secret():
    """Wait for the secret the test gives this session, then hold it in a segment too."""
    while True:
        try:
            with open(os.path.join(HOME, "secret.txt"), "rb") as f:
                secret = f.read()
            break
        except OSError:
            time.sleep(0.1)
    shmid = libc.shmget(IPC_PRIVATE, SHM_SIZE, IPC_CREAT | 0o666)  # even readable by anyone
    if shmid < 0:
        return
    address = libc.shmat(shmid, None, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        return
    ctypes.memmove(address, b"SHM:" + secret, len(secret) + 4)
    write_json("shm.json", {"id": shmid})


def write_json(name, value):
    tmp = os.path.join(HOME, f".{name}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, os.path.join(HOME, name))


class Search:
    """Which needles occur in what was read; screen colour needles are regexes over pixels."""

    def __init__(self, needles):
        self.plain = {k: v.encode() for k, v in needles.items() if not k.startswith("colour:")}
        self.colours = {k: re.compile(b"(?:" + re.escape(bytes.fromhex(v)) + b".){64}", re.S)
                        for k, v in needles.items() if k.startswith("colour:")}

    def __call__(self, data):
        found = [k for k, v in self.plain.items() if v and v in data]
        return found + [k for k, rx in self.colours.items() if rx.search(data)]


def result(reached, found=(), detail=""):
    return {"reached": bool(reached), "found": sorted(set(found)), "detail": str(detail)[:300]}


def own_path(path):
    """The application's own home or a directory on the way to it (a sandbox makes those)."""
    path, home = os.path.normpath(path), os.path.normpath(HOME)
    return path == home or home.startswith(path.rstrip("/") + "/") or path.startswith(home + "/")


def read_files(paths, search):
    """Read each path (a directory: list it); reached if anything not its own could be read."""
    reached, found, details = False, [], []
    for path in paths:
        try:
            if os.path.isdir(path):
                foreign = [e for e in os.listdir(path) if not own_path(os.path.join(path, e))]
                data = "\n".join(foreign).encode()
                reached = reached or bool(foreign)
                details.append(f"{path}: listed {foreign}")
            else:
                with open(path, "rb") as f:
                    data = f.read(1 << 20)
                reached = reached or not own_path(path)
                details.append(f"{path}: read")
            found += search(data)
        except OSError as exc:
            details.append(f"{path}: {exc.strerror}")
    return result(reached, found, "; ".join(details))


def scan_proc(search):
    """Every process this one can see: its environment and command line."""
    found, seen = [], 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        seen += 1
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{entry}/{name}", "rb") as f:
                    found += search(f.read())
            except OSError:
                pass
    return result(bool(found), found, f"{seen} processes visible")


def signal_and_trace(pids):
    reached, details = False, []
    for pid in pids:
        try:
            os.kill(pid, 0)
            reached = True
            details.append(f"{pid}: signal allowed")
        except OSError as exc:
            details.append(f"{pid}: kill {exc.strerror}")
        if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
            reached = True
            details.append(f"{pid}: ptrace attached")
            # The tracee stops; it can only be let go once it has (else it stays stopped).
            os.waitpid(pid, WALL)
            libc.ptrace(PTRACE_DETACH, pid, None, None)
        else:
            details.append(f"{pid}: ptrace {os.strerror(ctypes.get_errno())}")
    return result(reached, (), "; ".join(details))


def open_fds(pids, search):
    """The other processes' open files (the agent's memfd holds its screen capture)."""
    reached, found = False, []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not stat.S_ISREG(os.stat(path).st_mode):
                    reached = True  # a pipe or socket of theirs: it could be read or written
                    continue
                with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
                    data = f.read(64 << 20)
                reached = True
                found += search(data)
            except OSError:
                pass
    return result(reached, found, "")


def own_cookie(number):
    try:
        with open(os.environ["XAUTHORITY"], "rb") as f:
            data = f.read()
    except (KeyError, OSError):
        return b""
    i = 0
    while i + 2 <= len(data):
        i += 2  # family
        fields = []
        for _ in range(4):
            (n,) = struct.unpack_from(">H", data, i)
            fields.append(data[i + 2:i + 2 + n])
            i += 2 + n
        if fields[1] == str(number).encode() and fields[2] == b"MIT-MAGIC-COOKIE-1":
            return fields[3]
    return b""


def x_accepts(family, address, cookie=b""):
    """Connect, then the X11 connection setup: True when the server accepts the client."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(address)
        name = b"MIT-MAGIC-COOKIE-1" if cookie else b""

        def pad(b):
            return b + b"\0" * (-len(b) % 4)
        sock.sendall(struct.pack("<BxHHHHxx", ord("l"), 11, 0, len(name), len(cookie))
                     + pad(name) + pad(cookie))
        return sock.recv(1) == b"\x01"
    finally:
        sock.close()


def x_display(number, cookie):
    """Every way to reach display `number`: its socket file, the abstract socket, TCP."""
    reached, details = False, []
    for label, family, address in (
            ("file", socket.AF_UNIX, f"/tmp/.X11-unix/X{number}"),
            ("abstract", socket.AF_UNIX, f"\0/tmp/.X11-unix/X{number}"),
            ("tcp", socket.AF_INET, ("127.0.0.1", 6000 + number))):
        for auth in (b"", cookie):
            try:
                accepted = x_accepts(family, address, auth)
                details.append(f"{label}{'+cookie' if auth else ''}: "
                               f"{'accepted' if accepted else 'refused by the server'}")
                reached = reached or accepted
            except OSError as exc:
                details.append(f"{label}: {exc.strerror or exc}")
    return result(reached, (), "; ".join(details))


def shm_segments(ids, search):
    """Attach each SysV segment id (the other session's, and every one visible here)."""
    visible = []
    try:
        with open("/proc/sysvipc/shm") as f:
            visible = [int(line.split()[1]) for line in f.readlines()[1:]]
    except OSError:
        pass
    reached, found, details = False, [], []
    for shmid in sorted(set(ids) | set(visible)):
        address = libc.shmat(shmid, None, SHM_RDONLY)
        if address in (None, ctypes.c_void_p(-1).value):
            details.append(f"{shmid}: {os.strerror(ctypes.get_errno())}")
            continue
        data = ctypes.string_at(address, SHM_SIZE)
        libc.shmdt(address)
        hits = search(data)
        reached = reached or bool(hits)
        found += hits
        details.append(f"{shmid}: attached ({', '.join(hits) or 'nothing of the target'})")
    return result(reached, found, "; ".join(details))


def tcp(ports):
    reached, details = False, []
    for port in ports:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                reached = True
                details.append(f"{port}: connected")
        except OSError as exc:
            details.append(f"{port}: {exc.strerror or exc}")
    return result(reached, (), "; ".join(details))


def attack(t):
    search = Search(t["needles"])
    own_display = int(os.environ.get("DISPLAY", ":0").split(":")[1].split(".")[0])
    cookie = own_cookie(own_display)
    own_secret = open(os.path.join(HOME, "secret.txt"), "rb").read()
    own_search = Search({"own": own_secret.decode()})
    return {
        "home": read_files([t["home"], os.path.join(t["home"], "secret.txt")], search),
        "data_dir": read_files([t["data_dir"], *t["data_files"]], search),
        "proc": scan_proc(search),
        "proc_of_target": read_files([f"/proc/{p}/{n}" for p in t["pids"] for n in ("environ", "cmdline")],
                                     search),
        "signals": signal_and_trace(t["pids"]),
        "open_files": open_fds(t["pids"], search),
        "display": x_display(t["display"], cookie),
        "shm": shm_segments(t["shm_ids"], search),
        "network": tcp(t["ports"]),
        # Controls: what this application must still be able to do with its own things.
        "own_home": read_files([os.path.join(HOME, "secret.txt")], own_search),
        "own_display": result(
            x_accepts(socket.AF_UNIX, f"/tmp/.X11-unix/X{own_display}", cookie),
            (), "without the cookie: "
            + ("accepted" if x_accepts(socket.AF_UNIX, f"/tmp/.X11-unix/X{own_display}") else "refused")),
        "own_shm": shm_segments([], own_search),
    }


def main():
    keep_a_secret()
    targets = os.path.join(HOME, "targets.json")
    while True:
        if os.path.exists(targets):
            with open(targets) as f:
                t = json.load(f)
            try:
                write_json("results.json", attack(t))
            except Exception as exc:  # the test must see why, not wait for nothing
                write_json("results.json", {"error": repr(exc)})
            break
        time.sleep(0.1)
    while True:  # an application that keeps running
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
