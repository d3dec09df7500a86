"""The gateway and the controller work with exactly the permissions deploy/base/rbac.yaml grants
(the fake API server enforces each ServiceAccount's Role), and neither can read a Secret: the
users' cloud credentials live in Secrets of the same namespace."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config import Config
from gateway.controller.service import Controller
from gateway.kube import objects
from gateway.kube.client import PODS, SECRETS, SESSIONS, Kube, KubeError, connect
from gateway.spawners.base import Phase, SessionRequest
from gateway.spawners.kubernetes import KubernetesSpawner
from tests.agent_process import free_port
from tests.kube import rbac
from tests.kube.conftest import FAST, NAMESPACE, TOKEN_KEY, eventually
from tests.kube.fakeapi import FakeKube
from tests.kube.kubelet import FakeKubelet

CLOUD = {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": objects.rclone_secret_name("carol")},
         "stringData": {"rclone.conf": "[cloud]\ntype = s3\nsecret_access_key = hunter2\n"}}


async def as_identity(api: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      identity: str) -> Kube:
    """A client with `identity`'s credentials, loaded the standard way (KUBECONFIG)."""
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / identity, NAMESPACE, identity)))
    return Kube(await connect(), NAMESPACE)


@pytest.fixture
async def health() -> AsyncIterator[int]:
    """The "agents" of the simulated pods: /health with no viewer."""
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "peers": 0})

    app = web.Application()
    app.router.add_get("/health", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_components_need_no_more_than_their_roles(
        api: FakeKube, kubelet: FakeKubelet, kube: Kube, health: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    api.enforce(rbac.roles())
    await kube.create(SECRETS, CLOUD)  # the admin's: a user's cloud credentials
    controller_kube = await as_identity(api, tmp_path, monkeypatch, rbac.CONTROLLER)
    controller = Controller(controller_kube, replace(
        FAST, identity="controller-0", cloud_storage=True, warm_pool={"inkscape": 1},
        pod=replace(FAST.pod, agent_port=health)))
    await controller.start()
    await as_identity(api, tmp_path, monkeypatch, rbac.GATEWAY)  # KUBECONFIG for the spawner
    gateway = KubernetesSpawner(Config(spawner="kubernetes", namespace=NAMESPACE,
                                       agent_token_key=TOKEN_KEY))
    kiosk = KubernetesSpawner(Config(spawner="kubernetes", namespace=NAMESPACE,
                                     agent_token_key=TOKEN_KEY, ephemeral=True))
    try:
        await gateway.start()
        await kiosk.start()
        await eventually(lambda: len(controller.warm_pool.ready("inkscape")) == 1)
        kept = await gateway.create(SessionRequest(user="carol", application="gimp"))
        idle = await gateway.create(SessionRequest(user="dave", application="gimp", timeout=1))
        warm = await kiosk.create(SessionRequest(user="erin", application="inkscape"))
        await eventually(lambda: (s := gateway.get(kept.id)) and s.phase is Phase.RUNNING
                         and kiosk.route(warm.id) is not None)
        # The token the gateway derives is the one the controller wrote for the pod.
        for spawner, session in ((gateway, kept), (kiosk, warm)):
            pod = (api.get("sessions", NAMESPACE, session.id)["status"])["podName"]
            secret = api.get("secrets", NAMESPACE, objects.agent_secret_name(pod))
            token = base64.b64decode(secret["data"][objects.AGENT_TOKEN_KEY]).decode()
            assert spawner.route(session.id).token == token
        assert api.get("sessions", NAMESPACE, warm.id)["status"]["podName"].startswith("warm-")
        await eventually(lambda: api.get("sessions", NAMESPACE, idle.id) is None)  # culled
        await gateway.delete(kept.id)
        await eventually(lambda: api.get("sessions", NAMESPACE, kept.id) is None)
        assert any(e["reason"] == "IdleTimeout" for e in api.objects("events", NAMESPACE))
    finally:
        await kiosk.close()
        await gateway.close()
        await controller.stop()
        await controller_kube.close()
    assert api.denied == []  # every call either component made was allowed


@pytest.mark.parametrize("identity", [rbac.GATEWAY, rbac.CONTROLLER])
async def test_no_component_can_read_a_secret(api: FakeKube, kube: Kube, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              identity: str) -> None:
    """From the attacker's side: a compromised gateway or controller holds its ServiceAccount
    token; with it, the user's cloud credentials cannot be read, listed or watched."""
    api.enforce(rbac.roles())
    await kube.create(SECRETS, CLOUD)
    stolen = await as_identity(api, tmp_path, monkeypatch, identity)
    try:
        for attempt in (stolen.get(SECRETS, CLOUD["metadata"]["name"]), stolen.list(SECRETS)):
            with pytest.raises(KubeError) as err:
                await attempt
            assert err.value.status == 403
        with pytest.raises(KubeError) as err:
            async for _ in stolen.watch(SECRETS, "0"):
                pass
        assert err.value.status == 403
        if identity == rbac.GATEWAY:  # nor make pods that would mount it
            with pytest.raises(KubeError) as err:
                await stolen.create(PODS, objects.session_pod(
                    pod_name="evil", application="gimp", settings=FAST.pod, user_id="carol",
                    owner=None, cloud_storage=True))
            assert err.value.status == 403
        else:  # the controller may write a Secret (the agent token), never read one back
            await stolen.create(SECRETS, objects.agent_secret(
                "p1", "t", await kube.create(SESSIONS, objects.session_manifest(
                    "s1", "u", "gimp"))))
    finally:
        await stolen.close()
    assert {d[0] for d in api.denied} == {identity}
