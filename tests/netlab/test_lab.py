"""The lab itself: packets arrive, the NAT rewrites the source, nothing routes out, the UDP
block blocks (and only UDP), the relay delays, drops and caps, and teardown leaves nothing.
Timing figures of the lab (RTT, loss rate, throughput, relay CPU) are in bench/network.py;
these tests assert function."""
from __future__ import annotations

import math
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.netlab import Impairment, NetLab, lab_namespaces, sweep_stale, unavailable
from tests.netlab.lab import CLIENT, CLIENT_PUBLIC, NETNS_DIR, SERVER_PRIVATE, WAN_SERVER_SIDE
from tests.netlab.probe import Echo, tcp_echo, udp_rtts


def root_state() -> tuple[str, str, str]:
    """The root namespace's interfaces, routes and rules: the lab must never change them."""
    return tuple(subprocess.run(argv, capture_output=True, text=True).stdout
                 for argv in (["ip", "-br", "link"], ["ip", "route", "show", "table", "all"], ["ip", "rule"]))


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    before = root_state()
    with NetLab() as built:
        assert root_state() == before
        yield built


@pytest.fixture(scope="module")
def echo(lab: NetLab) -> Iterator[Echo]:
    with Echo(lab.server, lab.server.address) as server:
        yield server


def test_packets_cross_the_nat_with_the_routers_address(lab: NetLab, echo: Echo) -> None:
    rtts = udp_rtts(lab.client, lab.server.address, count=10)
    assert all(r is not None for r in rtts)
    # The server sees the router's public address, not the client's own.
    assert {host for host, _ in echo.sources} == {CLIENT_PUBLIC}
    assert tcp_echo(lab.client, lab.server.address, payload=b"through the nat") == b"through the nat"


def test_the_server_cannot_reach_the_client_behind_its_nat(lab: NetLab) -> None:
    with pytest.raises(OSError):
        lab.server.call(lambda: socket.create_connection((CLIENT, 9), timeout=2).close())


@pytest.mark.parametrize("role", ["client", "router", "wan", "server"])
def test_no_namespace_has_a_route_out_of_the_lab(lab: NetLab, role: str) -> None:
    ns = getattr(lab, role)
    # The root namespace's own address and an internet address: unreachable from inside.
    for address in ("192.0.2.2", "8.8.8.8"):
        def attempt() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((address, 53))
                s.send(b"x")
                s.settimeout(0.5)
                s.recv(1)
        with pytest.raises(OSError):
            ns.call(attempt)
    routes = ns.ip("route", "show", "table", "all").stdout
    assert "192.0.2." not in routes.replace("192.0.2.0/24", "")


def test_udp_block_drops_udp_and_lets_tcp_through(lab: NetLab, echo: Echo) -> None:
    lab.block_udp()
    try:
        assert udp_rtts(lab.client, lab.server.address, count=5, wait_s=0.5) == [None] * 5
        assert lab.udp_drops() >= 5
        assert tcp_echo(lab.client, lab.server.address) == b"ping"
    finally:
        lab.block_udp(False)
    assert all(r is not None for r in udp_rtts(lab.client, lab.server.address, count=5))


@pytest.mark.relay
def test_the_relay_delays_every_packet_both_ways(lab: NetLab, echo: Echo) -> None:
    lab.impair(Impairment(delay_ms=25), Impairment(delay_ms=15))
    try:
        rtts = udp_rtts(lab.client, lab.server.address, count=20)
        counters = lab.relay_counters()
    finally:
        lab.impair()
    assert all(r is not None and r >= 40 for r in rtts), rtts  # no packet skips the queue
    assert counters["up"]["sent"] >= 20 and counters["down"]["sent"] >= 20


@pytest.mark.relay
def test_the_relay_drops_the_configured_share(lab: NetLab, echo: Echo) -> None:
    loss, count = 0.2, 400
    lab.impair(Impairment(loss=loss), Impairment(loss=loss), seed=7)
    try:
        rtts = udp_rtts(lab.client, lab.server.address, count=count, interval_s=0.002)
        counters = lab.relay_counters()
    finally:
        lab.impair()
    up, down = counters["up"], counters["down"]
    for direction in (up, down):
        n = direction["received"]
        sigma = math.sqrt(n * loss * (1 - loss))
        assert abs(direction["lost"] - n * loss) < 4 * sigma, direction
    # Every probe that did not come back is one the relay dropped (the lab loses nothing else).
    assert sum(r is None for r in rtts) == up["lost"] + down["lost"]


@pytest.mark.relay
def test_the_rate_cap_queues_then_drops_a_burst(lab: NetLab, echo: Echo) -> None:
    lab.impair(Impairment(), Impairment(rate_kbit=1000, queue_ms=100))
    try:
        # 200 echoes of 1,200 bytes at once: 1.9 Mbit back, ten times what the cap and its
        # 100 ms queue hold.
        rtts = udp_rtts(lab.client, lab.server.address, count=200, interval_s=0, size=1200, wait_s=1)
        counters = lab.relay_counters()
    finally:
        lab.impair()
    down = counters["down"]
    assert down["overflowed"] > 0 and down["sent"] < down["received"]
    assert sum(r is not None for r in rtts) == down["sent"]


@pytest.mark.relay
def test_a_relay_that_dies_passes_nothing(lab: NetLab, echo: Echo) -> None:
    """Fail closed: without the relay the impaired path is cut, never silently unimpaired."""
    lab.impair(Impairment(delay_ms=5), Impairment(delay_ms=5))
    try:
        lab.relay.kill()
        lab.relay.wait()
        assert udp_rtts(lab.client, lab.server.address, count=5, wait_s=0.5) == [None] * 5
    finally:
        lab.impair()
    assert all(r is not None for r in udp_rtts(lab.client, lab.server.address, count=5))


def test_one_to_one_nat_maps_the_public_address_both_ways() -> None:
    with NetLab(server_nat="one-to-one") as lab, Echo(lab.server, SERVER_PRIVATE) as echo:
        assert all(r is not None for r in udp_rtts(lab.client, lab.server_public, count=5))
        assert {host for host, _ in echo.sources} == {CLIENT_PUBLIC}
        # What the server sends out leaves from the public address.
        with Echo(lab.wan, WAN_SERVER_SIDE) as internet:
            assert all(r is not None for r in udp_rtts(lab.server, WAN_SERVER_SIDE, count=3))
        assert {host for host, _ in internet.sources} == {lab.server_public}


def test_teardown_removes_everything_even_when_the_test_fails() -> None:
    before = set(lab_namespaces())
    with pytest.raises(RuntimeError):
        with NetLab() as lab:
            mine = [ns.name for ns in lab.namespaces]
            sleeper = lab.server.popen(["sleep", "600"])
            relay = None
            if unavailable(relay=True) is None:
                lab.impair(Impairment(delay_ms=1))
                relay = lab.relay
            raise RuntimeError("the test failed")
    assert not set(mine) & set(lab_namespaces())
    assert set(lab_namespaces()) <= before
    assert sleeper.poll() is not None and (relay is None or relay.poll() is not None)
    assert not lab.tmp.exists()


def test_the_sweep_removes_labs_of_runs_that_were_killed() -> None:
    # A namespace named for a process that no longer exists, as a killed run leaves it.
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"gsp-{dead.pid}-1-c"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    time.sleep(0.01)
    live = f"gsp-{os.getpid()}-999-c"  # this run's own: kept
    subprocess.run(["ip", "netns", "add", live], check=True)
    try:
        removed = sweep_stale()
        assert stale in removed and live not in removed
        assert not (NETNS_DIR / stale).exists() and (NETNS_DIR / live).exists()
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
