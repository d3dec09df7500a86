"""Shares in Kubernetes mode live on the Session resource: two gateway replicas (the real app
on the real kubernetes spawner, as the gateway's ServiceAccount held to deploy/'s RBAC) against
the fake API server, which validates every write against the CRD schema from deploy/."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.auth import SHARE_COOKIE
from gateway.config import Config
from gateway.http import REGISTRY
from gateway.kube.client import Kube, connect
from gateway.shares import digest
from tests.kube import rbac
from tests.kube.conftest import NAMESPACE, TOKEN_KEY, eventually
from tests.kube.fakeapi import FakeKube

TOKEN = "replica-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def replicas(api: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aiohttp_client):
    api.enforce(rbac.roles())
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "gw", NAMESPACE, rbac.GATEWAY)))
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    config = Config(host="127.0.0.1", port=0, spawner="kubernetes", namespace=NAMESPACE,
                    token=TOKEN, agent_token_key=TOKEN_KEY)
    clients = [await aiohttp_client(create_app(config)) for _ in range(2)]
    yield clients
    assert api.denied == []  # the gateway's Role allows everything sharing does


def grant_of(response) -> str:
    for cookie in response.headers.getall("Set-Cookie", []):
        m = re.match(rf"{SHARE_COOKIE}=([^;]+)", cookie)
        if m:
            return m.group(1)
    raise AssertionError("no share cookie")


async def test_a_share_made_on_one_replica_works_and_is_revoked_on_the_other(api: FakeKube, replicas):
    a, b = replicas
    r = await a.post("/api/sessions", json={"application": "gimp"}, headers=AUTH)
    sid = (await r.json())["id"]
    made = await (await a.post(f"/api/sessions/{sid}/shares", json={"role": "view"}, headers=AUTH)).json()
    token = made["url"].split("share=")[1]
    # Stored on the Session: the digest, never the token.
    stored = api.get("sessions", NAMESPACE, sid)["spec"]["shares"]
    assert [s["id"] for s in stored] == [made["id"]] and stored[0]["tokenHash"] == digest(token)
    assert token not in str(api.get("sessions", NAMESPACE, sid))
    # Replica B knows the share from its own cache of Sessions.
    await eventually(lambda: b.app[REGISTRY].spawner.get(sid).shares)
    opened = await b.get(made["url"], allow_redirects=False)
    assert opened.status == 303
    grant = grant_of(opened)
    b.session.cookie_jar.clear()
    for replica in (a, b):
        got = await replica.get(f"/api/sessions/{sid}", headers={"Cookie": f"{SHARE_COOKIE}={grant}"})
        assert got.status == 200
        assert (await replica.get(f"/api/sessions/{sid}/shares",
                                  headers={"Cookie": f"{SHARE_COOKIE}={grant}"})).status == 403
    # Revoked on B: A refuses the grant as soon as its cache has the change.
    assert (await b.delete(f"/api/sessions/{sid}/shares/{made['id']}", headers=AUTH)).status == 204
    assert api.get("sessions", NAMESPACE, sid)["spec"].get("shares") == []

    await eventually(lambda: not a.app[REGISTRY].spawner.get(sid).shares)
    r = await a.get(f"/api/sessions/{sid}", headers={"Cookie": f"{SHARE_COOKIE}={grant}"})
    assert r.status == 401
    assert (await a.get(made["url"], allow_redirects=False)).status == 401


async def test_shares_made_at_once_on_both_replicas_are_all_kept(api: FakeKube, replicas):
    a, b = replicas
    sid = (await (await a.post("/api/sessions", json={"application": "gimp"}, headers=AUTH)).json())["id"]
    await eventually(lambda: b.app[REGISTRY].spawner.get(sid) is not None)
    answers = await asyncio.gather(*(
        (a, b)[i % 2].post(f"/api/sessions/{sid}/shares", json={"role": ("view", "control")[i % 2]},
                           headers=AUTH) for i in range(12)))
    assert [r.status for r in answers] == [201] * 12
    ids = {(await r.json())["id"] for r in answers}
    # Optimistic concurrency: no replica's write overwrote another's.
    assert {s["id"] for s in api.get("sessions", NAMESPACE, sid)["spec"]["shares"]} == ids

    await eventually(lambda: {s.id for s in b.app[REGISTRY].spawner.get(sid).shares} == ids)
    r = await b.get(f"/api/sessions/{sid}/shares", headers=AUTH)
    assert {s["id"] for s in (await r.json())["shares"]} == ids


async def test_the_crd_refuses_a_share_record_of_another_shape(api: FakeKube, kubeconfig: Path):
    kube = Kube(await connect(), NAMESPACE)
    try:
        from gateway.kube.client import KubeError, SESSIONS
        from gateway.kube.objects import session_manifest
        await kube.create(SESSIONS, session_manifest("s1", "alice", "gimp"))
        for bad in ({"id": "x", "role": "admin", "tokenHash": "0" * 64, "expiresAt": 1},
                    {"id": "x", "role": "view", "tokenHash": "short", "expiresAt": 1},
                    {"id": "x", "role": "view", "tokenHash": "0" * 64}):
            with pytest.raises(KubeError) as err:
                await kube.patch(SESSIONS, "s1", {"spec": {"shares": [bad]}})
            assert err.value.status == 422
    finally:
        await kube.close()


async def test_in_kubernetes_mode_a_guest_on_one_replica_is_disconnected_by_a_revoke_on_the_other(
        api: FakeKube, kubeconfig: Path, aiohttp_client):
    """Real pods' agents (the simulated kubelet runs real session agents): the guest watches
    through replica B, is view-only at the agent, and is disconnected by a revoke on replica A."""
    from dataclasses import replace

    from gateway.controller.settings import ControllerSettings
    from gateway.kube.objects import PodSettings
    from gateway.spawners.kubernetes import KubernetesSpawner
    from tests.agent_process import free_port
    from tests.kube.kubelet import FakeKubelet
    from tests.whep_client import Viewer

    kubelet = FakeKubelet(api, agents=True)
    try:
        port = free_port()
        apps = []
        for controller in (True, False):
            config = Config(host="127.0.0.1", port=0, spawner="kubernetes", namespace=NAMESPACE,
                            controller=controller, token=TOKEN, start_timeout=120,
                            agent_token_key=TOKEN_KEY)
            apps.append(await aiohttp_client(create_app(config, KubernetesSpawner(config, replace(
                ControllerSettings(), pod=replace(PodSettings(), agent_port=port))))))
        a, b = apps
        sid = (await (await a.post("/api/sessions", json={"application": "gimp"}, headers=AUTH)).json())["id"]
        for replica in apps:
            await eventually(lambda: replica.app[REGISTRY].spawner.route(sid), timeout=120)
        made = await (await a.post(f"/api/sessions/{sid}/shares", json={"role": "view"}, headers=AUTH)).json()
        await eventually(lambda: b.app[REGISTRY].spawner.get(sid).shares)
        grant = grant_of(await b.get(made["url"], allow_redirects=False))
        b.session.cookie_jar.clear()
        guest = Viewer(str(b.make_url("/")), headers={"Cookie": f"{SHARE_COOKIE}={grant}"})
        await guest.connect(f"/streaming/{sid}/whep")
        try:
            assert (await guest.receive("control", timeout=30))["role"] == "view"
            guest.send({"type": "button", "button": 1, "down": True})
            assert "view-only" in (await guest.receive("error"))["message"]
            viewers = (await (await a.get(f"/api/sessions/{sid}/viewers", headers=AUTH)).json())["viewers"]
            assert [(v["role"], v.get("share")) for v in viewers] == [("view", made["id"])]
            assert (await a.delete(f"/api/sessions/{sid}/shares/{made['id']}", headers=AUTH)).status == 204
            assert (await guest.receive("disconnect", timeout=10))["reason"] == "revoked"
        finally:
            await guest.close(delete=False)
    finally:
        await kubelet.close()
