"""The input protocol through the real agent: aiortc client, WHEP, `input` data channel."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.input.agent import AgentClient
from tests.input.recorder import Recorder
from tests.xserver import Xvfb


@pytest.fixture
def agent(xvfb: Xvfb) -> Iterator[AgentClient]:
    client = AgentClient(xvfb.display)
    yield client
    client.close()


def test_input_reaches_x_and_resize_changes_the_decoded_frames(agent: AgentClient, xvfb: Xvfb) -> None:
    recorder = Recorder(xvfb.display)
    try:
        agent.wait_for(lambda: agent.frame_size == (1280, 720))
        agent.send({"type": "pointer", "x": 321, "y": 123})
        agent.send({"type": "key", "code": "KeyQ", "key": "q", "down": True})
        agent.send({"type": "key", "code": "KeyQ", "key": "q", "down": False})
        agent.send({"type": "ping", "t": 1})
        agent.wait_for(lambda: {"type": "pong", "t": 1} in agent.got)
        agent.run(recorder.wait_for(lambda seen: recorder.typed() == "q"))
        assert any((s.kind, s.x, s.y) == ("motion", 321, 123) for s in recorder.seen)

        agent.send({"type": "resize", "width": 801, "height": 600})
        agent.wait_for(lambda: {"type": "resized", "width": 800, "height": 600} in agent.got)
        agent.wait_for(lambda: agent.frame_size == (800, 600))
    finally:
        recorder.close()
