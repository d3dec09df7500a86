"""End to end in Kubernetes mode: the gateway (kubernetes spawner, --controller) creates a
Session, the controller makes its pod, the simulated kubelet runs a real session agent for
it, and a real aiortc viewer gets video frames through the gateway's WHEP proxy."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway.app import create_app
from gateway.config import Config
from gateway.controller.settings import ControllerSettings
from gateway.kube.objects import PodSettings
from gateway.spawners.kubernetes import KubernetesSpawner
from tests.agent_process import free_port
from tests.kube.conftest import NAMESPACE, TOKEN_KEY, eventually
from tests.kube.fakeapi import FakeKube
from tests.kube.kubelet import FakeKubelet
from tests.whep_client import Viewer

TOKEN = "e2e-token"


async def test_browser_to_pod_through_the_gateway(api: FakeKube, kubeconfig: Path,
                                                  aiohttp_client) -> None:
    kubelet = FakeKubelet(api, agents=True)
    try:
        port = free_port()  # the "pod's" agent port on 127.0.0.1
        config = Config(host="127.0.0.1", port=0, spawner="kubernetes", namespace=NAMESPACE,
                        controller=True, token=TOKEN, start_timeout=120,
                        idle_check_interval=1.0, agent_token_key=TOKEN_KEY)
        spawner = KubernetesSpawner(config, replace(
            ControllerSettings(), pod=replace(PodSettings(), agent_port=port)))
        client = await aiohttp_client(create_app(config, spawner))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = await client.post("/api/sessions", json={"application": "gimp"},
                                     headers=auth)
        assert response.status == 201, await response.text()
        session = await response.json()
        assert session["phase"] == "pending"
        sid = session["id"]
        assert api.get("sessions", NAMESPACE, sid)["spec"]["userId"] == session["user"]

        async def phase() -> str:
            got = await client.get(f"/api/sessions/{sid}", headers=auth)
            return (await got.json())["phase"]

        await eventually(lambda: spawner.route(sid), timeout=120)
        assert await phase() == "running"
        pod = api.get("pods", NAMESPACE, sid)
        assert pod["status"]["phase"] == "Running"

        viewer = Viewer(str(client.make_url("/")), token=TOKEN)
        await viewer.connect(f"/streaming/{sid}/whep")
        try:
            assert viewer.location.startswith(f"/streaming/{sid}/whep/")
            frame = await viewer.wait_for(lambda f: f.width > 0 and f.height > 0, timeout=60)
            await viewer.wait_for(lambda f: viewer.frames >= 3 and f is not frame, timeout=60)
        finally:
            await viewer.close()

        deleted = await client.delete(f"/api/sessions/{sid}", headers=auth)
        assert deleted.status == 202
        await eventually(lambda: api.get("sessions", NAMESPACE, sid) is None, timeout=60)
        assert sid in kubelet.stopped and not kubelet.processes  # agent stopped gracefully
    finally:
        await kubelet.close()


async def test_an_idle_viewer_is_warned_by_the_controller_and_input_keeps_the_session(
        api: FakeKube, kubeconfig: Path, aiohttp_client) -> None:
    """The controller follows the agent's idle_s (not only its viewer count): a viewer who
    does nothing is warned (POST /notice with the derived token), input keeps the session,
    silence ends it; the same rule as the local spawner (gateway/idle.py)."""
    kubelet = FakeKubelet(api, agents=True)
    try:
        port = free_port()
        config = Config(host="127.0.0.1", port=0, spawner="kubernetes", namespace=NAMESPACE,
                        controller=True, token=TOKEN, start_timeout=120, idle_check_interval=0.5,
                        idle_warning=3.0, agent_token_key=TOKEN_KEY)
        spawner = KubernetesSpawner(config, replace(
            ControllerSettings(), pod=replace(PodSettings(), agent_port=port)))
        client = await aiohttp_client(create_app(config, spawner))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = await client.post("/api/sessions", json={"application": "gimp", "timeout": 8},
                                     headers=auth)
        sid = (await response.json())["id"]
        await eventually(lambda: spawner.route(sid), timeout=120)
        viewer = Viewer(str(client.make_url("/")), token=TOKEN)
        await viewer.connect(f"/streaming/{sid}/whep")
        try:
            warning = await viewer.receive("notice", timeout=30)
            assert warning["level"] == "warning" and warning["reason"] == "idle"
            viewer.send({"type": "pointer", "x": 3, "y": 3})
            assert (await viewer.receive("notice", timeout=30)).get("cancel") is True
            assert api.get("sessions", NAMESPACE, sid) is not None
            assert (await viewer.receive("notice", timeout=30))["level"] == "warning"
            await eventually(lambda: api.get("sessions", NAMESPACE, sid) is None, timeout=60)
            assert any(e["reason"] == "IdleTimeout" for e in api.objects("events", NAMESPACE))
        finally:
            await viewer.close()
    finally:
        await kubelet.close()
