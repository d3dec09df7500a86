"""No lost work: viewers of an idle session are warned before it ends, and input keeps it."""
from __future__ import annotations


import pytest

from gateway.idle import idle_policy
from tests.gateway.conftest import LIGHT_APP, REAL_AGENT, eventually, user
from tests.whep_client import Viewer


@pytest.mark.parametrize("idle, peers, warned, end, notice", [
    (10, 1, False, False, None),        # plenty of time
    (55, 1, False, False, "warning"),   # within the last 60 s, somebody watches: warn
    (55, 0, False, False, None),        # nobody to warn
    (56, 1, True, False, None),         # warned already
    (5, 1, True, False, "cancel"),      # used again after the warning: it stays
    (120, 1, True, True, None),         # the timeout: end
    (120, 0, False, True, None),
])
def test_idle_policy(idle, peers, warned, end, notice):
    step = idle_policy(idle, peers, timeout=100, warning=60, warned=warned)
    assert step.end is end
    if notice is None:
        assert step.notice is None
    elif notice == "cancel":
        assert step.notice["cancel"] is True
    else:
        assert step.notice["level"] == "warning" and step.notice["seconds"] == 45
        assert "45 s" in step.notice["message"] and "not saved" in step.notice["message"]


def test_the_warning_is_never_more_than_half_the_timeout():
    assert idle_policy(3, 1, timeout=10, warning=60, warned=False).notice is None
    assert idle_policy(6, 1, timeout=10, warning=60, warned=False).notice["seconds"] == 4


async def test_an_idle_viewer_is_warned_input_keeps_the_session_and_silence_ends_it(gateway):
    client = await gateway(auth="jwt", agent_command=REAL_AGENT, app_commands={"gimp": LIGHT_APP},
                           idle_check_interval=0.3, idle_warning=3.0)
    alice = user("alice")
    r = await client.post("/api/sessions", json={"application": "gimp", "timeout": 8}, headers=alice)
    sid = (await r.json())["id"]
    await eventually(lambda: _phase(client, sid, alice, "running"))
    viewer = Viewer(str(client.make_url("")), headers=alice)
    try:
        await viewer.connect(f"/streaming/{sid}/whep")
        warning = await viewer.receive("notice", timeout=30)
        assert warning["level"] == "warning" and warning["reason"] == "idle"
        assert 1 <= warning["seconds"] <= 3
        viewer.send({"type": "pointer", "x": 5, "y": 5})  # the user is back
        cancel = await viewer.receive("notice", timeout=30)
        assert cancel.get("cancel") is True
        assert await _phase(client, sid, alice, "running")
        # Then nobody touches it again: warned once more, then it ends.
        assert (await viewer.receive("notice", timeout=30))["level"] == "warning"
        await eventually(lambda: _gone(client, sid, alice), timeout=30)
    finally:
        await viewer.close()


async def _phase(client, sid, headers, wanted):
    r = await client.get(f"/api/sessions/{sid}", headers=headers)
    return r.status == 200 and (await r.json())["phase"] == wanted


async def _gone(client, sid, headers):
    return (await client.get(f"/api/sessions/{sid}", headers=headers)).status == 404
