"""A network lab built from Linux network namespaces: a user behind a NAT router, an
"internet" that can delay, drop and rate-limit packets, and a server (optionally behind a
NAT or a load balancer of its own).

    client ──lan0── router (MASQUERADE) ──wan0── wan (relay: delay, loss, rate) ──srv0── server
    198.51.100.10   198.51.100.1 | 203.0.113.10   203.0.113.1 | 203.0.113.65     203.0.113.80

With `server_nat="one-to-one"` (a cloud VM's public address) or `"ports"` (a Kubernetes
LoadBalancer: only forwarded ports reach the server), a server router holds 203.0.113.80 and
the server sits behind it at 198.51.100.130.

Rules it keeps: every address is a documentation range inside namespaces it made; nothing is
added to the root namespace (the veth pairs are created directly inside their namespaces);
no namespace has a route beyond the lab's own peers (the wan has no default route at all);
names are `gsp-<pid>-<n>-<role>`, unique per process, so parallel runs never collide; and it
is torn down on `close()`, by the context manager, at interpreter exit, and — for a run that
was killed — by `sweep_stale()` (called when the first lab of a process is built), which
removes `gsp-*` namespaces whose creating process is gone.

Processes run inside a namespace with `ns.popen(argv)` (`ip netns exec`); Python code runs
inside one with `ns.call(fn)` (a thread that entered it with setns(2): sockets it opens
live there). `ns.wrapper(exe)` writes a script that runs `exe` inside the namespace, for
programs that are launched by another one (Playwright's Chromium).
"""
from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.netlab.relay import Impairment

ROOT = Path(__file__).resolve().parents[2]
NETNS_DIR = Path("/run/netns")
PREFIX = "gsp-"
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_S = 20

CLIENT = "198.51.100.10"
CLIENT_ROUTER = "198.51.100.1"
CLIENT_PUBLIC = "203.0.113.10"  # the client router's address on the internet
WAN_CLIENT_SIDE = "203.0.113.1"
WAN_SERVER_SIDE = "203.0.113.65"
SERVER_PUBLIC = "203.0.113.80"
SERVER_PRIVATE = "198.51.100.130"  # behind the server router
SERVER_ROUTER_LAN = "198.51.100.129"

SERVER_NATS = ("none", "one-to-one", "ports")

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count(1)
_live: list[NetLab] = []
_swept = False


class LabError(RuntimeError):
    pass


def unavailable(relay: bool = False) -> str | None:
    """Why no lab can be built here (None: it can); with `relay`, why it could not delay, drop
    or rate-limit. Tests skip with this reason."""
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"the network lab needs `{tool}` (scripts/setup installs it)"
    probe = f"{PREFIX}{os.getpid()}-0-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces cannot be made here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    if relay and not Path("/dev/net/tun").exists():
        return "the lab's delay/loss/rate relay needs /dev/net/tun (this kernel has no sch_netem)"
    return None


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _started_at(pid: int) -> float | None:
    """When the process started (epoch seconds), from /proc."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _kill_pids(pids: list[int], grace_s: float = 3.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) and not _zombie(p) for p in pids):
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _delete_namespace(name: str) -> None:
    pids = [int(p) for p in _run(["ip", "netns", "pids", name], check=False).stdout.split()]
    if pids:
        _kill_pids(pids)
    _run(["ip", "netns", "delete", name], check=False)


def lab_namespaces() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob(PREFIX + "*")) if NETNS_DIR.exists() else []


def sweep_stale() -> list[str]:
    """Delete `gsp-*` namespaces left by runs that were killed: their creator (the pid in the
    name) is gone, or is a newer process that reused the pid. Live runs' labs are kept."""
    removed = []
    for name in lab_namespaces():
        try:
            pid = int(name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        try:
            made = (NETNS_DIR / name).stat().st_mtime
        except OSError:
            continue
        started = _started_at(pid) if _alive(pid) else None
        if started is None or started > made + 1:
            _delete_namespace(name)
            removed.append(name)
    return removed


def _enter(name: str) -> None:
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Namespace:
    """One namespace of the lab: a host or a router."""

    name: str
    role: str
    address: str = ""  # its main address
    processes: list[subprocess.Popen] = field(default_factory=list)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", self.name, *args], check=check)

    def iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.name, "iptables", "-w", *args], check=check)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process inside this namespace; it is ended with the lab."""
        kwargs.setdefault("cwd", ROOT)
        proc = subprocess.Popen(self.exec_argv(argv), **kwargs)
        self.processes.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("cwd", ROOT)
        return subprocess.run(self.exec_argv(argv), capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn in a thread that entered this namespace: what it opens lives here."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                _enter(self.name)
                box["result"] = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
        thread = threading.Thread(target=body, name=f"netns-{self.role}", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def http(self, method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None,
             cafile: str | None = None, timeout: float = 30) -> tuple[int, Any, dict[str, str]]:
        """An HTTP request made from this namespace: (status, JSON body or text, headers)."""
        def request() -> tuple[int, Any, dict[str, str]]:
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(url, method=method, data=data,
                                         headers={"Content-Type": "application/json", **(headers or {})})
            context = ssl.create_default_context(cafile=cafile) if cafile else None
            try:
                with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
                    status, raw, got = r.status, r.read(), dict(r.headers)
            except urllib.error.HTTPError as e:
                status, raw, got = e.code, e.read(), dict(e.headers)
            try:
                return status, json.loads(raw or b"{}"), got
            except ValueError:
                return status, raw.decode(errors="replace"), got
        return self.call(request)

    def wrapper(self, executable: str, directory: Path) -> Path:
        """A script that runs `executable` with its arguments inside this namespace (file
        descriptors pass through `ip netns exec`, so a pipe to its parent keeps working)."""
        path = directory / f"{Path(executable).name}-in-{self.role}"
        path.write_text(f"#!/bin/sh\nexec ip netns exec {self.name} {executable} \"$@\"\n")
        path.chmod(0o755)
        return path

    def write_sysctl(self, key: str, value: str) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        self.call(path.write_text, value)

    def stop_processes(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()


class NetLab:
    """`with NetLab() as lab:` — see the module docstring for the shape."""

    def __init__(self, server_nat: str = "none") -> None:
        if server_nat not in SERVER_NATS:
            raise ValueError(f"server_nat must be one of {SERVER_NATS}")
        self.server_nat = server_nat
        self.id = f"{os.getpid()}-{next(_counter)}"
        self.namespaces: list[Namespace] = []
        self.relay: subprocess.Popen | None = None
        self._relay_lines: list[dict[str, Any]] = []
        self._relay_event = threading.Condition()
        self.impairment: tuple[Impairment, Impairment] | None = None
        self.udp_blocked = False
        self.tmp = Path(tempfile.mkdtemp(prefix=f"netlab-{self.id}-"))
        self.client = self._ns("c", CLIENT)
        self.router = self._ns("r", CLIENT_ROUTER)
        self.wan = self._ns("w", WAN_CLIENT_SIDE)
        self.server_router = self._ns("sr", SERVER_PUBLIC) if server_nat != "none" else None
        self.server = self._ns("s", SERVER_PRIVATE if server_nat != "none" else SERVER_PUBLIC)
        self.server_public = SERVER_PUBLIC
        self.client_public = CLIENT_PUBLIC
        self._built = False

    def _ns(self, role: str, address: str) -> Namespace:
        ns = Namespace(f"{PREFIX}{self.id}-{role}", role, address)
        self.namespaces.append(ns)
        return ns

    # -- building ---------------------------------------------------------------------------
    def __enter__(self) -> NetLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> NetLab:
        global _swept
        if reason := unavailable(relay=False):
            raise LabError(reason)
        if not _swept:
            _swept = True
            sweep_stale()
            atexit.register(_close_all)
        _live.append(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self._built = True
        return self

    def _link(self, a: Namespace, a_if: str, a_addr: str, b: Namespace, b_if: str, b_addr: str) -> None:
        # Both ends are created inside their namespaces: nothing appears in the root one.
        _run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", b_if,
              "netns", b.name])
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            ns.ip("addr", "add", addr, "dev", ifname)
            ns.ip("link", "set", ifname, "up")

    def _build(self) -> None:
        for ns in self.namespaces:
            _run(["ip", "netns", "add", ns.name])
            # IPv4 only: no IPv6 chatter (router solicitations, MLD) on the lab's links.
            for key in ("all", "default"):
                ns.write_sysctl(f"net.ipv6.conf.{key}.disable_ipv6", "1")
            ns.ip("link", "set", "lo", "up")
        c, r, w, s, sr = self.client, self.router, self.wan, self.server, self.server_router
        self._link(c, "lan0", f"{CLIENT}/25", r, "lan0", f"{CLIENT_ROUTER}/25")
        self._link(r, "wan0", f"{CLIENT_PUBLIC}/26", w, "cli0", f"{WAN_CLIENT_SIDE}/26")
        c.ip("route", "add", "default", "via", CLIENT_ROUTER)
        r.ip("route", "add", "default", "via", WAN_CLIENT_SIDE)
        r.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
        for ns in (r, w) + ((sr,) if sr else ()):
            ns.write_sysctl("net.ipv4.ip_forward", "1")
        # The wan routes packets into the relay's TUN devices by the interface they came in
        # on; what the relay writes back arrives from a TUN device, which strict reverse-path
        # filtering would drop.
        for key in ("all", "default"):
            w.write_sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        if sr is None:
            self._link(w, "srv0", f"{WAN_SERVER_SIDE}/26", s, "wan0", f"{SERVER_PUBLIC}/26")
            s.ip("route", "add", "default", "via", WAN_SERVER_SIDE)
            return
        self._link(w, "srv0", f"{WAN_SERVER_SIDE}/26", sr, "wan0", f"{SERVER_PUBLIC}/26")
        self._link(sr, "lan0", f"{SERVER_ROUTER_LAN}/25", s, "lan0", f"{SERVER_PRIVATE}/25")
        sr.ip("route", "add", "default", "via", WAN_SERVER_SIDE)
        s.ip("route", "add", "default", "via", SERVER_ROUTER_LAN)
        if self.server_nat == "one-to-one":
            sr.iptables("-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-d", SERVER_PUBLIC,
                        "-j", "DNAT", "--to-destination", SERVER_PRIVATE)
            sr.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-s", SERVER_PRIVATE,
                        "-j", "SNAT", "--to-source", SERVER_PUBLIC)
        else:  # a load balancer: only forward()ed ports reach the server
            sr.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")

    def forward(self, protocol: str, port: int, to_port: int | None = None) -> None:
        """`server_nat="ports"`: forward SERVER_PUBLIC:port to the server (to_port there)."""
        if self.server_router is None or self.server_nat != "ports":
            raise LabError("forward() is for a lab with server_nat='ports'")
        self.server_router.iptables(
            "-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-d", SERVER_PUBLIC, "-p", protocol,
            "--dport", str(port), "-j", "DNAT", "--to-destination", f"{SERVER_PRIVATE}:{to_port or port}")

    # -- conditions -------------------------------------------------------------------------
    def block_udp(self, blocked: bool = True) -> None:
        """The client's router drops every UDP packet it would forward (a corporate firewall
        that lets only TCP out)."""
        if blocked == self.udp_blocked:
            return
        self.router.iptables("-I" if blocked else "-D", "FORWARD", "-p", "udp", "-j", "DROP")
        self.udp_blocked = blocked

    def udp_drops(self) -> int:
        """Packets the UDP block has dropped so far."""
        out = self.router.iptables("-L", "FORWARD", "-v", "-x", "-n").stdout
        return sum(int(line.split()[0]) for line in out.splitlines()[2:]
                   if line.split()[2:4] == ["DROP", "udp"] or line.split()[2:4] == ["DROP", "17"])

    def impair(self, up: Impairment | None = None, down: Impairment | None = None,
               seed: int | None = None) -> None:
        """Put the relay between client and server side: `up` for client → server packets,
        `down` for server → client. `impair()` with neither takes it away again."""
        w = self.wan
        if (up is not None or down is not None) and (reason := unavailable(relay=True)):
            raise LabError(reason)
        self._stop_relay()
        if up is None and down is None:
            if self.impairment is not None:
                for table, ifname in ((100, "cli0"), (101, "srv0")):
                    w.ip("rule", "del", "iif", ifname, "lookup", str(table), check=False)
            self.impairment = None
            return
        up, down = up or Impairment(), down or Impairment()
        if self.impairment is None:
            for table, ifname, tun in ((100, "cli0", "tup"), (101, "srv0", "tdown")):
                if w.ip("link", "show", tun, check=False).returncode != 0:
                    w.ip("tuntap", "add", "dev", tun, "mode", "tun")
                    w.ip("link", "set", tun, "up")
                    w.ip("route", "add", "default", "dev", tun, "table", str(table))
                w.ip("rule", "add", "iif", ifname, "lookup", str(table))
        argv = [sys.executable, "-m", "tests.netlab.relay", "--up", "tup", "--down", "tdown",
                *up.args("up"), *down.args("down")]
        if seed is not None:
            argv += ["--seed", str(seed)]
        self.relay = w.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._relay_lines = []
        threading.Thread(target=self._read_relay, args=(self.relay,), daemon=True).start()
        self._wait_relay(lambda lines: any(line.get("ready") for line in lines), "start")
        self.impairment = (up, down)

    def _read_relay(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            with self._relay_event:
                self._relay_lines.append(parsed)
                self._relay_event.notify_all()

    def _wait_relay(self, check: Callable[[list[dict[str, Any]]], bool], what: str,
                    timeout: float = 10) -> None:
        with self._relay_event:
            if not self._relay_event.wait_for(lambda: check(self._relay_lines) or self.relay.poll() is not None,
                                              timeout):
                raise LabError(f"the relay did not {what} within {timeout} s")
        if not check(self._relay_lines):
            raise LabError(f"the relay exited: {self.relay.stderr.read()}")

    def relay_counters(self) -> dict[str, Any]:
        """The relay's counters now: per direction received/lost/overflowed/sent, and its CPU."""
        if self.relay is None or self.relay.poll() is not None:
            raise LabError("no relay is running")
        seen = len(self._relay_lines)
        self.relay.send_signal(signal.SIGUSR1)
        self._wait_relay(lambda lines: len(lines) > seen, "report")
        return self._relay_lines[-1]

    def _stop_relay(self) -> None:
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            try:
                self.relay.wait(5)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                self.relay.wait()
        self.relay = None

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        self._stop_relay()
        for ns in self.namespaces:
            ns.stop_processes()
        for ns in self.namespaces:
            if (NETNS_DIR / ns.name).exists():
                _delete_namespace(ns.name)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self in _live:
            _live.remove(self)


def _close_all() -> None:
    for lab in list(_live):
        lab.close()
