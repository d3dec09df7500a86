"""The session controller against the fake API server, through the real client."""
from __future__ import annotations

import base64
import json
from dataclasses import replace

from aiohttp import web

from gateway.kube import objects
from gateway.kube.client import PVCS, SECRETS, SESSIONS, Kube
from gateway.logs import JsonFormatter
from tests.agent_process import free_port
from tests.kube.conftest import FAST, NAMESPACE, eventually
from tests.kube.fakeapi import FakeKube
from tests.kube.kubelet import FakeKubelet


def phase(api: FakeKube, name: str) -> str | None:
    session = api.get("sessions", NAMESPACE, name)
    return ((session or {}).get("status") or {}).get("phase")


async def test_session_lifecycle(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                 controllers) -> None:
    await controllers()
    await kube.create(SESSIONS, objects.session_manifest("s1", "Alice@example.org", "gimp"))
    await eventually(lambda: phase(api, "s1") == "running")
    session = api.get("sessions", NAMESPACE, "s1")
    status = session["status"]
    assert status["podName"] == "s1" and status["endpoint"] == "http://127.0.0.1:6901"
    assert status["startTime"] and status["conditions"][0]["status"] == "True"
    pod = api.get("pods", NAMESPACE, "s1")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == session["metadata"]["uid"]
    user = objects.user_label("Alice@example.org")
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == f"user-storage-{user}"
    secret = api.get("secrets", NAMESPACE, "s1-agent")
    assert base64.b64decode(secret["data"]["token"])
    assert not any("AGENT_TOKEN" == e["name"] for e in pod["spec"]["containers"][0]["env"])
    await eventually(lambda: "Running" in {e["reason"] for e in api.objects("events", NAMESPACE)})

    await kube.delete(SESSIONS, "s1")
    await eventually(lambda: api.get("sessions", NAMESPACE, "s1") is None)
    assert "s1" in kubelet.stopped  # the pod got its graceful stop before the Session went
    assert api.objects("pods", NAMESPACE) == [] and api.objects("secrets", NAMESPACE) == []
    assert [p["metadata"]["name"] for p in api.objects("persistentvolumeclaims")] == [
        f"user-storage-{user}"]  # the user's data outlives the session


async def test_existing_pvc_is_success(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                       controllers) -> None:
    await kube.create(PVCS, objects.user_pvc("bob", "5Gi", "standard"))
    await controllers()
    await kube.create(SESSIONS, objects.session_manifest("s2", "bob", "inkscape"))
    await eventually(lambda: phase(api, "s2") == "running")
    assert api.get("persistentvolumeclaims", NAMESPACE, objects.pvc_name("bob"))["spec"][
        "resources"]["requests"]["storage"] == "5Gi"


async def test_a_volume_recorded_for_another_user_is_never_mounted(
        api: FakeKube, kubelet: FakeKubelet, kube: Kube, controllers) -> None:
    """Whatever made it (an older version, an operator, a collision), a volume whose recorded
    owner is not the Session's user, or that records none, fails the Session and no pod mounts it."""
    stolen = objects.user_pvc("mallory", "5Gi", "standard")
    stolen["metadata"]["name"] = objects.pvc_name("carol")  # named like Carol's, recorded Mallory's
    await kube.create(PVCS, stolen)
    unrecorded = objects.user_pvc("dave", "5Gi", "standard")
    del unrecorded["metadata"]["annotations"]
    await kube.create(PVCS, unrecorded)
    await controllers()
    await kube.create(SESSIONS, objects.session_manifest("s3", "carol", "gimp"))
    await kube.create(SESSIONS, objects.session_manifest("s4", "dave", "gimp"))
    for name in ("s3", "s4"):
        await eventually(lambda: phase(api, name) == "failed")
        status = api.get("sessions", NAMESPACE, name)["status"]
        assert status["conditions"][0]["reason"] == "VolumeNotYours", status
        assert "never mounted for anybody else" in status["message"]
        assert api.get("pods", NAMESPACE, name) is None


async def test_failures_are_named_fast(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                       controllers) -> None:
    kubelet.broken_images["bad/image:1"] = "ImagePullBackOff"
    await controllers(pod=replace(FAST.pod, image="bad/image:1"))
    await kube.create(SESSIONS, objects.session_manifest("s3", "carol", "gimp"))
    await eventually(lambda: phase(api, "s3") == "failed")
    status = api.get("sessions", NAMESPACE, "s3")["status"]
    assert status["message"].startswith("ImagePullBackOff")
    await eventually(lambda: api.get("pods", NAMESPACE, "s3") is None)  # resources freed
    await eventually(lambda: any(e["reason"] == "ImagePullBackOff" and e["type"] == "Warning"
                                 for e in api.objects("events", NAMESPACE)))


async def test_unschedulable_then_start_timeout(api: FakeKube, kubelet: FakeKubelet,
                                                kube: Kube, controllers) -> None:
    kubelet.nodes.pop("gpu-node-1")  # no GPU node: GPU sessions cannot be placed
    await controllers(start_timeout=2)
    await kube.create(SESSIONS, objects.session_manifest("s4", "dave", "blender",
                                                         resources={"gpu": "1"}))
    await eventually(lambda: "Unschedulable" in ((api.get("sessions", NAMESPACE, "s4") or {})
                                                 .get("status") or {}).get("message", ""))
    await eventually(lambda: phase(api, "s4") == "failed")
    assert "did not start within 2s" in api.get("sessions", NAMESPACE, "s4")["status"]["message"]


async def test_evicted_pod_fails_session(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                         controllers) -> None:
    await controllers()
    await kube.create(SESSIONS, objects.session_manifest("s5", "erin", "gimp"))
    await eventually(lambda: phase(api, "s5") == "running")
    api.set_status("pods", NAMESPACE, "s5", {"phase": "Failed", "reason": "Evicted",
                                             "message": "The node was low on memory."})
    await eventually(lambda: phase(api, "s5") == "failed")
    assert api.get("sessions", NAMESPACE, "s5")["status"]["message"].startswith("Evicted")


async def test_gpu_session_goes_to_gpu_pool(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                            controllers) -> None:
    await controllers()
    await kube.create(SESSIONS, objects.session_manifest("s6", "frank", "blender",
                                                         resources={"gpu": "1", "cpu": "2"}))
    await eventually(lambda: phase(api, "s6") == "running")
    pod = api.get("pods", NAMESPACE, "s6")
    assert pod["spec"]["nodeName"] == "gpu-node-1"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


async def test_idle_timeout_and_activity(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                         controllers) -> None:
    """A session with a viewer stays; without one, it goes after spec.timeout."""
    viewers = {"peers": 1}

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **viewers})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await controllers(pod=replace(FAST.pod, agent_port=port))
        await kube.create(SESSIONS, objects.session_manifest("s7", "gina", "gimp", timeout=1))
        await eventually(lambda: ((api.get("sessions", NAMESPACE, "s7") or {}).get("status")
                                  or {}).get("lastActivity"))
        assert api.get("sessions", NAMESPACE, "s7") is not None
        viewers["peers"] = 0
        await eventually(lambda: api.get("sessions", NAMESPACE, "s7") is None)
        assert any(e["reason"] == "IdleTimeout" for e in api.objects("events", NAMESPACE))
    finally:
        await runner.cleanup()


async def test_cloud_storage_sidecar_mounts_the_users_rclone_secret_if_any(
        api: FakeKube, kubelet: FakeKubelet, kube: Kube, controllers) -> None:
    """The controller never reads the user's rclone Secret: every non-ephemeral pod mounts it
    as an optional volume, and the sidecar idles where there is none."""
    await kube.create(SECRETS, {"apiVersion": "v1", "kind": "Secret",
                                "metadata": {"name": objects.rclone_secret_name("hank")},
                                "stringData": {"rclone.conf": "[cloud]\ntype = memory\n"}})
    await controllers(cloud_storage=True)
    await kube.create(SESSIONS, objects.session_manifest("s8", "hank", "gimp"))
    await kube.create(SESSIONS, objects.session_manifest("s9", "ivan", "gimp"))
    await kube.create(SESSIONS, objects.session_manifest("s9e", "ivan", "inkscape",
                                                         ephemeral=True))
    await eventually(lambda: all(phase(api, n) == "running" for n in ("s8", "s9", "s9e")))
    for name, user in (("s8", "hank"), ("s9", "ivan")):
        spec = api.get("pods", NAMESPACE, name)["spec"]
        assert spec["initContainers"][0]["restartPolicy"] == "Always"
        volume = next(v for v in spec["volumes"] if v["name"] == "rclone-config")
        assert volume["secret"] == {"secretName": objects.rclone_secret_name(user),
                                    "defaultMode": 0o440, "optional": True}
    assert "initContainers" not in api.get("pods", NAMESPACE, "s9e")["spec"]


async def test_warm_pool_claim_and_refill(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                          controllers) -> None:
    controller = await controllers(warm_pool={"inkscape": 2})
    warm = lambda: controller.warm_pool.ready("inkscape")  # noqa: E731
    await eventually(lambda: len(warm()) == 2)
    first = {p["metadata"]["name"] for p in warm()}
    await kube.create(SESSIONS, objects.session_manifest("s10", "guest", "inkscape",
                                                         ephemeral=True))
    await eventually(lambda: phase(api, "s10") == "running")
    pod_name = api.get("sessions", NAMESPACE, "s10")["status"]["podName"]
    assert pod_name in first  # served by a warm pod
    pod = api.get("pods", NAMESPACE, pod_name)
    assert pod["metadata"]["labels"]["session"] == "s10"
    assert objects.WARM_LABEL not in pod["metadata"]["labels"]
    await eventually(lambda: len(warm()) == 2 and pod_name not in
                     {p["metadata"]["name"] for p in warm()})  # refilled
    await kube.delete(SESSIONS, "s10")
    await eventually(lambda: api.get("pods", NAMESPACE, pod_name) is None)
    await eventually(lambda: api.get("secrets", NAMESPACE, f"{pod_name}-agent") is None)


async def test_one_leader_and_failover(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                       controllers) -> None:
    first = await controllers()
    second = await controllers()
    await eventually(lambda: first.leading.is_set() or second.leading.is_set())
    leader, standby = (first, second) if first.leading.is_set() else (second, first)
    assert not standby.leading.is_set()
    await kube.create(SESSIONS, objects.session_manifest("s11", "jo", "gimp"))
    await eventually(lambda: phase(api, "s11") == "running")
    await leader.stop()  # releases the lease: the standby takes over
    await eventually(lambda: standby.leading.is_set())
    await kube.create(SESSIONS, objects.session_manifest("s12", "jo", "blender"))
    await eventually(lambda: phase(api, "s12") == "running")
    lease = api.get("leases", NAMESPACE, "session-controller")
    assert lease["spec"]["holderIdentity"] == standby.settings.identity


async def test_structured_logs(api: FakeKube, kubelet: FakeKubelet, kube: Kube, controllers,
                               caplog) -> None:
    caplog.set_level("INFO", logger="gateway.session-controller")
    await controllers()
    await kube.create(SESSIONS, objects.session_manifest("s13", "kim", "gimp"))
    await eventually(lambda: phase(api, "s13") == "running")
    await eventually(lambda: any(r.msg == "session_running" for r in caplog.records))
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records
             if r.name == "gateway.session-controller"]
    created = next(line for line in lines if line["action"] == "pod_created")
    assert created["component"] == "session-controller"
    assert {"user_id", "session_id", "pod_name", "duration_ms",
            "resource_allocation"} <= set(created)
    running = next(line for line in lines if line["action"] == "session_running")
    assert running["session_id"] == "s13" and running["node_name"] == "cpu-node-1"


async def test_claim_recorded_despite_status_write_failure(
        api: FakeKube, kubelet: FakeKubelet, kube: Kube, controllers) -> None:
    """A claimed warm pod is found by its label when the status write after the claim fails:
    no second pod is claimed, none leaks."""
    controller = await controllers(warm_pool={"gimp": 1})
    await eventually(lambda: len(controller.warm_pool.ready("gimp")) == 1)
    api.fail_next(1, "PATCH", "/sessions/s14/status")
    await kube.create(SESSIONS, objects.session_manifest("s14", "lee", "gimp", ephemeral=True))
    await eventually(lambda: phase(api, "s14") == "running")
    owned = [p for p in api.objects("pods", NAMESPACE)
             if p["metadata"].get("labels", {}).get("session") == "s14"]
    assert len(owned) == 1
    assert api.get("sessions", NAMESPACE, "s14")["status"]["podName"] == owned[0]["metadata"][
        "name"]
