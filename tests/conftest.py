from __future__ import annotations

import os

import aioice.ice
import pytest

from tests.xserver import Xvfb, start_xvfb

# Everything in tests stays on loopback: WebRTC media included. aioice skips 127.0.0.1 when it
# gathers host candidates, so the test process's peers and every agent the tests start
# (which inherit AGENT_ICE_ADDRESSES) are told to use it.
os.environ["AGENT_ICE_ADDRESSES"] = "127.0.0.1"
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


@pytest.fixture
def xvfb() -> Xvfb:
    server = start_xvfb()
    yield server
    server.stop()
