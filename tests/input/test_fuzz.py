"""Random and malformed messages never break a channel: each one gets at most one reply, and
afterwards `ping` is still answered and typing still works."""
from __future__ import annotations

import json
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_agent.input.session import InputSession
from tests.input.agent import AgentClient
from tests.input.recorder import Peer, Recorder
from tests.input.strategies import raw_messages
from tests.xserver import Xvfb

BATCHES = settings(max_examples=150, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
batches = st.lists(raw_messages, min_size=10, max_size=20)


async def test_channel_survives_random_messages(session: InputSession, recorder: Recorder) -> None:
    peer = Peer()
    ch = session.channel(peer.send)
    sent = 0

    @BATCHES
    @given(batches)
    def throw(batch: list[str | bytes]) -> None:
        nonlocal sent
        before = len(peer.got)
        for raw in batch:
            ch.on_message(raw)
        sent += len(batch)
        assert len(peer.got) - before <= len(batch)  # never more than one reply per message
        assert all(m["type"] in ("error", "pong") for m in peer.got[before:] if m["type"] != "resized")
        ch.on_message(json.dumps({"type": "ping", "t": sent}))
        assert peer.got[-1] == {"type": "pong", "t": sent}

    throw()
    assert sent >= 1000
    ch.close()  # releases whatever the random keys and buttons left down
    typist = session.channel(Peer().send)
    for down in (True, False):
        typist.on_message(json.dumps({"type": "key", "code": "KeyZ", "key": "z", "down": down}))
    await recorder.wait_for(lambda seen: recorder.typed().endswith("z"))


@pytest.fixture
def fast_agent(xvfb: Xvfb) -> Iterator[AgentClient]:
    # the default rate limit would (rightly) refuse a test's flood; it has its own test
    client = AgentClient(xvfb.display, rate=1e6)
    yield client
    client.close()


# aiortc's thread uses the `random` module while hypothesis draws, which it warns about
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_agent_over_webrtc_survives_random_messages(fast_agent: AgentClient) -> None:
    agent = fast_agent
    sent = 0

    @BATCHES
    @given(batches)
    def throw(batch: list[str | bytes]) -> None:
        nonlocal sent
        for raw in batch:
            agent.send(raw)
        sent += len(batch)
        agent.send({"type": "ping", "t": sent})
        agent.wait_for(lambda: {"type": "pong", "t": sent} in agent.got)

    throw()
    assert sent >= 1000
