"""The agent's ICE policy, installed once at start (aiortc and aioice have no setting for it):

- host candidates only on the local addresses `--ice-addresses` names (default: all but
  loopback);
- every other address it names, and the public address a `--stun-server` reports, is
  *announced*: each host candidate also goes out as a server-reflexive candidate on that
  address and the same port, which is what a 1:1 NAT (a cloud VM's public IP, a DNAT router)
  makes of it — the browser's checks reach the agent there;
- no STUN while answering. aiortc would otherwise ask stun.l.google.com during every offer's
  gathering: a round trip to the internet in each answer, up to 5 s where DNS or UDP is
  blocked (a session pod's egress is), and a request to a third party per viewer. The STUN
  server, when configured, is asked in the background instead, at start and every few minutes.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable, Sequence

import aioice.ice
import ifaddr
from aioice import stun
from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import RTCIceCandidate
from aiortc.rtcicetransport import RTCIceGatherer

from .config import AgentConfig

log = logging.getLogger(__name__)

STUN_REFRESH_S = 300.0  # how often the public address is asked again
STUN_RETRY_S = 30.0  # after a failure
STUN_TIMEOUTS_S = (0.5, 1.0, 2.0)  # one Binding request each


def local_addresses() -> set[str]:
    """Every address of this host's interfaces (loopback included)."""
    found = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return found


def split_addresses(addresses: Iterable[str], local: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(addresses to gather on, addresses to announce): an address of this host is one to
    gather on, any other one is a public address to announce."""
    bind, announce = [], []
    for address in addresses:
        (bind if address in local else announce).append(address)
    return tuple(bind), tuple(announce)


def announced_candidates(candidates: Sequence[RTCIceCandidate], public: Sequence[str]) -> list[RTCIceCandidate]:
    """Server-reflexive twins of the UDP host candidates on each public address (same family,
    same port, the host candidate as related address), after the candidates themselves."""
    extra = []
    for address in public:
        version = ipaddress.ip_address(address).version
        for c in candidates:
            if (c.type != "host" or c.protocol.lower() != "udp" or c.ip == address
                    or ipaddress.ip_address(c.ip).version != version):
                continue
            extra.append(RTCIceCandidate(
                component=c.component, foundation=candidate_foundation("srflx", "udp", c.ip),
                ip=address, port=c.port, priority=candidate_priority(c.component, "srflx"),
                protocol="udp", type="srflx", relatedAddress=c.ip, relatedPort=c.port))
    return [*candidates, *extra]


def stun_public_address(server: tuple[str, int], bind: str = "0.0.0.0") -> str | None:
    """The address `server` sees this host's UDP packets come from (blocking; None: no answer)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(server[0], server[1], socket.AF_INET, socket.SOCK_DGRAM)[0]
    except OSError:
        return None
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, 0))
        for timeout in STUN_TIMEOUTS_S:
            try:
                sock.sendto(bytes(request), address)
                sock.settimeout(timeout)
                while True:
                    data, _ = sock.recvfrom(2048)
                    try:
                        reply = stun.parse_message(data)
                    except ValueError:
                        continue
                    if reply.transaction_id == request.transaction_id:
                        mapped = reply.attributes.get("XOR-MAPPED-ADDRESS") or reply.attributes.get("MAPPED-ADDRESS")
                        return mapped[0] if mapped else None
            except socket.timeout:
                continue
            except OSError:
                return None
    return None


class IcePolicy:
    """What `install` put in place: the addresses it gathers on and announces."""

    def __init__(self, bind: tuple[str, ...], announce: tuple[str, ...],
                 stun_server: tuple[str, int] | None) -> None:
        self.bind = bind
        self.static = announce
        self.learned: str | None = None  # from STUN
        self.stun_server = stun_server
        self._stop = threading.Event()

    @property
    def announced(self) -> tuple[str, ...]:
        extra = (self.learned,) if self.learned and self.learned not in self.static else ()
        return self.static + extra

    def learn(self) -> None:
        """Ask the STUN server now; an address of this host itself means no NAT: nothing to add."""
        bind = next((a for a in self.bind if ipaddress.ip_address(a).version == 4), "0.0.0.0")
        address = stun_public_address(self.stun_server, bind) if self.stun_server else None
        if address is not None and address in local_addresses():
            address = None
        if address != self.learned:
            log.info("public address from STUN %s: %s", self.stun_server[0], address or "none (no NAT, or no answer)",
                     extra={"action": "ice_public_address"})
        self.learned = address

    def _refresh(self) -> None:
        while not self._stop.is_set():
            try:
                self.learn()
            except Exception:  # a background helper must never end the agent
                log.exception("STUN query failed", extra={"action": "ice_stun_failed"})
            self._stop.wait(STUN_REFRESH_S if self.learned else STUN_RETRY_S)

    def start(self) -> None:
        if self.stun_server:
            threading.Thread(target=self._refresh, name="stun", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def install(config: AgentConfig) -> IcePolicy:
    """Apply the agent's ICE settings to aiortc/aioice for this process."""
    bind, announce = split_addresses(config.ice_addresses, local_addresses())
    policy = IcePolicy(bind, announce, config.stun_server)
    if bind:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(bind)
    RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])
    gather = RTCIceGatherer.getLocalCandidates
    RTCIceGatherer.getLocalCandidates = lambda self: announced_candidates(gather(self), policy.announced)
    policy.start()
    log.info("ICE: host candidates on %s; announced: %s; STUN: %s", ", ".join(bind) or "every address",
             ", ".join(announce) or "none", ":".join(map(str, config.stun_server)) if config.stun_server else "none",
             extra={"action": "ice_policy"})
    return policy
