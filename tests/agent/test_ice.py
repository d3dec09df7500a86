"""The agent's ICE settings: `.local` candidates left out of offers, public addresses announced
for a 1:1 NAT, no STUN while answering, and the flags that set them. The lab (tests/netlab)
runs all of it across real NATs; these are the pure parts and aiortc's own view of them."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from aiortc import RTCIceCandidate

from session_agent.config import parse_args
from session_agent.ice import announced_candidates, split_addresses
from session_agent.media.negotiation import without_mdns_candidates

# The shape of Chromium's offer (Chromium 120+ over a NAT: one mDNS host candidate per section).
CHROMIUM_OFFER = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=video 45850 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0",
    "a=candidate:3921657350 1 udp 2113937151 43059925-98e9-4179-bb2b-db6ecbed406d.local 45850 typ host generation 0 network-cost 999",
    "a=candidate:1 1 udp 1677729535 203.0.113.10 45850 typ srflx raddr 0.0.0.0 rport 0 generation 0",
    "a=ice-ufrag:X+V+", "a=ice-pwd:/rNtV9z0pIisuJsePGyCKtoj", "a=mid:0",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0",
    "a=candidate:3921657350 1 udp 2113937151 43059925-98e9-4179-bb2b-db6ecbed406d.local 45851 typ host generation 0",
    "a=end-of-candidates", "a=mid:1", ""])


def test_offers_lose_their_mdns_candidates_and_nothing_else():
    out = without_mdns_candidates(CHROMIUM_OFFER)
    # The data channel's section is left with no candidate: the peer's address is still to
    # come (from its checks), so its end-of-candidates goes too.
    assert out.split("\r\n") == [l for l in CHROMIUM_OFFER.split("\r\n")
                                  if ".local " not in l and l != "a=end-of-candidates"]
    assert "203.0.113.10 45850 typ srflx" in out and out.endswith("\r\n")
    # A section that keeps a candidate keeps its end-of-candidates.
    both = CHROMIUM_OFFER.replace("a=mid:0", "a=end-of-candidates\r\na=mid:0")
    assert without_mdns_candidates(both).count("a=end-of-candidates") == 1


def test_an_offer_without_mdns_candidates_is_unchanged():
    sdp = CHROMIUM_OFFER.replace("43059925-98e9-4179-bb2b-db6ecbed406d.local", "198.51.100.10")
    assert without_mdns_candidates(sdp) == sdp
    assert without_mdns_candidates(sdp.replace("\r\n", "\n")) == sdp.replace("\r\n", "\n")
    # A name that merely contains "local" is not an mDNS name.
    odd = sdp.replace("198.51.100.10", "localhost.example")
    assert without_mdns_candidates(odd) == odd


def host(ip: str, port: int, protocol: str = "udp") -> RTCIceCandidate:
    return RTCIceCandidate(component=1, foundation="f", ip=ip, port=port, priority=2130706431,
                           protocol=protocol, type="host")


def test_public_addresses_are_announced_as_reflexive_twins_of_the_host_candidates():
    candidates = [host("198.51.100.130", 40000), host("10.1.0.5", 40001), host("fd00::5", 40002)]
    out = announced_candidates(candidates, ["203.0.113.80"])
    assert out[:3] == candidates
    extra = out[3:]
    assert [(c.ip, c.port, c.type, c.relatedAddress, c.relatedPort) for c in extra] == [
        ("203.0.113.80", 40000, "srflx", "198.51.100.130", 40000),
        ("203.0.113.80", 40001, "srflx", "10.1.0.5", 40001)]  # IPv4 only for an IPv4 address
    assert all(c.priority < candidates[0].priority for c in extra)  # below host, as srflx is
    assert announced_candidates(candidates, []) == candidates
    # An address that is already a host candidate's is not repeated.
    assert announced_candidates([host("203.0.113.80", 1)], ["203.0.113.80"]) == [host("203.0.113.80", 1)]


def test_ice_addresses_split_into_local_ones_and_announced_ones():
    assert split_addresses(["127.0.0.1", "203.0.113.80", "10.0.0.2"], {"127.0.0.1", "10.0.0.2"}) == (
        ("127.0.0.1", "10.0.0.2"), ("203.0.113.80",))


def test_ice_flags(monkeypatch):
    monkeypatch.setenv("AGENT_STUN_SERVER", "stun:turn.example.com:3479")
    config = parse_args(["--ice-addresses", "203.0.113.80, 10.0.0.2"])
    assert config.ice_addresses == ("203.0.113.80", "10.0.0.2")
    assert config.stun_server == ("turn.example.com", 3479)
    assert parse_args(["--stun-server", "192.0.2.1"]).stun_server == ("192.0.2.1", 3478)
    assert parse_args(["--stun-server", "[2001:db8::1]:3478"]).stun_server == ("2001:db8::1", 3478)
    monkeypatch.delenv("AGENT_STUN_SERVER")
    assert parse_args([]).stun_server is None


@pytest.mark.parametrize("args, fragment", [
    (["--ice-addresses", "gateway.example.com"], "invalid ICE address"),
    (["--stun-server", "host:99999"], "invalid STUN server"),
    (["--stun-server", ":3478"], "invalid STUN server"),
])
def test_invalid_ice_flags_are_one_line_errors(args, fragment):
    result = subprocess.run([sys.executable, "-m", "session_agent", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr


def test_installed_policy_as_aiortc_applies_it():
    """aiortc with the policy installed (its own process: install() sets process-wide state):
    no STUN server to ask while gathering, host candidates where told, the public address
    announced in the SDP."""
    script = textwrap.dedent("""
        import asyncio, json
        from aiortc import RTCPeerConnection
        from session_agent import ice
        from session_agent.config import parse_args
        ice.install(parse_args(["--ice-addresses", "127.0.0.1,203.0.113.80"]))
        async def main():
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            gatherer = pc.getTransceivers()[0].sender.transport.transport.iceGatherer
            lines = [l for l in pc.localDescription.sdp.splitlines() if l.startswith("a=candidate:")]
            print(json.dumps({"stun": gatherer._connection.stun_server, "candidates": lines}))
            await pc.close()
        asyncio.run(main())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["stun"] is None  # aiortc's default (stun.l.google.com) is gone
    fields = [line.split() for line in out["candidates"]]
    hosts = [f for f in fields if f[7] == "host"]
    assert [f[4] for f in hosts] == ["127.0.0.1"]
    (srflx,) = [f for f in fields if f[7] == "srflx"]
    assert srflx[4] == "203.0.113.80" and srflx[5] == hosts[0][5]  # same port: a 1:1 NAT keeps it
    assert srflx[8:12] == ["raddr", "127.0.0.1", "rport", hosts[0][5]]
