"""WebRTC across real network conditions, with an aiortc viewer in the client namespace and the
real gateway (HTTPS, local spawner) and agents in the server namespace: the viewer gets
frames and its input lands on the session's X display (RECORD).

- through a masquerading NAT, with a browser-shaped offer whose host candidates are `.local`
  names: it connects, and no mDNS query leaves the agent;
- at 40 ms RTT and 1 % loss each way, under full-screen motion: the stream keeps playing,
  lost packets are asked again (NACK) and retransmitted;
- with all UDP dropped by the client's firewall: TURN over TCP and over TLS on 443 relay it
  (coturn run with deploy/base/coturn.yaml's arguments, behind a load balancer that forwards
  what its Service exposes, relaying on its private address), and without TURN nothing connects;
- a server behind a 1:1 NAT: announcing the public address (`AGENT_ICE_ADDRESSES` given to
  the gateway reaches its agents) or learning it from STUN connects; neither does not.
"""
from __future__ import annotations

import os

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.gateway.xrecord import XRecorder
from tests.netlab import Impairment, NetLab
from tests.netlab.lab import SERVER_PRIVATE, WAN_SERVER_SIDE
from tests.netlab.services import (MDNS_COUNTER, TURN_SECRET, Coturn, LabGateway, ViewerProcess, deployed_turn_urls,
                                   expose_deployed_turn, mdns_queries)

@contextmanager
def viewer(gw: LabGateway, session: str, *args: str) -> Iterator[ViewerProcess]:
    process = ViewerProcess.start(gw.lab.client, f"{gw.url}/streaming/{session}/whep", *args, cafile=gw.cert)
    try:
        yield process
    finally:
        process.kill()


def click_lands(gw: LabGateway, session: str, v: ViewerProcess, at: tuple[int, int]) -> None:
    """A click sent on the viewer's input channel is pressed on X at that point."""
    with gw.x_cookie(session):
        recorder = XRecorder(gw.agent_of(session)[1])
    try:
        v.send({"type": "pointer", "x": at[0], "y": at[1]})
        v.send({"type": "button", "button": 1, "down": True})
        v.send({"type": "button", "button": 1, "down": False})
        press = recorder.next_press("button", 30)
        assert (press.detail, press.x, press.y) == (1, *at)
    finally:
        recorder.close()


# -- a user behind a NAT, the server on a public address -----------------------------------

@pytest.fixture(scope="module")
def nat() -> Iterator[tuple[NetLab, LabGateway, str]]:
    with NetLab() as lab:
        lab.server.iptables("-I", *MDNS_COUNTER)  # counts only
        gw = LabGateway(lab).start()
        yield lab, gw, gw.start_session()


def test_webrtc_through_a_nat_with_mdns_candidates_answers_without_asking_mdns(nat) -> None:
    lab, gw, session = nat
    # The counter counts: a query sent here from the server's side is seen.
    def query() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\0" * 12, ("224.0.0.251", 5353))
    lab.server.call(query)
    assert mdns_queries(lab) == 1

    with viewer(gw, session, "--mdns") as v:
        connected = v.wait("connected")
        # The offer told the agent no address it could use (its one host candidate was a
        # .local name): the agent learned the viewer's from its checks, through the NAT.
        assert connected["pair"]["remote"].startswith(f"host {lab.server_public}:")
        click_lands(gw, session, v, (321, 123))
        summary = v.finish()
    assert summary["frames"] > 0
    assert mdns_queries(lab) == 1  # the agent sent none
    offers = [line for line in gw.agent_log(session) if line.get("action") == "peer_created"]
    assert offers, gw.agent_log(session)[-5:]


@pytest.mark.relay
def test_the_stream_keeps_playing_at_40ms_rtt_and_1_percent_loss(nat) -> None:
    lab, gw, session = nat
    lab.impair(Impairment(delay_ms=20, loss=0.01), Impairment(delay_ms=20, loss=0.01), seed=3)
    painter = subprocess.Popen([sys.executable, "-m", "tests.netlab.painter", gw.agent_of(session)[1], "20"],
                               env={**os.environ, "XAUTHORITY": gw.xauthority_of(session)})
    try:
        with viewer(gw, session, "--seconds", "12") as v:
            v.wait("connected")
            click_lands(gw, session, v, (640, 360))
            summary = v.finish(60, quit=False)
        counters = lab.relay_counters()
    finally:
        painter.kill()
        painter.wait()
        lab.impair()
    assert counters["down"]["lost"] > 0  # the path really lost packets...
    assert summary["nacked"] > 0 and summary["retransmitted"] > 0  # ...and they were asked again
    assert summary["frames"] > 100  # and it kept playing (fps and freezes: bench/network.py)


# -- all UDP blocked: TURN over TCP and TLS ------------------------------------------------

@pytest.fixture(scope="module")
def blocked() -> Iterator[tuple[NetLab, LabGateway, Coturn, str]]:
    # The server side is the cluster of deploy/: behind a load balancer that forwards the
    # gateway's port and what coturn's Service exposes; coturn runs with the Deployment's own
    # arguments and relays on its private (pod) address, which agents reach directly.
    with NetLab(server_nat="ports") as lab:
        lab.forward("tcp", 8443)
        expose_deployed_turn(lab)
        urls = deployed_turn_urls(lab.server_public)
        gw = LabGateway(lab, args=("--turn-urls", urls, "--turn-secret", TURN_SECRET)).start()
        turn = Coturn.as_deployed(lab, lab.server, SERVER_PRIVATE, gw.cert, gw.key).start()
        session = gw.start_session()
        lab.block_udp()
        yield lab, gw, turn, session


@pytest.mark.parametrize("url", ["3478?transport=tcp", "turns:"])
def test_with_udp_blocked_turn_over_tcp_relays_the_stream(blocked, url: str) -> None:
    lab, gw, turn, session = blocked
    drops = lab.udp_drops()
    with viewer(gw, session, "--ice-servers", "--only-url", url) as v:
        connected = v.wait("connected")
        assert connected["pair"]["local"].startswith(f"relay {SERVER_PRIVATE}:")
        click_lands(gw, session, v, (100, 200))
        assert v.finish()["frames"] > 0
    assert lab.udp_drops() > drops  # the viewer did try UDP, and the firewall dropped it


def test_with_udp_blocked_and_no_turn_webrtc_cannot_connect(blocked) -> None:
    lab, gw, turn, session = blocked
    with viewer(gw, session, "--timeout", "6") as v:
        assert v.outcome(60)["event"] == "error"


# -- the server behind a 1:1 NAT -----------------------------------------------------------

@pytest.fixture(scope="module")
def one_to_one() -> Iterator[NetLab]:
    with NetLab(server_nat="one-to-one") as lab:
        yield lab


@pytest.mark.parametrize("how", ["announced", "stun", "neither"])
def test_a_server_behind_a_1to1_nat(one_to_one: NetLab, how: str) -> None:
    lab = one_to_one
    env, port = {}, {"announced": 8443, "stun": 8444, "neither": 8445}[how]
    if how == "announced":
        env = {"AGENT_ICE_ADDRESSES": lab.server_public}  # given to the gateway, reaches its agents
    elif how == "stun":
        Coturn(lab, lab.wan, WAN_SERVER_SIDE, stun_only=True).start()  # on the internet side
        env = {"AGENT_STUN_SERVER": f"{WAN_SERVER_SIDE}:3478"}
    gw = LabGateway(lab, env=env, port=port).start()
    session = gw.start_session()
    if how == "stun":
        async def learned() -> None:
            while not any(line.get("action") == "ice_public_address" for line in gw.agent_log(session)):
                await asyncio.sleep(0.1)
        asyncio.run(asyncio.wait_for(learned(), 30))
    with viewer(gw, session, "--timeout", "8") as v:
        outcome = v.outcome(60)
        if how == "neither":
            assert outcome["event"] == "error"  # only the private address was offered
            return
        assert outcome["event"] == "connected", outcome
        assert outcome["pair"]["remote"].startswith(f"srflx {lab.server_public}:")
        click_lands(gw, session, v, (10, 20))
