"""The warm pool is reachable: a gateway with --ephemeral (the kiosk overlay) creates Sessions
that claim a ready warm pod, and that pod's real agent serves the viewer through the gateway
with the token the gateway derives for it. The pool refills meanwhile (each simulated pod on
its own loopback address, tests/kube/podnet.py)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway.app import create_app
from gateway.config import Config
from gateway.spawners.kubernetes import KubernetesSpawner
from tests.agent_process import free_port
from tests.kube.conftest import FAST, NAMESPACE, TOKEN_KEY, eventually
from tests.kube.fakeapi import FakeKube
from tests.kube.podnet import PodNetKubelet
from tests.whep_client import Viewer

TOKEN = "warm-token"


async def test_an_ephemeral_session_is_served_by_a_warm_pod(api: FakeKube, kubeconfig: Path,
                                                            aiohttp_client) -> None:
    kubelet = PodNetKubelet(api, agents=True)
    try:
        config = Config(host="127.0.0.1", port=0, spawner="kubernetes", namespace=NAMESPACE,
                        controller=True, ephemeral=True, token=TOKEN, start_timeout=120,
                        idle_check_interval=1.0, agent_token_key=TOKEN_KEY)
        port = free_port()  # every pod's agent port, each on its own address
        spawner = KubernetesSpawner(config, replace(FAST, warm_pool={"gimp": 1}, pod=replace(
            FAST.pod, agent_port=port)))
        client = await aiohttp_client(create_app(config, spawner))
        pool = spawner.controller.warm_pool
        await eventually(lambda: len(pool.ready("gimp")) == 1, timeout=120)
        (ready,) = [p["metadata"]["name"] for p in pool.ready("gimp")]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = await client.post("/api/sessions", json={"application": "gimp"}, headers=auth)
        assert response.status == 201, await response.text()
        sid = (await response.json())["id"]
        session = api.get("sessions", NAMESPACE, sid)
        assert session["spec"]["ephemeral"] is True  # the gateway's --ephemeral
        await eventually(lambda: spawner.route(sid), timeout=60)
        status = api.get("sessions", NAMESPACE, sid)["status"]
        assert status["podName"] == ready  # claimed, not created
        assert status["tokenUID"] == api.get("pods", NAMESPACE, ready)["metadata"]["uid"]
        assert api.get("pods", NAMESPACE, sid) is None  # no cold pod was made
        assert spawner.route(sid).url == f"http://{kubelet.pod_ip(ready)}:{port}"

        viewer = Viewer(str(client.make_url("/")), token=TOKEN)
        await viewer.connect(f"/streaming/{sid}/whep")  # the warm agent accepts our token
        try:
            frame = await viewer.wait_for(lambda f: f.width > 0, timeout=60)
            assert (frame.width, frame.height) == (640, 480)
        finally:
            await viewer.close()
        # The pool refilled with a new pod, on its own address, while the claimed one served.
        await eventually(lambda: [p["metadata"]["name"] for p in pool.ready("gimp")] not in
                         ([], [ready]), timeout=120)
        deleted = await client.delete(f"/api/sessions/{sid}", headers=auth)
        assert deleted.status == 202
        await eventually(lambda: api.get("sessions", NAMESPACE, sid) is None, timeout=60)
        assert ready in kubelet.stopped and api.get("pods", NAMESPACE, ready) is None
    finally:
        await kubelet.close()
