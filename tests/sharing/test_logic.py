"""The pure parts of sharing: share tokens and records, the floor's state machine, the viewer
registry's expiry timer and the X-Viewer-* headers."""
from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway import shares
from session_agent.floor import Floor
from session_agent.viewers import HeaderError, Viewer, ViewerRegistry, identity_from_headers


def test_tokens_are_random_and_only_their_digest_is_kept():
    share, token = shares.new_share("view", 60, 1000.0)
    other, other_token = shares.new_share("view", 60, 1000.0)
    assert len(token) == 43 and token != other_token and share.id != other.id
    assert token not in str(share.record()) and token not in str(share.public())
    assert shares.find((share, other), token, 1000.0) is share
    assert shares.find((share, other), other_token, 1059.0) is other
    assert shares.find((share, other), token, 1060.0) is None  # expired
    assert shares.find((share,), token + "x", 1000.0) is None
    for junk in ("", "é" * 10, "a" * 500, None, 5):
        assert shares.find((share,), junk, 1000.0) is None  # type: ignore[arg-type]
    assert shares.from_records([s.record() for s in (share, other)]) == (share, other)


@given(st.lists(st.one_of(st.dictionaries(st.text(max_size=10), st.one_of(
    st.integers(), st.text(max_size=70), st.booleans(), st.none())), st.integers(), st.text())))
def test_stored_shares_of_any_shape_never_raise(records):
    for share in shares.from_records(records):
        assert share.role in shares.ROLES and len(share.token_hash) == 64


@pytest.mark.parametrize("body, message", [
    (None, "JSON object"), ({}, "role"), ({"role": "owner"}, "role"),
    ({"role": "view", "expires_in": 0}, "expires_in"), ({"role": "view", "expires_in": True}, "expires_in"),
    ({"role": "view", "expires_in": 604801}, "expires_in"), ({"role": "view", "label": "x"}, "unknown"),
])
def test_bad_create_bodies_say_what_is_wrong(body, message):
    with pytest.raises(shares.ShareError, match=message):
        shares.parse_create(body)


def test_create_defaults_to_a_day():
    assert shares.parse_create({"role": "control"}) == ("control", 86400)
    assert shares.parse_create({"role": "view", "expires_in": 604800}) == ("view", 604800)


KINDS = ("press", "release", "move", "wheel", "clipboard", "resize", "other")
PEERS = {"o": "owner", "a": "control", "b": "control", "v": "view"}


class FloorMachine(RuleBasedStateMachine):
    """Random input from an owner, two control guests and a view-only guest: what each holds
    is modelled; the floor must never let two participants hold at once, never refuse a
    release, never let a view-only guest act, and obey the owner's exclusive switch."""

    @initialize()
    def start(self):
        self.floor = Floor()
        self.held: dict[str, int] = {p: 0 for p in PEERS}  # how many keys/buttons each holds

    @rule(peer=st.sampled_from(sorted(PEERS)), kind=st.sampled_from(KINDS))
    def act(self, peer, kind):
        role = PEERS[peer]
        refusal = self.floor.refusal(peer, role, kind, "X")
        if role == "view":
            assert (refusal is None) == (kind == "other")
        if kind == "release" and role != "view" and not (self.floor.exclusive and role != "owner"):
            assert refusal is None
        if self.floor.exclusive and role != "owner":
            assert (refusal is None) == (kind == "other")
        if refusal is None:
            if kind == "press":
                self.held[peer] += 1
            elif kind == "release" and self.held[peer]:
                self.held[peer] -= 1
            self.floor.update(peer, self.held[peer] > 0)

    @rule(exclusive=st.booleans())
    def owner_switch(self, exclusive):
        holder = self.floor.holder
        if self.floor.set_exclusive(exclusive, PEERS[holder] if holder else None):
            self.held[holder] = 0  # the caller releases what the guest held
            self.floor.leave(holder)

    @rule(peer=st.sampled_from(sorted(PEERS)))
    def leave(self, peer):
        self.held[peer] = 0
        self.floor.leave(peer)

    @invariant()
    def one_holder_at_most(self):
        holding = [p for p, n in self.held.items() if n]
        assert len(holding) <= 1
        assert self.floor.holder == (holding[0] if holding else None)
        if self.floor.exclusive and self.floor.holder:
            assert PEERS[self.floor.holder] == "owner"


TestFloor = FloorMachine.TestCase
TestFloor.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_headers_describe_the_viewer_and_bad_ones_are_refused():
    assert identity_from_headers({}).role == "owner"
    who = identity_from_headers({"X-Viewer-Role": "view", "X-Viewer-Share": "sh12",
                                 "X-Viewer-Label": "guest%20%E2%9C%93", "X-Viewer-Expires": "4000000000"})
    assert (who.role, who.share, who.label, who.expires_at) == ("view", "sh12", "guest ✓", 4e9)
    for headers in ({"X-Viewer-Role": "root"}, {"X-Viewer-Role": "view"},
                    {"X-Viewer-Role": "view", "X-Viewer-Share": "a b"},
                    {"X-Viewer-Role": "view", "X-Viewer-Share": "s", "X-Viewer-Expires": "soon"},
                    {"X-Viewer-Role": "view", "X-Viewer-Share": "s", "X-Viewer-Expires": "10"}):
        with pytest.raises(HeaderError):
            identity_from_headers(headers)
    assert identity_from_headers({"X-Viewer-Label": "\x00\x07"}).label == "owner"


async def test_the_registry_closes_each_viewer_at_its_expiry_with_one_timer():
    registry = ViewerRegistry()
    closed: list[tuple[str, float]] = []
    ending: list[tuple[str, str]] = []
    registry.on_ending(lambda v, why: ending.append((v.peer, why)))
    start = time.monotonic()

    def viewer(peer, share=None, expires=None):
        async def close():
            closed.append((peer, time.monotonic() - start))
        return Viewer(peer, "view" if share else "owner", "ws", time.time(), share, peer,
                      expires, close)

    registry.add(viewer("owner"))
    registry.add(viewer("a", "s1", time.time() + 0.3))
    registry.add(viewer("b", "s1", time.time() + 0.6))
    registry.add(viewer("c", "s2", time.time() + 60))
    deadline = time.monotonic() + 10
    while len(closed) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [p for p, _ in closed] == ["a", "b"] and ending == [("a", "expired"), ("b", "expired")]
    assert closed[0][1] >= 0.25 and closed[1][1] >= 0.55  # never before its share expires
    assert await registry.disconnect_share("s2") == 1 and ending[-1] == ("c", "revoked")
    assert await registry.disconnect_share("s2") == 0
    assert [v.peer for v in registry.list()] == ["owner"]
    registry.close()
