"""Kubernetes mode (fake API server, simulated kubelet running real agents): kill -9 of a pod's
agent, Xvfb or application, and of the gateway (with its in-process controller) mid-way.

The session recovers (the kubelet restarts the container; the gateway re-adopts what the API
holds) or, when the container keeps dying, becomes `failed` with the reason; no process of a
dead container is left; the file the user saved on their volume is still there."""
from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.kube import objects
from gateway.kube.client import SESSIONS, Kube
from gateway.kube.objects import PodSettings
from tests.agent_process import free_port
from tests.faults import procs
from tests.faults.gateway_process import TOKEN, GatewayProcess
from tests.faults.kubelet import RestartingKubelet
from tests.kube.conftest import NAMESPACE, TOKEN_KEY, eventually
from tests.kube.fakeapi import FakeKube
from tests.whep_client import Viewer
from tests.xserver import fill_root

SEED = 20261126
START_TIMEOUT = 10  # seconds; the session is older than this when its container restarts


def status(api: FakeKube, name: str) -> dict:
    return (api.get("sessions", NAMESPACE, name) or {}).get("status") or {}


def save_user_file(kubelet: RestartingKubelet, user: str) -> tuple[Path, bytes]:
    """A file in the user's volume (the PVC's data: the pod's HOME), before any fault."""
    home = kubelet.volumes / objects.pvc_name(user)
    home.mkdir(parents=True, exist_ok=True)
    saved = home / "drawing.xcf"
    saved.write_bytes(b"gimp xcf file v011" + bytes(range(256)) * 64)
    return saved, saved.read_bytes()


def restarted(api: FakeKube, pod: str) -> bool:
    """The pod's container runs again, restarted once, and is Ready."""
    container = ((api.get("pods", NAMESPACE, pod) or {}).get("status") or {}).get(
        "containerStatuses") or [{}]
    return container[0].get("restartCount") == 1 and container[0].get("ready") is True


def victim(kubelet: RestartingKubelet, pod: str, target: str) -> int:
    agent = kubelet.processes[pod].pid
    if target == "agent":
        return agent
    word = "Xvfb" if target == "xvfb" else "sleep"
    found = [p for p in procs.descendants(agent) if procs.cmdline(p)[:1] == [word]]
    assert found, f"no {target} under the agent of {pod}"
    return found[0]


async def no_processes(display: str) -> None:
    await asyncio.to_thread(procs.wait_until, lambda: not procs.display_users(display), 30,
                            what=f"no process left on {display}")


async def test_pod_processes_killed(api: FakeKube, kube: Kube, controllers, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    first, second = rng.sample(["agent", "xvfb", "app"], 2)
    port = free_port()
    kubelet = RestartingKubelet(api, agents=True, volumes=tmp_path / "volumes")
    try:
        await controllers(start_timeout=START_TIMEOUT, pod=replace(PodSettings(), agent_port=port))
        name = "faulty"
        await kube.create(SESSIONS, objects.session_manifest(name, "alice", "gimp"))
        await eventually(lambda: status(api, name).get("phase") == "running", timeout=60)
        saved, content = save_user_file(kubelet, "alice")
        displays = [kubelet.displays[name]]

        # Old enough that a restart is not mistaken for a slow start.
        created = datetime.fromisoformat(api.get("sessions", NAMESPACE, name)["metadata"][
            "creationTimestamp"].replace("Z", "+00:00"))
        age = (datetime.now(timezone.utc) - created).total_seconds()
        await asyncio.sleep(max(0.0, START_TIMEOUT + 1 - age) + rng.uniform(0, 1))

        # First death: the container is restarted and the session runs again.
        procs.kill9(victim(kubelet, name, first))
        await eventually(lambda: status(api, name).get("phase") == "failed" or (
            restarted(api, name) and status(api, name).get("phase") == "running"), timeout=60)
        assert status(api, name)["phase"] == "running", status(api, name)
        await no_processes(displays[0])
        displays.append(kubelet.displays[name])

        # Second death within the back-off: CrashLoopBackOff, the session fails with the reason.
        procs.kill9(victim(kubelet, name, second))
        await eventually(lambda: status(api, name).get("phase") == "failed", timeout=60)
        assert "CrashLoopBackOff" in status(api, name)["message"], status(api, name)
        await no_processes(displays[1])
        assert saved.read_bytes() == content

        # Deleted: the pod goes, the user's volume (claim and data) stays.
        await kube.delete(SESSIONS, name)
        await eventually(lambda: api.get("sessions", NAMESPACE, name) is None, timeout=60)
        assert api.get("pods", NAMESPACE, name) is None
        assert api.get("persistentvolumeclaims", NAMESPACE, objects.pvc_name("alice")) is not None
        assert saved.read_bytes() == content
    finally:
        await kubelet.close()
    for display in displays:
        assert not procs.display_users(display)


MOMENTS = ("start", "streaming", "delete")


@pytest.mark.parametrize("moment", MOMENTS)
async def test_gateway_and_controller_killed(moment: str, api: FakeKube, kubeconfig: Path,
                                             tmp_path: Path) -> None:
    """kill -9 of the gateway (and the controller inside it) during a start, while a viewer
    streams, or during a delete: the Session lives in the API, so a restarted gateway routes it
    again (or finishes the delete); media never went through the gateway and keeps flowing."""
    rng = random.Random(f"{SEED}-{moment}")
    port = free_port()
    kubelet = RestartingKubelet(api, agents=True, volumes=tmp_path / "volumes")
    # A restarted container of the same gateway pod: same identity, so it takes its Lease back.
    env = {"KUBECONFIG": str(kubeconfig), "CONTROLLER_AGENT_PORT": str(port),
           "CONTROLLER_IDENTITY": "gateway-0", "GATEWAY_AGENT_TOKEN_KEY": TOKEN_KEY}
    extra = ("--spawner", "kubernetes", "--controller", "--namespace", NAMESPACE,
             "--idle-check-interval", "1")
    gw = await asyncio.to_thread(GatewayProcess(tmp_path / "data", extra, env).start)
    viewer: Viewer | None = None
    display = None
    saved, content = save_user_file(kubelet, "local")  # the token user
    try:
        sid = (await gw.create())["id"]
        if moment != "start":
            await gw.wait_session(sid, lambda s: s and s["phase"] == "running")
            display = kubelet.displays[sid]
            if moment == "streaming":
                viewer = Viewer(gw.url, token=TOKEN)
                await viewer.connect(f"/streaming/{sid}/whep")
                await viewer.wait_for(lambda f: f.width > 0, timeout=30)
            else:
                status_code, _ = await gw.call("DELETE", f"/api/sessions/{sid}")
                assert status_code == 202
        await asyncio.sleep(rng.uniform(0, 1.0))
        gw.kill()

        if viewer is not None:  # media is agent -> viewer: the gateway's death does not stop it
            fill_root(display, (200, 40, 90))
            await viewer.wait_for_colour((200, 40, 90), timeout=30)
        gw = await asyncio.to_thread(GatewayProcess(tmp_path / "data", extra, env).start)
        if moment == "delete":
            await gw.wait_session(sid, lambda s: s is None, timeout=60)
        else:
            await gw.wait_session(sid, lambda s: s and s["phase"] == "running", timeout=60)
            display = display or kubelet.displays[sid]
            again = Viewer(gw.url, token=TOKEN)  # the restarted gateway routes it
            await again.connect(f"/streaming/{sid}/whep")
            try:
                fill_root(display, (20, 180, 60))
                await again.wait_for_colour((20, 180, 60), timeout=30)
            finally:
                await again.close()
            status_code, _ = await gw.call("DELETE", f"/api/sessions/{sid}")
            assert status_code == 202
            await gw.wait_session(sid, lambda s: s is None, timeout=60)
        await eventually(lambda: api.get("sessions", NAMESPACE, sid) is None
                         and api.get("pods", NAMESPACE, sid) is None, timeout=60)
        await no_processes(display)
        assert api.get("persistentvolumeclaims", NAMESPACE, objects.pvc_name("local")) is not None
        assert saved.read_bytes() == content
    finally:
        if viewer is not None:
            await viewer.close(delete=False)
        await asyncio.to_thread(gw.stop)
        await kubelet.close()
    assert not procs.display_users(display)


@pytest.mark.parametrize("moment", ("start", "delete"))
async def test_pod_agent_killed_during(moment: str, api: FakeKube, kube: Kube, controllers,
                                       tmp_path: Path) -> None:
    """kill -9 of the pod's agent while its container starts (the kubelet restarts it: the
    session runs) or while the pod is being deleted (the delete completes)."""
    rng = random.Random(f"{SEED}-agent-{moment}")
    port = free_port()
    kubelet = RestartingKubelet(api, agents=True, volumes=tmp_path / "volumes")
    saved, content = save_user_file(kubelet, "bob")
    displays: list[str] = []
    try:
        await controllers(pod=replace(PodSettings(), agent_port=port))
        name = f"agent-{moment}"
        await kube.create(SESSIONS, objects.session_manifest(name, "bob", "inkscape"))
        if moment == "start":
            await eventually(lambda: name in kubelet.processes, timeout=60)
            agent = kubelet.processes[name].pid
        else:
            await eventually(lambda: status(api, name).get("phase") == "running", timeout=60)
            agent = kubelet.processes[name].pid
            await kube.delete(SESSIONS, name)
            await eventually(lambda: name in kubelet.stopped, timeout=30)  # SIGTERM sent
        displays.append(kubelet.displays[name])
        await asyncio.sleep(rng.uniform(0, 0.5))
        procs.kill9(agent)
        if moment == "start":
            await eventually(lambda: status(api, name).get("phase") == "failed" or (
                restarted(api, name) and status(api, name).get("phase") == "running"), timeout=60)
            assert status(api, name)["phase"] == "running", status(api, name)
            displays.append(kubelet.displays[name])
            await no_processes(displays[0])
            await kube.delete(SESSIONS, name)
        await eventually(lambda: api.get("sessions", NAMESPACE, name) is None
                         and api.get("pods", NAMESPACE, name) is None, timeout=60)
        for display in displays:
            await no_processes(display)
        assert saved.read_bytes() == content
    finally:
        await kubelet.close()
    for display in displays:
        assert not procs.display_users(display)


# An application that keeps writing the user's document, and on SIGTERM (its chance to exit
# cleanly) writes what it still held and exits.
WRITER = ("sh -c 'trap \"echo final >> $HOME/notes.txt; exit 0\" TERM; "
          "while :; do echo draft >> $HOME/notes.txt; sleep 0.05; done'")


async def test_a_deleted_session_lets_its_application_write_last_and_keeps_it(
        api: FakeKube, kube: Kube, controllers, tmp_path: Path) -> None:
    """The finalizer's sync, for real: deleting the Session stops the pod gracefully, the
    application gets SIGTERM and writes what it held, and the Session (with its finalizer) goes
    only after the pod is gone; what was written just before is on the user's volume."""
    kubelet = RestartingKubelet(api, agents=True, volumes=tmp_path / "volumes", app=WRITER)
    try:
        await controllers(pod=replace(PodSettings(), agent_port=free_port()))
        await kube.create(SESSIONS, objects.session_manifest("writer", "erin", "gimp"))
        await eventually(lambda: status(api, "writer").get("phase") == "running", timeout=60)
        notes = kubelet.volumes / objects.pvc_name("erin") / "notes.txt"
        await eventually(lambda: notes.exists() and notes.read_text().count("draft") > 3)
        await kube.delete(SESSIONS, "writer")
        await eventually(lambda: api.get("sessions", NAMESPACE, "writer") is None, timeout=60)
        assert "writer" in kubelet.stopped  # a graceful stop, before the Session went
        lines = notes.read_text().splitlines()
        assert lines[-1] == "final", lines[-5:]  # it wrote last, and nothing after
    finally:
        await kubelet.close()
