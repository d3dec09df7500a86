"""The lock across gateway replicas: Session names derived from (user, application), and the
races between replicas staged on purpose (the fake API server holds requests at a Gate), so
that every path of KubernetesSpawner.create runs: the name taken by an active Session (its
Session is the answer), by an ending one (the next name), two creates under different names
(one stays, or both withdraw and walk again), and two creates over the per-user limit."""
from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Config
from gateway.kube import fields, objects
from gateway.kube.client import SESSIONS, Kube
from gateway.spawners.base import SessionExists, SessionRequest, SpawnerRefused
from gateway.spawners.kubernetes import KubernetesSpawner, session_names
from tests.kube.conftest import NAMESPACE, TOKEN_KEY
from tests.kube.fakeapi import FakeKube

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
Start = Callable[..., Awaitable[KubernetesSpawner]]


@given(user=st.text(min_size=1, max_size=300), app=st.sampled_from(objects.APPLICATIONS))
def test_names_are_labels_that_carry_a_hash_of_the_exact_user_id(user: str, app: str) -> None:
    names = session_names(user, app)
    digest = hashlib.sha256(user.encode()).hexdigest()[:32]
    assert len(set(names)) == len(names) >= 2
    for name in names:
        assert DNS_LABEL.match(name) and digest in name and app in name


def test_names_differ_for_ids_that_look_alike() -> None:
    users = ["Alice", "alice", "alice ", "alice@x.org", "alice-x-org", "ALICE@X.ORG", "a" * 300]
    first = {session_names(u, "gimp")[0] for u in users}
    assert len(first) == len(users)  # user_label would merge some of these; names do not
    assert session_names("alice", "gimp")[0] != session_names("alice", "inkscape")[0]


@pytest.fixture
async def spawners(kubeconfig: Path) -> AsyncIterator[Start]:
    started: list[KubernetesSpawner] = []

    async def start(limit: int = 3) -> KubernetesSpawner:
        spawner = KubernetesSpawner(Config(spawner="kubernetes", namespace=NAMESPACE,
                                           agent_token_key=TOKEN_KEY,
                                           max_sessions_per_user=limit))
        await spawner.start()
        started.append(spawner)
        return spawner

    yield start
    for spawner in started:
        await spawner.close()


def request(app: str = "gimp", user: str = "u") -> SessionRequest:
    return SessionRequest(user=user, application=app)


async def outcome(task: asyncio.Task) -> tuple[str, str]:
    """("created" | "exists" | "refused", session id or message)."""
    try:
        return "created", (await task).id
    except SessionExists as exc:
        return "exists", exc.session.id
    except SpawnerRefused as exc:
        return "refused", str(exc)


def active(api: FakeKube) -> list[str]:
    return sorted(s["metadata"]["name"] for s in api.objects("sessions", NAMESPACE)
                  if fields.active(s))


async def end(kube: Kube, api: FakeKube, name: str, finish: bool = False) -> None:
    """Delete a Session; it stays `terminating` (its finalizer: no controller here) unless
    `finish`, which does what the controller does once the pod is gone."""
    await kube.delete(SESSIONS, name)
    if finish:
        await kube.patch(SESSIONS, name, {"metadata": {"finalizers": []}})
        assert api.get("sessions", NAMESPACE, name) is None


async def test_an_ending_session_moves_the_next_one_to_the_next_name(
        api: FakeKube, kube: Kube, spawners: Start) -> None:
    spawner = await spawners()
    names = session_names("u", "gimp")
    first = await spawner.create(request())
    assert first.id == names[0]
    with pytest.raises(SessionExists) as exc:  # a second create: the same session
        await spawner.create(request())
    assert exc.value.session.id == names[0]
    for i in range(1, len(names)):
        await end(kube, api, names[i - 1])
        assert (await spawner.create(request())).id == names[i]  # at once, not refused
    await end(kube, api, names[-1])
    with pytest.raises(SpawnerRefused) as refused:  # every name is still ending
        await spawner.create(request())
    assert refused.value.retry_after and "still ending" in str(refused.value)
    await end(kube, api, names[1], finish=True)
    assert (await spawner.create(request())).id == names[1]  # a freed name is used again


async def test_two_replicas_one_name(api: FakeKube, spawners: Start) -> None:
    a, b = await spawners(), await spawners()
    gate = api.hold("POST", "/sessions")
    first = asyncio.create_task(a.create(request()))
    second = asyncio.create_task(b.create(request()))
    await gate.arrivals(2)
    gate.release()
    results = sorted([await outcome(first), await outcome(second)])
    assert results == [("created", session_names("u", "gimp")[0]),
                       ("exists", session_names("u", "gimp")[0])]
    assert active(api) == [session_names("u", "gimp")[0]]


async def test_racing_creates_under_two_names_leave_one(api: FakeKube, kube: Kube,
                                                        spawners: Start) -> None:
    """The earlier session is just going away: one replica saw it (and took the next name),
    the other did not (and took the first). Both create, both see the other, both withdraw,
    both walk again and meet at one name."""
    names = session_names("u", "gimp")
    a, b = await spawners(), await spawners()
    await a.create(request())
    await end(kube, api, names[0])
    gate = api.hold("POST", "/sessions")
    first = asyncio.create_task(a.create(request()))  # sees names[0] ending: names[1]
    await gate.arrivals(1)
    await kube.patch(SESSIONS, names[0], {"metadata": {"finalizers": []}})  # it is gone now
    second = asyncio.create_task(b.create(request()))  # sees nothing: names[0]
    await gate.arrivals(2)
    gate.release()
    results = [await outcome(first), await outcome(second)]
    assert active(api) == [names[2]]
    assert sorted(kind for kind, _ in results) == ["created", "exists"]
    assert {sid for _, sid in results} == {names[2]}


async def test_a_rival_that_stays_is_the_answer(api: FakeKube, kube: Kube,
                                                spawners: Start) -> None:
    """Same start, but one replica finished before the other created: it saw no rival and
    kept its session; the later one sees it, withdraws its own and answers with it."""
    names = session_names("u", "gimp")
    a, b = await spawners(), await spawners()
    await a.create(request())
    await end(kube, api, names[0])
    gate = api.hold("POST", "/sessions")
    first = asyncio.create_task(a.create(request()))
    await gate.arrivals(1)
    await kube.patch(SESSIONS, names[0], {"metadata": {"finalizers": []}})
    second = asyncio.create_task(b.create(request()))
    await gate.arrivals(2)
    gate.release(1)  # the first replica's create, alone: it sees no rival
    assert await outcome(first) == ("created", names[1])
    gate.release()
    assert await outcome(second) == ("exists", names[1])
    assert active(api) == [names[1]]


async def test_racing_creates_over_the_limit_are_both_refused(api: FakeKube,
                                                              spawners: Start) -> None:
    a, b = await spawners(limit=1), await spawners(limit=1)
    gate = api.hold("POST", "/sessions")
    first = asyncio.create_task(a.create(request("gimp")))
    second = asyncio.create_task(b.create(request("inkscape")))
    await gate.arrivals(2)
    gate.release()
    results = [await outcome(first), await outcome(second)]
    assert [kind for kind, _ in results] == ["refused", "refused"]  # never 2 (documented)
    assert active(api) == []
    assert len(api.objects("sessions", NAMESPACE)) == 2  # both withdrawn, ending
    # Calmly, one at a time: fine (the withdrawn one still ends: the next name).
    assert (await a.create(request("gimp"))).id == session_names("u", "gimp")[1]
    with pytest.raises(SpawnerRefused, match="you already have 1 sessions"):
        await b.create(request("blender"))


async def test_a_name_held_by_another_users_session_is_skipped(api: FakeKube, kube: Kube,
                                                               spawners: Start) -> None:
    """Never in practice (128 bits of hash), but a Session made by hand at a user's name must
    not become that user's session."""
    name = session_names("u", "gimp")[0]
    await kube.create(SESSIONS, objects.session_manifest(name, "mallory", "gimp"))
    session = await (await spawners()).create(request())
    assert session.id == session_names("u", "gimp")[1] and session.user == "u"
