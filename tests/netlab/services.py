"""What runs in the lab: the real gateway (local spawner, agents inherit its namespace), a real
coturn (Debian's), the lab viewer process, and a self-signed certificate for HTTPS/TURNS."""
from __future__ import annotations


import contextlib

import datetime
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.procs import cmdline, descendants
from tests.netlab.lab import NetLab, Namespace

TOKEN = "lab-token"
TURN_SECRET = "lab-turn-secret"
LIGHT_APP = "sleep 3600"  # a real process on the session's display that needs no GIMP
# An iptables rule with no target: it only counts mDNS queries leaving a namespace.
MDNS_COUNTER = ("OUTPUT", "-p", "udp", "-d", "224.0.0.251", "--dport", "5353")


def mdns_queries(lab: NetLab) -> int:
    """mDNS queries the server namespace sent (MDNS_COUNTER must be in place)."""
    out = lab.server.iptables("-L", "OUTPUT", "-v", "-x", "-n").stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if "224.0.0.251" in line)


def self_signed(directory: Path, addresses: list[str], names: list[str] = ("lab.test",)) -> tuple[Path, Path]:
    """(cert.pem, key.pem): a self-signed certificate for these IP addresses and names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without what the loopback tests set for themselves."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "AGENT_")) and k not in ("SSL_CERT_FILE",)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(extra)
    return env


def wait_tcp(ns: Namespace, address: str, port: int, timeout: float = 30) -> None:
    def attempt() -> bool:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return True
        except OSError:
            return False
    deadline = time.monotonic() + timeout
    while not ns.call(attempt):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {address}:{port} in {ns.role}")
        time.sleep(0.1)


@dataclass
class LabGateway:
    """`python -m gateway` (local spawner, token auth) in the lab's server namespace."""

    lab: NetLab
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    tls: bool = True
    port: int = 8443
    app: str = LIGHT_APP
    size: str = "1280x720"
    proc: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)
    cert: Path | None = None
    key: Path | None = None

    @property
    def url(self) -> str:
        """The gateway as users reach it: the server's public address."""
        return f"{'https' if self.tls else 'http'}://{self.lab.server_public}:{self.port}"

    def start(self, timeout: float = 60) -> LabGateway:
        data = self.lab.tmp / f"gateway-{self.port}"
        data.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "gateway", "--host", "0.0.0.0", "--port", str(self.port),
                "--data-dir", str(data), "--token", TOKEN, "--app-gimp", self.app,
                "--session-size", self.size, "--stop-grace", "2", "--idle-check-interval", "1",
                "--start-timeout", "150"]
        if self.tls:
            if self.cert is None:
                self.cert, self.key = self_signed(self.lab.tmp, [self.lab.server_public, self.lab.server.address])
            argv += ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]
        self.proc = self.lab.server.popen([*argv, *self.args], env=clean_env(**self.env),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read_stdout() -> None:
            for line in self.proc.stdout:
                if line.startswith("Gateway ready"):
                    ready.set()
        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        if not ready.wait(timeout):
            raise AssertionError(f"gateway did not start: {''.join(self.log)[-3000:]}")
        return self

    def api(self, method: str, path: str, body: Any = None, ns: Namespace | None = None) -> tuple[int, Any]:
        status, payload, _ = (ns or self.lab.client).http(
            method, self.url + path, body=body, headers={"Authorization": f"Bearer {TOKEN}"},
            cafile=str(self.cert) if self.tls else None)
        return status, payload

    def start_session(self, application: str = "gimp", timeout: float = 180) -> str:
        status, body = self.api("POST", "/api/sessions", {"application": application})
        assert status in (200, 201), body
        deadline = time.monotonic() + timeout
        while body.get("phase") == "pending" and time.monotonic() < deadline:
            time.sleep(0.25)
            _, body = self.api("GET", f"/api/sessions/{body['id']}")
        assert body.get("phase") == "running", (body, "".join(self.log)[-3000:])
        return body["id"]

    def agent_of(self, session_id: str) -> tuple[int, str]:
        """(pid, X display) of a session's agent."""
        for pid in descendants(self.proc.pid):
            argv = cmdline(pid)
            if argv[1:3] == ["-m", "session_agent"] and "--display" in argv:
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"SESSION_ID={session_id}".encode() in environ:
                    return pid, argv[argv.index("--display") + 1]
        raise AssertionError(f"no agent found for session {session_id}")

    @contextlib.contextmanager
    def x_cookie(self, session_id: str) -> Iterator[None]:
        """XAUTHORITY set to the session's cookie while X connections are made in the block
        (python-xlib reads it when it connects)."""
        old = os.environ.get("XAUTHORITY")
        os.environ["XAUTHORITY"] = self.xauthority_of(session_id)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("XAUTHORITY", None)
            else:
                os.environ["XAUTHORITY"] = old

    def xauthority_of(self, session_id: str) -> str:
        """The session display's cookie file: its X server admits no client without it."""
        pid, _ = self.agent_of(session_id)
        argv = cmdline(pid)
        return argv[argv.index("--xauthority") + 1]

    def agent_log(self, session_id: str) -> list[dict[str, Any]]:
        path = self.lab.tmp / f"gateway-{self.port}" / "sessions" / f"{session_id}.log"
        lines = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


DEPLOY_COTURN = Path(__file__).resolve().parents[2] / "deploy" / "base" / "coturn.yaml"


def deploy_coturn() -> tuple[list[str], list[tuple[str, int, int]]]:
    """From deploy/base/coturn.yaml: the coturn container's arguments, and its Service's ports
    as (protocol, port, container port)."""
    import yaml
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(DEPLOY_COTURN.read_text())}
    container = docs[("Deployment", "coturn")]["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    ports = [(p["protocol"].lower(), p["port"], named.get(p["targetPort"], p["targetPort"]))
             for p in docs[("Service", "coturn")]["spec"]["ports"]]
    return list(container["args"]), ports


def deployed_turn_urls(host: str) -> str:
    """The three URL forms the gateway advertises for the deployed coturn (gateway.yaml), on the
    ports its Service exposes."""
    ports = {(proto, target): port for proto, port, target in deploy_coturn()[1]}
    return (f"turn:{host}:{ports['udp', 3478]}?transport=udp,turn:{host}:{ports['tcp', 3478]}?transport=tcp,"
            f"turns:{host}:{ports['tcp', 5349]}?transport=tcp")


def expose_deployed_turn(lab: NetLab) -> None:
    """The lab's server router forwards what coturn's LoadBalancer Service exposes, and nothing more."""
    for proto, port, target in deploy_coturn()[1]:
        lab.forward(proto, port, target)


@dataclass
class Coturn:
    """Debian's coturn (`turnserver`) with TURN REST credentials (use-auth-secret)."""

    lab: NetLab
    ns: Namespace
    address: str
    port: int = 3478
    tls_port: int | None = None
    relay_ports: tuple[int, int] = (49152, 49251)
    stun_only: bool = False
    cert: Path | None = None
    key: Path | None = None
    proc: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)

    deploy_args: list[str] | None = None  # run with deploy/base/coturn.yaml's arguments

    @classmethod
    def as_deployed(cls, lab: NetLab, ns: Namespace, address: str, cert: Path, key: Path) -> Coturn:
        """coturn with the arguments of deploy/base/coturn.yaml, the pod's values filled in: its
        address for $(POD_IP), the lab's secret, certificate and a scratch directory."""
        args, _ = deploy_coturn()
        scratch = lab.tmp / "coturn"
        scratch.mkdir(exist_ok=True)
        filled = [a.replace("$(POD_IP)", address).replace("$(TURN_SECRET)", TURN_SECRET)
                  .replace("/etc/coturn/tls/tls.crt", str(cert)).replace("/etc/coturn/tls/tls.key", str(key))
                  .replace("/var/lib/coturn", str(scratch)) for a in args]
        return cls(lab, ns, address, tls_port=5349, deploy_args=filled)

    def start(self) -> Coturn:
        if self.deploy_args is not None:
            return self._run(["turnserver", "-n", f"--listening-ip={self.address}", *self.deploy_args])
        argv = ["turnserver", "-n", "--log-file=stdout", "--simple-log", "--no-cli",
                f"--listening-ip={self.address}", f"--listening-port={self.port}",
                f"--pidfile={self.lab.tmp / f'turnserver-{self.port}.pid'}", "--fingerprint",
                "--no-multicast-peers"]
        if self.stun_only:
            argv += ["--stun-only", "--no-tls", "--no-dtls"]
        else:
            argv += [f"--relay-ip={self.address}", f"--min-port={self.relay_ports[0]}",
                     f"--max-port={self.relay_ports[1]}", "--use-auth-secret",
                     f"--static-auth-secret={TURN_SECRET}", "--realm=lab.test", "--no-dtls",
                     f"--userdb={self.lab.tmp / f'turndb-{self.port}'}"]
            if self.tls_port:
                argv += [f"--tls-listening-port={self.tls_port}", f"--cert={self.cert}", f"--pkey={self.key}"]
            else:
                argv += ["--no-tls"]
        return self._run(argv)

    def _run(self, argv: list[str]) -> Coturn:
        self.proc = self.ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True).start()
        wait_tcp(self.ns, self.address, self.port)
        if self.tls_port:
            wait_tcp(self.ns, self.address, self.tls_port)
        return self


@dataclass
class ViewerProcess:
    """tests/netlab/viewer.py running in a namespace (the client's)."""

    proc: subprocess.Popen
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def start(cls, ns: Namespace, url: str, *args: str, cafile: Path | None = None) -> ViewerProcess:
        env = clean_env(**({"SSL_CERT_FILE": str(cafile)} if cafile else {}))
        proc = ns.popen([sys.executable, "-m", "tests.netlab.viewer", url, "--token", TOKEN, *args],
                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, bufsize=1)
        viewer = cls(proc)
        threading.Thread(target=viewer._read, daemon=True).start()
        threading.Thread(target=lambda: viewer.stderr.extend(proc.stderr), daemon=True).start()
        return viewer

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if e.get("event") in (kind, "error")), None)
        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self.proc.poll() is not None, timeout)
            event = found()
        if event is None or event.get("event") == "error":
            raise AssertionError(f"viewer: no {kind!r} event: {event} {self.events[-3:]} "
                                 f"{''.join(self.stderr)[-2000:]}")
        return event

    def outcome(self, timeout: float = 60) -> dict[str, Any]:
        """The first `connected` or `error` event (an error is not raised here)."""
        with self._changed:
            self._changed.wait_for(lambda: self._first(("connected", "error")) is not None
                                   or self.proc.poll() is not None, timeout)
            event = self._first(("connected", "error"))
        return event or {"event": "error", "error": f"no outcome; {''.join(self.stderr)[-1000:]}"}

    def _first(self, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") in kinds), None)

    def frames(self) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e.get("event") == "frame"]

    def send(self, message: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30, quit: bool = True) -> dict[str, Any]:
        """Its summary: now (`quit`), or once its `--seconds` are over."""
        if quit:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
        summary = self.wait("summary", timeout)
        self.proc.wait(timeout)
        return summary

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
