from __future__ import annotations

from typing import AsyncIterator, Iterator

import pytest

from session_agent.input.session import InputSession
from tests.input.recorder import Recorder
from tests.xserver import Xvfb


@pytest.fixture
async def session(xvfb: Xvfb) -> AsyncIterator[InputSession]:
    # a rate far above any test's pace: the limit itself has its own test
    s = InputSession(xvfb.display, rate=1e6, burst=1e6)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def recorder(xvfb: Xvfb) -> Iterator[Recorder]:
    r = Recorder(xvfb.display)
    yield r
    r.close()
