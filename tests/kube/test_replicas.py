"""Several gateway replicas (the HPA runs 2 to 20) keep "one session per user and application"
and the per-user limit, with the API server as the lock: two real `python -m gateway
--spawner kubernetes` processes against the fake API server over HTTP, many concurrent
creates for one user split over both."""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.kube import fields, objects
from tests.faults.gateway_process import GatewayProcess
from tests.kube.conftest import NAMESPACE, TOKEN_KEY
from tests.kube.fakeapi import FakeKube

Start = Callable[..., Awaitable[list[GatewayProcess]]]
SEED = 20261202


@pytest.fixture
async def replicas(api: FakeKube, kubeconfig: Path, tmp_path: Path) -> AsyncIterator[Start]:
    started: list[GatewayProcess] = []

    async def start(*extra: str) -> list[GatewayProcess]:
        env = {"KUBECONFIG": str(kubeconfig), "GATEWAY_AGENT_TOKEN_KEY": TOKEN_KEY}
        args = ("--spawner", "kubernetes", "--namespace", NAMESPACE, "--create-limit", "0",
                *extra)
        gateways = [GatewayProcess(tmp_path / f"gw{i}", args, env) for i in range(2)]
        started.extend(gateways)
        # In threads: this loop serves the fake API server they connect to while they start.
        await asyncio.gather(*(asyncio.to_thread(g.start) for g in gateways))
        return gateways

    yield start
    await asyncio.gather(*(asyncio.to_thread(g.stop) for g in started))


def active(api: FakeKube) -> list[dict]:
    return [s for s in api.objects("sessions", NAMESPACE) if fields.active(s)]


async def burst(gateways: list[GatewayProcess], apps: list[str]) -> list[tuple[int, dict]]:
    """One POST per entry of `apps`, all at once, alternating between the gateways."""
    return await asyncio.gather(*(
        gateways[i % len(gateways)].call("POST", "/api/sessions", json={"application": app})
        for i, app in enumerate(apps)))


async def test_fifty_concurrent_creates_make_one_session(api: FakeKube, replicas: Start) -> None:
    gateways = await replicas()
    answers = await burst(gateways, ["gimp"] * 50)
    statuses = Counter(status for status, _ in answers)
    assert statuses == {201: 1, 200: 49}, answers
    assert len({body["id"] for _, body in answers}) == 1
    (session,) = api.objects("sessions", NAMESPACE)
    assert session["metadata"]["name"] == answers[0][1]["id"]
    assert session["spec"] == {"userId": "local", "application": "gimp", "timeout": 3600}
    # Both replicas now answer with it, from their caches.
    for gateway in gateways:
        status, body = await gateway.call("GET", "/api/sessions")
        assert status == 200 and [s["id"] for s in body["sessions"]] == [session["metadata"][
            "name"]]


async def test_per_user_limit_holds_across_replicas(api: FakeKube, replicas: Start) -> None:
    gateways = await replicas("--max-sessions-per-user", "2")
    api.unreliable(seed=SEED, slow_rate=1.0, slow_s=0.05)  # widen every window for races
    answers = await burst(gateways, [objects.APPLICATIONS[i % 3] for i in range(48)])
    assert {status for status, _ in answers} <= {200, 201, 409}, answers
    refused = [body for status, body in answers if status == 409]
    assert refused and all("you already have 2 sessions" in b["error"] for b in refused)
    assert 1 <= len(active(api)) <= 2  # never over the limit (both may refuse: docs)
    served = {body["id"] for status, body in answers if status in (200, 201)}
    assert served and served <= {s["metadata"]["name"] for s in api.objects("sessions",
                                                                             NAMESPACE)}
    # Whatever was created over the limit was withdrawn at once, by its own replica.
    for session in api.objects("sessions", NAMESPACE):
        assert fields.active(session) or session["metadata"].get("deletionTimestamp")
    # Later, calmly: the limit still holds, an existing session is still the answer.
    keep = active(api)[0]
    status, body = await gateways[1].call("POST", "/api/sessions",
                                          json={"application": keep["spec"]["application"]})
    assert (status, body["id"]) == (200, keep["metadata"]["name"])
